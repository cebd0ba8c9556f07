"""Exact training-memory accounting on any device, and ``vpeft measure``.

Training memory = activations autograd keeps for backward + parameters + gradients + optimizer state.

Activations are counted exactly with :func:`torch.autograd.graph.saved_tensors_hooks`: every tensor saved for
backward during one training forward, each storage once, leaving out parameters and views of parameters (a linear
layer saves its weight's transpose, which costs no memory of its own). Under autocast, a layer saves the
low-precision copy of its weight that autocast made: such copies are counted apart (``autocast_weight_bytes``), since
they do not grow with the batch.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from .config import RunConfig, spec_string
from .engine.optim import build_optimizer, param_groups
from .methods.base import head_param_names
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


class SavedTensorProbe:
    """Context manager counting the bytes autograd saves for backward inside it.

    A saved tensor whose storage holds exactly one of the modules' parameters cast to another dtype (autocast's
    copy of a weight, found by size and compared by value) is a weight copy: :attr:`weight_copy_bytes` counts those,
    :attr:`activation_bytes` the rest, :attr:`bytes` both.

    Args:
        *modules: Modules whose parameters (and views of them) are not activations.
    """

    def __init__(self, *modules: nn.Module):
        self._param_ptrs = set()
        self._by_numel: dict[int, list[torch.Tensor]] = {}
        for m in modules:
            for p in m.parameters():
                self._param_ptrs.add(p.untyped_storage().data_ptr())
                if p.is_floating_point():
                    self._by_numel.setdefault(p.numel(), []).append(p)
            for b in m.buffers():
                self._param_ptrs.add(b.untyped_storage().data_ptr())
        self._storages: dict[tuple, int] = {}
        self._copies: set[tuple] = set()
        self._ctx = None

    @torch.no_grad()
    def _is_weight_copy(self, t: torch.Tensor, nbytes: int) -> bool:
        if not t.is_floating_point() or nbytes % t.element_size():
            return False
        n = nbytes // t.element_size()
        for p in self._by_numel.get(n, ()):
            if p.dtype != t.dtype and p.device == t.device:
                q = p.detach().to(t.dtype)  # keeps p's (dense) strides: compare storages in memory order
                if torch.equal(t.as_strided((n,), (1,), 0), q.as_strided((n,), (1,), 0)):
                    return True
        return False

    def _pack(self, t: torch.Tensor):
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse or other storage-less tensors: count their own size
            self._storages[("nostorage", id(t))] = t.numel() * t.element_size()
            return t
        ptr = storage.data_ptr()
        if ptr and ptr not in self._param_ptrs:
            key = (str(t.device), ptr)
            if key not in self._storages and self._is_weight_copy(t, storage.nbytes()):
                self._copies.add(key)
            self._storages[key] = max(self._storages.get(key, 0), storage.nbytes())
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    @property
    def bytes(self) -> int:
        """Every saved storage: activations and weight copies."""
        return sum(self._storages.values())

    @property
    def weight_copy_bytes(self) -> int:
        """Saved storages that are a parameter cast to another dtype (autocast's weight copies)."""
        return sum(self._storages[k] for k in self._copies)

    @property
    def activation_bytes(self) -> int:
        return self.bytes - self.weight_copy_bytes


def _nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


def memory_stats(model: nn.Module, objective: nn.Module | None, optimizer, saved_bytes: int,
                 autocast_weight_bytes: int | None = None) -> dict[str, int]:
    """Parameter, gradient and optimizer-state bytes (after at least one step) plus ``saved_bytes``; with
    ``autocast_weight_bytes`` (saved low-precision weight copies) that key too, and the total counts it."""
    modules = [model] + ([objective] if objective is not None else [])
    params = {id(p): p for m in modules for p in m.parameters()}
    param_bytes = sum(p.numel() * p.element_size() for p in params.values())
    grad_bytes = sum(p.numel() * p.element_size() for _, p in trainable_named_parameters(*modules))
    state_tensors = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    opt_bytes = _nbytes(state_tensors) if state_tensors else 0
    out = {
        "saved_activation_bytes": int(saved_bytes),
        "param_bytes": int(param_bytes),
        "grad_bytes": int(grad_bytes),
        "optimizer_state_bytes": int(opt_bytes),
        "train_memory_bytes": int(saved_bytes + param_bytes + grad_bytes + opt_bytes + (autocast_weight_bytes or 0)),
    }
    if autocast_weight_bytes is not None:
        out["autocast_weight_bytes"] = int(autocast_weight_bytes)
    return out


def param_counts(model, objective=None) -> dict[str, int]:
    """Counts of the model that is kept (the student): a teacher owned by the objective is counted apart."""
    named = trainable_named_parameters(model)
    head = head_param_names(model)
    return {
        "trainable": sum(p.numel() for _, p in named),
        "trainable_no_head": sum(p.numel() for n, p in named if n not in head),
        "total": sum(p.numel() for p in model.parameters()),
    }


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
    cfg = RunConfig.from_dict({"backbone": {"spec": backbone}, "method": method, "objective": objective,
                               "selector": selector})
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
    teacher = getattr(obj, "teacher", None)
    if teacher is not None:  # together: the student's counts plus the teacher's
        for k, v in param_counts(teacher).items():
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
                result["inference"].append({"batch_size": b, "latency_seconds": latency,
                                            "images_per_second": b / latency})
    if teacher is not None:
        # Each model alone (with plain cross-entropy), beside the joint figures above.
        icfg = obj.cfg
        kw = dict(batch_size=batch_size, num_classes=num_classes, timing=timing, device=device, seed=seed,
                  repeats=repeats, selector=selector, amp=amp, warmup=warmup)
        student = measure(backbone, method, "ce", **kw)
        t_method = icfg.teacher_method if icfg.teacher_method is not None else method
        alone = measure(icfg.teacher, t_method, "ce", **kw)
        keys = [k for k in MEASURE_KEYS + AMP_KEYS if k in student]
        result["student"] = {k: student[k] for k in keys}
        result["teacher"] = {k: alone[k] for k in keys}
    return result
