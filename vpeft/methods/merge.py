"""Fold a mergeable method into the backbone: the result is a plain timm model with no extra modules."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError


def merge(backbone) -> nn.Module:
    """Fold ``backbone``'s method into its weights and return the plain timm model (the backbone is consumed).

    Raises:
        ConfigError: if the method cannot be merged (it adds tokens or non-linear modules) or an objective added
            modules of its own.
    """
    method = getattr(backbone, "method", None)
    if method is None:
        raise ConfigError("this backbone has no method applied; nothing to merge")
    if not method.mergeable:
        raise ConfigError(
            f"method {method.name!r} cannot be merged: it adds modules that are not linear in the frozen weights"
        )
    foreign = [k for k in backbone.extras if k != method.name]
    if foreign:
        raise ConfigError(f"cannot merge: modules {foreign} were added by something other than the method")
    if hasattr(method, "merge"):
        method.merge(backbone)
    backbone.remove_hooks()
    backbone.extras.clear()
    return backbone.model
