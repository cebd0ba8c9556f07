"""Fold a mergeable method into the backbone: the result is a plain timm model with no extra modules.

``vpeft merge`` writes it as a ``.safetensors`` file (its metadata holds the rest) or as a torch state dict
(``.pth`` / ``.pt``: ``model.load_state_dict(torch.load(path))`` works, the same metadata rides on the dict as its
``vpeft_metadata`` attribute). The metadata names the timm architecture and keyword arguments that rebuild the
model (a shipped backbone, :mod:`vpeft.zoo`, resolved to its timm architecture), and, when the writer gives them,
the class names, the task and the preprocessing the model expects, so that a merged file is usable on its own
(:func:`load_merged`, :func:`read_merged_metadata`, ``vpeft predict --merged``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..backbones import split_backbone_spec
from ..errors import CheckpointError, ConfigError
from ..registry import FAMILIES
from ..spec import parse_spec

FORMAT = "vpeft-merged"
#: File suffixes ``vpeft merge`` writes, by format.
SUFFIXES = {".safetensors": "safetensors", ".pth": "torch", ".pt": "torch"}
#: The attribute of a ``.pth`` state dict that carries the metadata (torch keeps an OrderedDict's attributes).
TORCH_METADATA = "vpeft_metadata"


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
    """The timm architecture and keyword arguments that build a plain model with the merged model's architecture (a
    shipped backbone's name resolved to its timm architecture and options)."""
    family, name, kwargs = split_backbone_spec(backbone.spec)
    if family != "timm":
        raise ConfigError(f"merge writes a plain timm model; backbone {backbone.spec!r} is of family {family!r}")
    name, kwargs = FAMILIES.get("timm")().resolve(name, kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k != "drop_path_rate"}
    kwargs["num_classes"] = backbone.num_classes
    model = backbone.model
    if backbone.pool == "avg" and getattr(model, "global_pool", None) == "avg" and hasattr(model, "fc_norm"):
        kwargs["global_pool"] = "avg"
        kwargs["fc_norm"] = "fc_norm" in backbone.anatomy.final_norms()
    return name, kwargs


def family_kwargs(backbone) -> tuple[str, str, dict]:
    """``(family, architecture, keyword arguments)`` that rebuild the merged model: :func:`timm_kwargs` for a timm
    backbone, else the family's own (its :meth:`~vpeft.backbones.Family.create` takes them: a SAM model is timm's
    image encoder with SAM's mask decoder as its head, rebuilt by the ``sam`` family)."""
    family, name, kwargs = split_backbone_spec(backbone.spec)
    if family == "timm":
        return ("timm", *timm_kwargs(backbone))
    arch, kwargs = FAMILIES.get(family)().resolve(name, kwargs)
    return family, arch, {k: v for k, v in kwargs.items() if k != "drop_path_rate"}


