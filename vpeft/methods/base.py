"""What every method shares: its config base class and the freeze / apply / count helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..config_base import BaseConfig
from ..registry import METHODS


@dataclass(kw_only=True)
class MethodConfig(BaseConfig):
    """Base of every method config. A method says where trainable parameters live.

    Subclasses implement :meth:`inject`, which runs on a frozen backbone and adds modules or unfreezes tensors;
    the classifier head is made trainable afterwards by :func:`apply_method`.
    """

    name: ClassVar[str]
    #: The model's output equals the plain backbone's at initialisation (tested).
    identity_init: ClassVar[bool] = False
    #: Overrides under which the model's output equals the backbone's at init (e.g. a zero-initialised up-projection).
    identity_overrides: ClassVar[dict | None] = None
    #: The method can be folded into a plain timm model (``vpeft merge``).
    mergeable: ClassVar[bool] = False
    #: Overrides the registry-parametrised tests use to keep the method small.
    test_overrides: ClassVar[dict] = {}
    #: The method changes backbone tensors in place (the test of "only the method's tensors change" knows).
    trains_backbone: ClassVar[bool] = False

    def inject(self, backbone) -> None:
        raise NotImplementedError

    def extra_trainable_count(self, backbone) -> int:
        """Analytic count of the method's trainable parameters, head excluded (tested against the model)."""
        raise NotImplementedError


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def apply_method(backbone, method) -> None:
    """Freeze the backbone, let the method inject its modules, then make the head trainable."""
    if isinstance(method, (str, dict)):
        method = METHODS.build(method)
    freeze(backbone)
    method.inject(backbone)
    for p in backbone.head.parameters():
        p.requires_grad_(True)
    backbone.method = method


def head_param_names(backbone) -> set[str]:
    head = backbone.head
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in backbone.named_parameters() if id(p) in ids}


def count_params(module: nn.Module, trainable_only: bool = True, exclude: set[str] | None = None) -> int:
    exclude = exclude or set()
    return sum(
        p.numel() for n, p in module.named_parameters() if (p.requires_grad or not trainable_only) and n not in exclude
    )
