"""What trains: the trainable parameters of a model and its objective, named as checkpoints and optimizers see
them. A leaf of the package (the trainer, the checkpoints and the measurements stand on it)."""

from __future__ import annotations

from torch import nn


def trainable_named_parameters(*modules: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Trainable parameters of ``modules`` (the backbone, then the objective), each once."""
    seen, out = set(), []
    for i, m in enumerate(modules):
        prefix = "" if i == 0 else "objective."
        for n, p in m.named_parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append((prefix + n, p))
    return out
