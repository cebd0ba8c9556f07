"""Exact training-memory accounting and parameter counts, for the trainer, the objectives and ``vpeft measure``.

Training memory = activations autograd keeps for backward + parameters + gradients + optimizer state.

Activations are counted exactly with :func:`torch.autograd.graph.saved_tensors_hooks`: every tensor saved for
backward during one training forward, each storage once, leaving out parameters and views of parameters (a linear
layer saves its weight's transpose, which costs no memory of its own). Under autocast, a layer saves the
low-precision copy of its weight that autocast made: such copies are counted apart (``autocast_weight_bytes``), since
they do not grow with the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from .methods.base import head_param_names
from .trainable import trainable_named_parameters


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
                self._param_ptrs.add(storage_id(p))
                if p.is_floating_point():
                    self._by_numel.setdefault(p.numel(), []).append(p)
            for b in m.buffers():
                self._param_ptrs.add(storage_id(b))
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
        ptr = storage_id(t)
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


def storage_id(t: torch.Tensor) -> int:
    """A tensor's storage, told apart from the others alive: its address, or on the meta device (where every address
    is 0, so that shapes alone give a CPU step's byte counts) the storage's own handle."""
    storage = t.untyped_storage()
    return storage.data_ptr() or storage._cdata


def _nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        ptr = storage_id(t)
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


def memory_stats(
    model: nn.Module, objective: nn.Module | None, optimizer, saved_bytes: int, autocast_weight_bytes: int | None = None
) -> dict[str, int]:
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
    head = head_param_names(model) if hasattr(model, "anatomy") else set()  # a companion may be any module
    return {
        "trainable": sum(p.numel() for _, p in named),
        "trainable_no_head": sum(p.numel() for n, p in named if n not in head),
        "total": sum(p.numel() for p in model.parameters()),
    }
