"""Optimizer, parameter groups and the learning-rate schedule (timm's cosine with warm-up, reproduced)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig
from ..trainable import trainable_named_parameters  # noqa: F401  (re-exported)


def param_groups(named: list[tuple[str, nn.Parameter]], cfg: TrainConfig, no_decay_names: set[str] = frozenset()):
    """Two groups: decayed (ndim > 1, as the papers' code) and not decayed (biases, norms, timm's no-decay list)."""
    decay, no_decay = [], []
    for n, p in named:
        skip = (p.ndim <= 1 and not cfg.decay_1d) or n.split(".")[-1] in no_decay_names or n in no_decay_names
        (no_decay if skip else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": cfg.weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(groups, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def lr_at(t: float, cfg: TrainConfig, units_per_epoch: int = 1) -> float:
    """Learning rate at time ``t`` (in epochs, or in steps with ``units_per_epoch`` steps per epoch).

    ``schedule=linear``: warm-up over ``warmup_steps`` (or ``warmup_epochs``) from ``warmup_lr``, then a straight line
    from ``lr`` at the warm-up's end to ``min_lr`` at the end of training (transformers'
    ``get_linear_schedule_with_warmup`` with ``warmup_lr`` and ``min_lr`` 0: ``lr * t / warmup``, then
    ``lr * (total - t) / (total - warmup)``).

    Linear warm-up from ``warmup_lr`` over ``warmup_epochs``, inside a cosine from ``lr`` to ``min_lr`` over
    ``cosine_epochs`` (timm's ``CosineLRScheduler`` with ``warmup_prefix=False``), then ``min_lr``. With
    ``warmup_kind=constant_prefix``: ``warmup_lr`` for ``warmup_epochs``, then the cosine from its start (Dassl's
    ``ConstantWarmupScheduler``).
    """
    warmup = getattr(cfg, "warmup_steps", 0) or cfg.warmup_epochs * units_per_epoch
    total = (cfg.cosine_epochs or cfg.epochs) * units_per_epoch
    if getattr(cfg, "warmup_kind", "linear") == "constant_prefix":  # Dassl: constant, then the cosine from its start
        if t < warmup:
            return cfg.warmup_lr
        t = t - warmup
    elif t < warmup:
        return cfg.warmup_lr + t * (cfg.lr - cfg.warmup_lr) / warmup
    if t >= total:
        return cfg.min_lr
    if getattr(cfg, "schedule", "cosine") == "linear":  # transformers' get_linear_schedule_with_warmup
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * (total - t) / max(1, total - warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t / total))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