def merged_format(path: str | Path) -> str:
    """``safetensors`` or ``torch``, by the file's suffix; any other suffix is a :class:`ConfigError`."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"merged model {path}: unknown suffix {suffix or '(none)'!r}; write .safetensors "
            "(safetensors with metadata) or .pth / .pt (a torch state dict)"
        )
    return SUFFIXES[suffix]


def save_merged(backbone, path, info: Optional[dict] = None) -> None:
    """Merge and write the plain model that :func:`load_merged` (or timm plus the recorded kwargs) reads.

    Args:
        backbone: A backbone with a mergeable method applied; it is consumed.
        path: ``.safetensors`` or ``.pth`` / ``.pt`` (a torch state dict); another suffix fails before anything is
            merged or written.
        info: What else the metadata records, JSON-serialisable by key (``class_names``, ``task``, ``preprocess``:
            see :func:`read_merged_metadata`).
    """
    kind = merged_format(path)
    family, name, kwargs = family_kwargs(backbone)
    model = merge(backbone)
    meta = {"format": FORMAT, "timm_name": name, "timm_kwargs": json.dumps(kwargs)}
    if family != "timm":  # a timm model's file stays as it was; another family's names the family that builds it
        meta["family"] = json.dumps(family)
    meta.update({k: json.dumps(v) for k, v in (info or {}).items()})
    sd = model.state_dict()
    if kind == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path), metadata=meta)
        return
    out = OrderedDict((k, v.detach().clone()) for k, v in sd.items())
    out._metadata = getattr(sd, "_metadata", None)  # torch's module versions, as a state dict carries them
    setattr(out, TORCH_METADATA, meta)
    torch.save(out, str(path))


def _read(path: str | Path) -> tuple[dict, Optional[dict]]:
    """``(metadata, state dict)`` of a merged file; the state dict is None for safetensors (read lazily)."""
    kind = merged_format(path)
    if not Path(path).is_file():
        raise CheckpointError(f"merged model {path} does not exist")
    try:
        if kind == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                return f.metadata() or {}, None
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read merged model {path}: {type(e).__name__}: {e}") from None
    return (getattr(sd, TORCH_METADATA, None) or {}) if isinstance(sd, dict) else {}, sd


def read_merged_metadata(path: str | Path) -> dict:
    """The metadata of a file written by ``vpeft merge``, decoded: ``timm_name``, ``timm_kwargs`` and, where the
    writer recorded them, ``class_names`` (a list, or None when the classes are plain numbers), ``task`` and
    ``preprocess`` (``input_size`` [h, w], ``resize`` [h, w] decoded before the crop, ``crop`` (``center`` or
    ``none``), ``interpolation``, ``mean``, ``std``, ``normalize``)."""
    meta, _ = _read(path)
    return _decode_meta(meta, path)


def _decode_meta(meta: dict, path) -> dict:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} was not written by 'vpeft merge' (no {FORMAT} metadata)")
    out = {}
    for k, v in meta.items():
        try:
            out[k] = v if k in ("format", "timm_name") else json.loads(v)
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: metadata {k!r} is not valid JSON") from None
    return out


def load_merged(path) -> nn.Module:
    """A plain timm model (in eval mode) from a file written by ``vpeft merge``.

    A shipped backbone's name is resolved to its timm architecture (files written before the metadata recorded it
    load too). The model's ``pretrained_cfg`` carries the recorded class names (``label_names``) and preprocessing
    (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode="squash"``, ``mean``, ``std``), so timm's
    ``resolve_data_config`` builds its transform.
    """
    import timm

    meta, sd = _read(path)
    meta = _decode_meta(meta, path)
    family = meta.get("family", "timm")
    if family != "timm":  # built by its family from the recorded architecture and options
        if family not in FAMILIES:
            raise CheckpointError(f"{path}: its model is of backbone family {family!r}, which is not installed")
        name, kwargs = meta["timm_name"], dict(meta["timm_kwargs"])
    else:
        name, kwargs = FAMILIES.get("timm")().resolve(meta["timm_name"], dict(meta["timm_kwargs"]))
    try:
        model = FAMILIES.get(family)().create(name, kwargs) if family != "timm" else timm.create_model(name, **kwargs)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot build its {family} model {name!r}: {type(e).__name__}: {e}") from None
    if sd is None:
        from safetensors.torch import load_file

        sd = load_file(str(path))
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its tensors do not fit timm model {name!r}: {e}") from None
    prep = meta.get("preprocess")
    if prep and family == "timm":
        h, w = prep["input_size"]
        model.pretrained_cfg = {
            **getattr(model, "pretrained_cfg", {}),
            "input_size": (3, h, w),
            "interpolation": prep["interpolation"],
            "crop_pct": h / prep["resize"][0],
            "crop_mode": "squash",
            "mean": tuple(prep["mean"]),
            "std": tuple(prep["std"]),
            "num_classes": kwargs.get("num_classes"),
        }
    set_classes = getattr(getattr(model, "head", None), "set_classes", None)
    if meta.get("class_names") and set_classes is not None:  # a text classifier (CLIP): its class prompts
        task = meta.get("task") or {}
        options = task if isinstance(task, dict) else parse_spec(task)[1]
        set_classes(list(meta["class_names"]), options.get("template") or "default")
    if meta.get("class_names") and family == "timm":
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "label_names": list(meta["class_names"])}
    return model.eval()
