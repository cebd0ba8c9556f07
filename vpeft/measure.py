"""``vpeft measure``: a model's trainable counts, training memory (see :mod:`vpeft.memory`) and step time on any
device, with random inputs.

The task follows the backbone: a ``sam`` backbone segments (task ``segment``: one mask's logits per image, trained
with the task's loss on random 0/1 masks), any other classifies; ``task`` names another. On the ``meta`` device
nothing is computed: the model, its activations, gradients and optimizer state have shapes and no data, so the
memory of a model too large or too slow for the CPU (SAM ViT-B at 1024 px) is counted exactly, in seconds, with no
step time (the same bytes as a CPU step: the same operators save the same tensors)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch

from .backbones import split_backbone_spec
from .config import RunConfig, spec_string
from .engine.optim import build_optimizer, param_groups
from .memory import SavedTensorProbe, memory_stats, param_counts  # noqa: F401 - importable from here still
from .run import build_model
from .seg_prompts import ground_truth
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
#: The task a backbone family's models do unless ``task`` names another (the rest classify).
FAMILY_TASKS = {"sam": "segment", "clip": "clip_classify", "hf_text": "text_classify", "t5": "text2text"}
#: The data format a task's random batch stands for (the run config checks that the task reads it).
TASK_FORMATS = {
    "segment": "segfolder",
    "text_classify": "glue",
    "text_regress": "glue",
    "text2text": "glue",
    "text2text_regress": "glue",
}


def default_task(backbone: str) -> str:
    """The task ``backbone`` does by default: ``segment`` for a ``sam`` backbone, else ``classify``."""
    return FAMILY_TASKS.get(split_backbone_spec(backbone)[0], "classify")


def _to_keeping_ties(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module.to(device)`` with tied parameters still tied: a move to the ``meta`` device makes a new parameter for
    each module that holds one (T5's word embedding, encoder and decoder embeddings and LM head would count 4x)."""
    places: dict[int, list[tuple[torch.nn.Module, str]]] = {}
    for mod in module.modules():
        for name, p in mod._parameters.items():
            if p is not None:
                places.setdefault(id(p), []).append((mod, name))
    module.to(device)
    for owners in places.values():
        first = owners[0][0]._parameters[owners[0][1]]
        for mod, name in owners[1:]:
            mod._parameters[name] = first
    return module


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def measure(
    backbone: str,
    method: Any = "linear",
    objective: Any = None,
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
    task: Any = None,
) -> dict[str, Any]:
    """Build ``backbone x method x objective`` with random weights and measure one AdamW training step.

    Args:
        objective: Objective spec; null: the task's (``ce`` for ``classify``, ``seg`` with the task's loss for
            ``segment``).
        task: Task spec (``segment``, ``segment:loss=bce_dice``); null: the backbone's (:func:`default_task`).
            ``segment`` trains on random 0/1 masks at the input size, with one output (``num_classes`` unused).
        device: ``cpu``, ``cuda[:N]`` or ``meta`` (shapes only: memory without computing, no step time). The input
            size is the backbone's (a spec option sets another: ``sam:vit_b:img_size=512``).
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
        after each. A task other than ``classify`` adds ``task`` (its spec) and ``input_size``; the ``meta`` device
        adds ``structure_only: true``.
    """
    if amp not in ("none", *AMP_DTYPES):
        raise ValueError(f"amp must be none, bf16 or fp16, got {amp!r}")
    dev = torch.device(device)
    meta = dev.type == "meta"
    if meta and (amp != "none" or inference):
        raise ValueError(
            "device meta counts memory from shapes only: it runs no autocast and times nothing (drop amp / inference)"
        )
    task = task if task is not None else default_task(backbone)
    task_name = task.get("name") if isinstance(task, dict) else str(task).split(":")[0]
    raw = {"backbone": {"spec": backbone}, "method": method, "selector": selector, "task": task}
    if objective is not None:
        raw["objective"] = objective
    if task_name in TASK_FORMATS:
        raw["data"] = {"format": TASK_FORMATS[task_name]}
    cfg = RunConfig.from_dict(raw)
    if cfg.task.labels == "mask":
        num_classes = 1  # one mask's logits per image
    torch.manual_seed(seed)
    names = [f"class {i}" for i in range(num_classes)] if cfg.task.needs_class_names else None
    model, obj = build_model(cfg, num_classes, class_names=names)
    if cfg.selector is not None:  # no data here: a selection of the same structure (what trains, its memory)
        cfg.selector.apply(model, cfg.selector.structure_only(model))
    _to_keeping_ties(model, dev), obj.to(dev)
    gen = torch.Generator().manual_seed(seed)
    if cfg.task.inputs == "text":  # random token ids at the model's max_length (no padding: the longest batch)
        spec = model.anatomy.input_spec
        size = [spec.max_length]
        h, w = spec.max_length, 1

        def inputs(b: int) -> torch.Tensor:
            return torch.randint(1, spec.vocab_size, (b, spec.max_length), generator=gen).to(dev)
    else:
        h, w = model.input_size
        size = [h, w]

        def inputs(b: int) -> torch.Tensor:
            return torch.randn(b, 3, h, w, generator=gen).to(dev)

    images = inputs(batch_size)
    if cfg.task.labels == "mask":  # 0/1 masks at the input size, as the segment task's batches
        labels = (torch.rand(batch_size, h, w, generator=gen) < 0.5).to(torch.uint8).to(dev)
    else:
        labels = torch.randint(0, num_classes, (batch_size,), generator=gen).to(dev)
    timing = timing and not meta
    named = trainable_named_parameters(model, obj)
    opt = build_optimizer(param_groups(named, cfg.train), cfg.train) if named else torch.optim.AdamW([torch.zeros(0)])
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" and dev.type == "cuda" and named else None
    autocast = (lambda: torch.autocast(dev.type, dtype=AMP_DTYPES[amp])) if amp != "none" else nullcontext
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    def step(probe=None):
        with probe or nullcontext(), autocast(), ground_truth(labels if cfg.task.labels == "mask" else None):
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
    if cfg.task.name != "classify":
        result["task"] = spec_string(cfg.task)
        result["input_size"] = size
    if cfg.selector is not None:
        result["selector"] = spec_string(cfg.selector)
    result.update(param_counts(model))
    companions = obj.companions()
    for other in companions.values():  # together: the kept model's counts plus its companions' (iDAT's teacher)
        for k, v in param_counts(other).items():
            result[k] += v
    copies = probe.weight_copy_bytes if amp != "none" else None
    result.update(memory_stats(model, obj, opt, probe.activation_bytes, copies))
    if meta:  # counted from shapes: no step time
        result["structure_only"] = True
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
                x = inputs(b)
                masks = (torch.rand(b, h, w, generator=gen) < 0.5).to(dev) if cfg.task.labels == "mask" else None
                for _ in range(max(1, warmup)):
                    with ground_truth(masks):
                        model(x)
                times = []
                for _ in range(max(1, repeats)):
                    sync()
                    t0 = time.perf_counter()
                    with ground_truth(masks):
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
