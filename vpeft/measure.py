"""Exact training-memory accounting on any device, and ``vpeft measure``.

Training memory = activations autograd keeps for backward + parameters + gradients + optimizer state.

Activations are counted exactly with :func:`torch.autograd.graph.saved_tensors_hooks`: every tensor saved for
backward during one training forward, each storage once, leaving out parameters and views of parameters (a linear
layer saves its weight's transpose, which costs no memory of its own).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from .engine.optim import trainable_named_parameters

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


class SavedTensorProbe:
    """Context manager counting the bytes autograd saves for backward inside it.

    Args:
        *modules: Modules whose parameters (and views of them) are not activations.
    """

    def __init__(self, *modules: nn.Module):
        self._param_ptrs = set()
        for m in modules:
            for p in m.parameters():
                self._param_ptrs.add(p.untyped_storage().data_ptr())
            for b in m.buffers():
                self._param_ptrs.add(b.untyped_storage().data_ptr())
        self._storages: dict[tuple, int] = {}
        self._ctx = None

    def _pack(self, t: torch.Tensor):
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse or other storage-less tensors: count their own size
            self._storages[("nostorage", id(t))] = t.numel() * t.element_size()
            return t
        ptr = storage.data_ptr()
        if ptr and ptr not in self._param_ptrs:
            key = (str(t.device), ptr)
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
        return sum(self._storages.values())


def _nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


def memory_stats(model: nn.Module, objective: nn.Module | None, optimizer, saved_bytes: int) -> dict[str, int]:
    """Parameter, gradient and optimizer-state bytes (after at least one step) plus ``saved_bytes``."""
    modules = [model] + ([objective] if objective is not None else [])
    params = {id(p): p for m in modules for p in m.parameters()}
    param_bytes = sum(p.numel() * p.element_size() for p in params.values())
    grad_bytes = sum(p.numel() * p.element_size() for _, p in trainable_named_parameters(*modules))
    state_tensors = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    opt_bytes = _nbytes(state_tensors) if state_tensors else 0
    return {
        "saved_activation_bytes": int(saved_bytes),
        "param_bytes": int(param_bytes),
        "grad_bytes": int(grad_bytes),
        "optimizer_state_bytes": int(opt_bytes),
        "train_memory_bytes": int(saved_bytes + param_bytes + grad_bytes + opt_bytes),
    }


def param_counts(model, objective=None) -> dict[str, int]:
    """Counts of the model that is kept (the student): a teacher owned by the objective is counted apart."""
    from .methods.base import head_param_names

    named = trainable_named_parameters(model)
    head = head_param_names(model)
    return {
        "trainable": sum(p.numel() for _, p in named),
        "trainable_no_head": sum(p.numel() for n, p in named if n not in head),
        "total": sum(p.numel() for p in model.parameters()),
    }


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
) -> dict[str, Any]:
    """Build ``backbone x method x objective`` with random weights and measure one AdamW training step.

    Returns:
        A dict with ``method``, ``objective`` and :data:`MEASURE_KEYS` (``step_seconds`` is None without timing;
        ``cuda_max_memory_allocated`` is added on CUDA). ``step_seconds`` is the median of ``repeats`` timed steps
        after the measured one.
    """
    from .config import RunConfig, spec_string
    from .engine.optim import build_optimizer, param_groups
    from .run import build_model

    cfg = RunConfig.from_dict({"backbone": {"spec": backbone}, "method": method, "objective": objective,
                               "selector": selector})
    torch.manual_seed(seed)
    model, obj = build_model(cfg, num_classes)
    if cfg.selector is not None:
        # The structure (what trains, memory) does not depend on the criterion; with no data, select by magnitude.
        sel = type(cfg.selector).from_dict({**cfg.selector.to_dict(), "criterion": "magnitude"})
        sel.apply(model, sel.select(model, sel.scores(model)))
    dev = torch.device(device)
    model.to(dev), obj.to(dev)
    h, w = model.input_size
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, h, w, generator=gen).to(dev)
    labels = torch.randint(0, num_classes, (batch_size,), generator=gen).to(dev)
    named = trainable_named_parameters(model, obj)
    opt = build_optimizer(param_groups(named, cfg.train), cfg.train) if named else None
    model.train(), obj.train()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with SavedTensorProbe(model, obj) as probe:
        out = obj(model, images, labels)
    loss = out["loss"]
    if loss.requires_grad:
        loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    del out, loss
    result: dict[str, Any] = {"method": spec_string(cfg.method), "objective": spec_string(cfg.objective)}
    if cfg.selector is not None:
        result["selector"] = spec_string(cfg.selector)
    result.update(param_counts(model))
    teacher = getattr(obj, "teacher", None)
    if teacher is not None:  # together: the student's counts plus the teacher's
        for k, v in param_counts(teacher).items():
            result[k] += v
    if opt is None:
        opt = torch.optim.AdamW([torch.zeros(0)])
    result.update(memory_stats(model, obj, opt, probe.bytes))
    result["step_seconds"] = None
    if timing:
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            out = obj(model, images, labels)
            if out["loss"].requires_grad:
                out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t0)
            del out
        result["step_seconds"] = sorted(times)[len(times) // 2]
    if dev.type == "cuda":
        result["cuda_max_memory_allocated"] = torch.cuda.max_memory_allocated(dev)
    if teacher is not None:
        # Each model alone (with plain cross-entropy), beside the joint figures above.
        icfg = obj.cfg
        student = measure(backbone, method, "ce", batch_size, num_classes, timing, device, seed, repeats, selector)
        t_method = icfg.teacher_method if icfg.teacher_method is not None else method
        alone = measure(icfg.teacher, t_method, "ce", batch_size, num_classes, timing, device, seed, repeats, selector)
        result["student"] = {k: student[k] for k in MEASURE_KEYS}
        result["teacher"] = {k: alone[k] for k in MEASURE_KEYS}
    return result
