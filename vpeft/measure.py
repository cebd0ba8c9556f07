"""``vpeft measure``: a model's trainable counts, training memory (see :mod:`vpeft.memory`) and step time on any
device, with random inputs."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch

from .config import RunConfig, spec_string
from .engine.optim import build_optimizer, param_groups
from .memory import SavedTensorProbe, memory_stats, param_counts  # noqa: F401 - importable from here still
from .run import build_model
from .trainable import trainable_named_parameters

MEASURE_KEYS = (
    "trainable",
    "trainable_no_head",
    "total",
    "saved_activation_bytes",
    "param_bytes",
    "grad_bytes",
    "optimizer_state_bytes",
    "train_memory_bytes",
    "step_seconds",
)
#: Added to :func:`measure`'s result under autocast: the compute dtype and the bytes of saved weight copies.
AMP_KEYS = ("dtype", "autocast_weight_bytes")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def measure(
    backbone: str,
    method: Any = "linear",
    objective: Any = "ce",
    batch_size: int = 2,
    num_classes: int = 10,
    timing: bool = True,
    device: str = "cpu",
    seed: int = 0,
    repeats: int = 3,
    selector: Any = None,
    amp: str = "none",
    warmup: int = 1,
    inference: bool = False,
    inference_batch_sizes: tuple[int, ...] = (1, 4, 16),
) -> dict[str, Any]:
    """Build ``backbone x method x objective`` with random weights and measure one AdamW training step.

    Args:
        amp: ``none``, ``bf16`` or ``fp16``: the forward runs under ``torch.autocast`` of that dtype (bf16 works on
            the CPU too), with a gradient scaler for fp16 on CUDA.
        warmup: Untimed steps before the timed ones (after the measured step, which is untimed too).
        inference: Also time eval-mode forwards under ``torch.inference_mode`` and the same autocast, at each of
            ``inference_batch_sizes``.

    Returns:
        A dict with ``method``, ``objective`` and :data:`MEASURE_KEYS` (``step_seconds`` is None without timing).
        Under autocast, also :data:`AMP_KEYS`: the autocast ``dtype`` and ``autocast_weight_bytes``, the saved
        low-precision weight copies, which ``saved_activation_bytes`` leaves out and ``train_memory_bytes`` counts.
        ``cuda_max_memory_allocated`` (the peak over the measured, warm-up and timed steps) is added on CUDA, and
        with ``inference`` a list ``inference`` of ``{batch_size, latency_seconds, images_per_second}``.
        ``step_seconds`` and each latency are the median of ``repeats`` timed runs, synchronised on CUDA before and
        after each.
    """
    if amp not in ("none", *AMP_DTYPES):
        raise ValueError(f"amp must be none, bf16 or fp16, got {amp!r}")
    cfg = RunConfig.from_dict(
        {"backbone": {"spec": backbone}, "method": method, "objective": objective, "selector": selector}
    )
    torch.manual_seed(seed)
    model, obj = build_model(cfg, num_classes)
    if cfg.selector is not None:  # no data here: a selection of the same structure (what trains, its memory)
        cfg.selector.apply(model, cfg.selector.structure_only(model))
    dev = torch.device(device)
    model.to(dev), obj.to(dev)
    h, w = model.input_size
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, h, w, generator=gen).to(dev)
    labels = torch.randint(0, num_classes, (batch_size,), generator=gen).to(dev)
    named = trainable_named_parameters(model, obj)
    opt = build_optimizer(param_groups(named, cfg.train), cfg.train) if named else torch.optim.AdamW([torch.zeros(0)])
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" and dev.type == "cuda" and named else None
    autocast = (lambda: torch.autocast(dev.type, dtype=AMP_DTYPES[amp])) if amp != "none" else nullcontext
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    def step(probe=None):
        with probe or nullcontext(), autocast():
            loss = obj(model, images, labels)["loss"]
        if loss.requires_grad:
            (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    model.train(), obj.train()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    probe = SavedTensorProbe(model, obj)
    step(probe)
    result: dict[str, Any] = {"method": spec_string(cfg.method), "objective": spec_string(cfg.objective)}
    if cfg.selector is not None:
        result["selector"] = spec_string(cfg.selector)
    result.update(param_counts(model))
    companions = obj.companions()
    for other in companions.values():  # together: the kept model's counts plus its companions' (iDAT's teacher)
        for k, v in param_counts(other).items():
            result[k] += v
    copies = probe.weight_copy_bytes if amp != "none" else None
    result.update(memory_stats(model, obj, opt, probe.activation_bytes, copies))
    if amp != "none":
        result["dtype"] = str(AMP_DTYPES[amp]).replace("torch.", "")
    result["step_seconds"] = None
    if timing:
        for _ in range(warmup):
            step()
        times = []
        for _ in range(max(1, repeats)):
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        result["step_seconds"] = _median(times)
    if dev.type == "cuda":
        result["cuda_max_memory_allocated"] = torch.cuda.max_memory_allocated(dev)
    if inference:
        model.eval()
        result["inference"] = []
        with torch.inference_mode(), autocast():
            for b in inference_batch_sizes:
                x = torch.randn(b, 3, h, w, generator=gen).to(dev)
                for _ in range(max(1, warmup)):
                    model(x)
                times = []
                for _ in range(max(1, repeats)):
                    sync()
                    t0 = time.perf_counter()
                    model(x)
                    sync()
                    times.append(time.perf_counter() - t0)
                latency = _median(times)
                result["inference"].append(
                    {"batch_size": b, "latency_seconds": latency, "images_per_second": b / latency}
                )
    alone = cfg.objective.companion_runs(method) if companions else {}
    if alone:
        # Each model alone (with plain cross-entropy), beside the joint figures above.
        kw = dict(
            batch_size=batch_size,
            num_classes=num_classes,
            timing=timing,
            device=device,
            seed=seed,
            repeats=repeats,
            selector=selector,
            amp=amp,
            warmup=warmup,
        )
        kept = measure(backbone, method, "ce", **kw)
        keys = [k for k in MEASURE_KEYS + AMP_KEYS if k in kept]
        result["student"] = {k: kept[k] for k in keys}
        for name, (spec, its_method) in alone.items():
            other = measure(spec, its_method, "ce", **kw)
            result[name] = {k: other[k] for k in keys}
    return result
