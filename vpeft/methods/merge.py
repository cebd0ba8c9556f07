"""Fold a mergeable method into the backbone: the result is a plain timm model with no extra modules."""

from __future__ import annotations

from torch import nn

from ..errors import CheckpointError, ConfigError
from ..backbones import split_backbone_spec


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
    selector = getattr(backbone, "selector", None)
    foreign = [k for k in backbone.extras if k != method.name and not (selector is not None and k == selector.name)]
    if foreign:
        raise ConfigError(f"cannot merge: modules {foreign} were added by something other than the method")
    if hasattr(method, "merge"):
        method.merge(backbone)
    if selector is not None:
        selector.merge(backbone)
    backbone.remove_hooks()
    backbone.extras.clear()
    return backbone.model


def timm_kwargs(backbone) -> tuple[str, dict]:
    """The timm name and keyword arguments that build a plain model with the merged model's architecture."""
    family, name, kwargs = split_backbone_spec(backbone.spec)
    if family != "timm":
        raise ConfigError(f"merge writes a plain timm model; backbone {backbone.spec!r} is of family {family!r}")
    kwargs = {k: v for k, v in kwargs.items() if k != "drop_path_rate"}
    kwargs["num_classes"] = backbone.num_classes
    if backbone.pool == "avg" and getattr(backbone.model, "global_pool", None) == "avg" and hasattr(backbone.model, "fc_norm"):
        kwargs["global_pool"] = "avg"
        kwargs["fc_norm"] = "fc_norm" in backbone.anatomy.final_norms()
    return name, kwargs


def save_merged(backbone, path) -> None:
    """Merge and write a safetensors file that :func:`load_merged` (or timm plus the recorded kwargs) reads."""
    import json

    from safetensors.torch import save_file

    name, kwargs = timm_kwargs(backbone)
    model = merge(backbone)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata={"timm_name": name, "timm_kwargs": json.dumps(kwargs), "format": "vpeft-merged"})


def load_merged(path) -> nn.Module:
    """A plain timm model from a file written by ``vpeft merge``."""
    import json

    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"cannot read merged model {path}: {e}") from None
    if meta.get("format") != "vpeft-merged":
        raise CheckpointError(f"{path} was not written by 'vpeft merge' (no vpeft-merged metadata)")
    model = timm.create_model(meta["timm_name"], **json.loads(meta["timm_kwargs"]))
    model.load_state_dict(load_file(str(path)))
    return model.eval()
