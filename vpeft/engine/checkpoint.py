"""Trainable-only checkpoints (safetensors) and atomic file writes."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError, describe_mismatch
from ..trainable import trainable_named_parameters

TRAINABLE_FILE = "trainable.safetensors"


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Write ``path`` all or nothing: ``write(tmp)`` fills a temporary file beside it, named ``.NAME.<random>``, which
    then replaces ``path``. A kill leaves ``path`` as it was and at worst that temporary file, which the trainer
    recognises as debris. Every file of a run directory is written through here."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a run's files get the mode any new file would
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | Path, obj) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """A safetensors file, atomically."""
    sd = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def _extra_buffers(model) -> dict[str, torch.Tensor]:
    """Persistent buffers of modules a method or selector added (GPS's selected indices): part of the run's state."""
    extras = getattr(model, "extras", None)
    if extras is None:
        return {}
    return {
        f"extras.{n}": b
        for n, b in extras.state_dict().items()
        if not isinstance(b, nn.Parameter) and not any(n == pn for pn, _ in extras.named_parameters())
    }


def trainable_state_dict(model, objective=None) -> dict[str, torch.Tensor]:
    """Only the trainable tensors, keyed as in ``model.named_parameters()`` (objective ones under ``objective.``),
    plus the persistent buffers of added modules (GPS's indices). Never a frozen backbone weight."""
    modules = [model] + ([objective] if objective is not None else [])
    out = {n: p.detach().clone() for n, p in trainable_named_parameters(*modules)}
    out.update({k: v.detach().clone() for k, v in _extra_buffers(model).items()})
    return out


def save_trainable(path: str | Path, model, objective=None, metadata: dict | None = None) -> None:
    atomic_save_tensors(path, trainable_state_dict(model, objective), metadata)


def load_trainable_state(model, objective, sd: dict[str, torch.Tensor], source: str = "state") -> None:
    """Copy ``sd`` into the trainable tensors; every trainable tensor must be present with its shape."""
    named = dict(trainable_named_parameters(*([model] + ([objective] if objective is not None else []))))
    named.update(_extra_buffers(model))
    missing = [k for k in named if k not in sd]
    unexpected = [k for k in sd if k not in named]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(named[k].shape)}"
        for k in sd
        if k in named and sd[k].shape != named[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not match the model: " + describe_mismatch(missing, unexpected, mismatched)
        )
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(sd[k])


def read_trainable(path: str | Path) -> dict[str, torch.Tensor]:
    """A run's ``trainable.safetensors``, with a clear error when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"trainable checkpoint {path} does not exist")
    try:
        return load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def load_trainable(path: str | Path, model, objective=None) -> None:
    load_trainable_state(model, objective, read_trainable(path), source=str(path))
