"""What every method shares: its config base class and the freeze / apply / count helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from torch import nn

from ..backbones import split_backbone_spec
from ..config_base import BaseConfig
from ..errors import ConfigError
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
    #: The backbone families it applies to (``("clip",)`` for prompt learning on CLIP's text tower); None: any
    #: family whose anatomy has its sites.
    families: ClassVar[Optional[tuple[str, ...]]] = None
    #: Nothing trains (CLIP ``zeroshot``): the trainer runs no epoch and evaluates the model as built.
    trains_nothing: ClassVar[bool] = False

    def inject(self, backbone) -> None:
        raise NotImplementedError

    def extra_trainable_count(self, backbone) -> int:
        """Analytic count of the method's trainable parameters, head excluded (tested against the model)."""
        raise NotImplementedError


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def trained_head_parameters(head: nn.Module, method) -> list[nn.Parameter]:
    """The head's parameters that every run of ``method`` trains: all of them, unless the head says otherwise with a
    ``trained_parameters(method)`` of its own (CLIP's text classifier: a linear probe's class embeddings for
    ``linear``, nothing for other methods)."""
    own = getattr(head, "trained_parameters", None)
    return list(own(method)) if own is not None else list(head.parameters())


def apply_method(backbone, method) -> None:
    """Freeze the backbone, let the method inject its modules, then make the head trainable (what of it the head's
    :func:`trained_head_parameters` says)."""
    if isinstance(method, (str, dict)):
        method = METHODS.build(method)
    if method.families is not None:
        family = split_backbone_spec(backbone.spec)[0]
        if family not in method.families:
            raise ConfigError(
                f"method {method.name!r} applies to {', '.join(method.families)} backbones only, not {backbone.spec!r}"
            )
    freeze(backbone)
    method.inject(backbone)
    for p in trained_head_parameters(backbone.head, method):
        p.requires_grad_(True)
    backbone.method = method


def methods_for(family: str) -> list[str]:
    """The registered methods that apply to backbones of ``family`` (those that name no families apply to all)."""
    return [n for n in METHODS.names() if METHODS.get(n).families is None or family in METHODS.get(n).families]


def head_param_names(backbone) -> set[str]:
    head = backbone.head
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in backbone.named_parameters() if id(p) in ids}


def count_params(module: nn.Module, trainable_only: bool = True, exclude: set[str] | None = None) -> int:
    exclude = exclude or set()
    return sum(
        p.numel() for n, p in module.named_parameters() if (p.requires_grad or not trainable_only) and n not in exclude
    )
