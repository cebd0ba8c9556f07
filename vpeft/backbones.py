"""Backbones: models by name from a family of builders, weights from local files, and the hooks methods use.

A :class:`Family` builds a model from a name with overrides and loads local weights into it; families sit in
:data:`~vpeft.registry.FAMILIES`, and a backbone spec may name one as a prefix (``sam:vit_b``, see
:func:`split_backbone_spec`). A bare name is the ``timm`` family's, defined here.

A :class:`Backbone` wraps a timm model without copying it. Methods find the model's structural sites (blocks,
attention projections, residual branches, the token sequence) through its :class:`~vpeft.anatomy.Anatomy`, which
the family builds (:meth:`Family.anatomy`), and attach through the hooks added here, all built on PyTorch module
hooks so timm's forward code runs unchanged:

* :meth:`Backbone.register_token_hook`: insert extra tokens after the position embedding (VPT, the GIST token);
* :meth:`Backbone.register_block_hook`: read a block's input and/or rewrite its output (DTL, VPT-deep).
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .anatomy import Anatomy, TimmAnatomy, Where
from .errors import CheckpointError, ConfigError, VpeftError, describe_mismatch
from .registry import FAMILIES
from .spec import parse_spec
from .zoo import ZOO


class Backbone(nn.Module):
    """A timm classification model plus the hooks and modules that methods attach to it.

    Args:
        model: The timm model.
        spec: The spec it was built from (kept for the run config).
        pool: Classifier input, ``token`` or ``avg`` (mean of patch tokens, then the final norm).
        anatomy: The model's structural sites (its family's :meth:`Family.anatomy`); None: timm's.
    """

    def __init__(self, model: nn.Module, spec: str, pool: str, anatomy: Optional[Anatomy] = None):
        super().__init__()
        self.model = model
        #: Where methods attach: asked instead of the model's attributes.
        self.anatomy = anatomy if anatomy is not None else TimmAnatomy(model)
        self.spec = spec
        self.pool = pool
        # Modules owned by methods or objectives that do not live inside the timm model (prompts, side networks).
        self.extras = nn.ModuleDict()
        #: Where inserted tokens sit in the sequence, by owner (``"vpt_deep"``, ``"gist"``): ``slice(start, stop)``.
        self.token_slots: dict[str, slice] = {}
        self._hook_handles: list = []

    # ---- timm's interface -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.model.forward_head(x, pre_logits=pre_logits)

    @property
    def head(self) -> nn.Module:
        return self.anatomy.head

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def embed_dim(self) -> int:
        return getattr(self.model, "embed_dim", None) or self.model.num_features

    @property
    def is_vit(self) -> bool:
        """True for plain ViT-like models: one token sequence that tokens can join (see ``anatomy.token_sequence``)."""
        return self.anatomy.token_sequence() is not None

    @property
    def has_class_token(self) -> bool:
        return self.anatomy.has_class_token

    @property
    def num_prefix_tokens(self) -> int:
        return self.anatomy.num_prefix_tokens

    @property
    def blocks(self) -> list[nn.Module]:
        """All transformer / conv blocks in forward order (ViT ``blocks``; Swin and ConvNeXt stages flattened)."""
        return self.anatomy.blocks

    def stages(self) -> list[tuple[nn.Module | None, list[nn.Module]]]:
        """``(stage module, its blocks)`` pairs; a ViT has a single stage."""
        return self.anatomy.stages()

    @property
    def input_size(self) -> tuple[int, int]:
        return self.anatomy.input_spec.size

    def set_pool(self, pool: str) -> None:
        """Switch the classifier input (``token`` or ``avg``); see :func:`create_backbone`."""
        if pool != self.pool:
            if pool == "token":
                raise ConfigError("this backbone was built with pool 'avg'; build it with pool 'token' instead")
            self.pool = _set_pool(self.model, pool, self.spec)

    # ---- hooks ------------------------------------------------------------------------------------------------------
    def register_token_hook(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        num_tokens: int,
        owner: str = "tokens",
        where: Where = "post_norm_pre",
    ):
        """Insert ``num_tokens`` tokens into the token sequence before the first block, at the anatomy's insertion
        point ``where`` (by default after the position embedding and ``norm_pre``).

        ``fn(x)`` receives ``[B, N, D]`` tokens and must return ``[B, N + num_tokens, D]`` with the new tokens placed
        right after the existing prefix tokens (class token). They are counted as prefix tokens, so timm's average
        pooling and ``forward_intermediates`` leave them out. Their place is recorded in ``token_slots[owner]``.
        """
        seq = self.anatomy.token_sequence(where)
        if seq is None:
            raise ConfigError(f"cannot insert tokens into {self.anatomy.name}: {self.anatomy.reason('token_sequence')}")
        npt = seq.prefix

        def checked(x: torch.Tensor) -> torch.Tensor:
            out = fn(x)
            if out.shape[1] != x.shape[1] + num_tokens:
                raise RuntimeError(f"token hook returned {out.shape[1]} tokens, expected {x.shape[1] + num_tokens}")
            return out

        if seq.hook == "output":
            handle = seq.module.register_forward_hook(lambda module, args, output: checked(output))
        else:
            handle = seq.module.register_forward_pre_hook(lambda module, args: (checked(args[0]), *args[1:]))
        self.anatomy.add_prefix_tokens(num_tokens)
        self.token_slots[owner] = slice(npt, npt + num_tokens)
        self._hook_handles.append(handle)
        return handle

    def register_module_hook(
        self,
        module: nn.Module,
        pre: Optional[Callable[[torch.Tensor], Optional[torch.Tensor]]] = None,
        post: Optional[Callable[[torch.Tensor, torch.Tensor], Optional[torch.Tensor]]] = None,
    ) -> list:
        """Hook any submodule: ``pre(x)`` may return a replacement input; ``post(x, y)`` may return a new output.

        ``x`` is the module's first positional input and ``y`` its output. Returning None leaves them unchanged.
        """
        handles = []
        if pre is not None:
            handles.append(module.register_forward_pre_hook(lambda m, args: _replace_first(args, pre(args[0]))))
        if post is not None:
            handles.append(module.register_forward_hook(lambda m, args, out: post(args[0] if args else None, out)))
        self._hook_handles.extend(handles)
        return handles

    def override_forward(self, module: nn.Module, forward: Callable) -> _ForwardOverride:
        """Run ``forward(*args)`` instead of ``module``'s own forward, keeping its parameters and state-dict keys.

        For fusing a method into a layer (SSF's scale and shift into a LayerNorm's affine) where a hook would have to
        compute the layer twice. Undone by :meth:`remove_hooks`.
        """
        handle = _ForwardOverride(module, forward)
        self._hook_handles.append(handle)
        return handle

    def register_block_hook(
        self,
        index: int,
        pre: Optional[Callable[[torch.Tensor], Optional[torch.Tensor]]] = None,
        post: Optional[Callable[[torch.Tensor], Optional[torch.Tensor]]] = None,
    ) -> list:
        """Read (or replace) block ``index``'s input with ``pre(x)``; rewrite its output with ``post(y) -> y``."""
        blocks = self.blocks
        if not -len(blocks) <= index < len(blocks):
            raise ConfigError(f"block index {index} out of range: the backbone has {len(blocks)} blocks")
        return self.register_module_hook(
            blocks[index], pre=pre, post=(lambda x, y: post(y)) if post is not None else None
        )

    def remove_hooks(self) -> None:
        for h in self._hook_handles:
            h.remove()
        self._hook_handles.clear()
        if self.token_slots:
            self.anatomy.add_prefix_tokens(-sum(s.stop - s.start for s in self.token_slots.values()))
        self.token_slots.clear()


class _ForwardOverride:
    def __init__(self, module: nn.Module, forward: Callable):
        if "forward" in module.__dict__:
            raise ConfigError(f"{type(module).__name__} already has its forward replaced by another method")
        self.module = module
        module.forward = forward

    def remove(self) -> None:
        self.module.__dict__.pop("forward", None)


def _replace_first(args: tuple, new):
    if new is None:
        return None
    return (new, *args[1:])


def _timm():
    import timm

    return timm


#: timm's prefixes of a Hugging Face hub model name (``hf-hub:timm/vit_base_patch16_224.augreg_in21k``).
HUB_PREFIXES = ("hf-hub:", "hf_hub:")


def split_backbone_spec(spec: str) -> tuple[str, str, dict]:
    """``(family, name, overrides)`` of a backbone spec: ``family:name`` or ``family:name:key=value,...`` for a
    family registered in :data:`~vpeft.registry.FAMILIES` (``sam:vit_b``), ``name`` or ``name:key=value,...`` for
    timm.

    The part before the first colon is a family only if it is a registered family's name and the next part starts
    with a model name, not a ``key=value`` item: ``vit_tiny_patch16_224:img_size=32`` stays a timm name with overrides,
    and ``timm:vit_tiny_patch16_224:img_size=32`` is the same backbone. A timm Hugging Face hub name keeps its source
    prefix: ``hf-hub:org/name`` or ``hf-hub:org/name:key=value,...`` (``hf_hub:`` too, and after ``timm:``).
    """
    text = spec.strip()
    if text.startswith("timm:") and text[5:].lstrip().startswith(HUB_PREFIXES):
        text = text[5:].lstrip()
    if text.startswith(HUB_PREFIXES):  # timm's source prefix, not a family: the name runs to the next colon
        _, _, rest = text.partition(":")
        name, kwargs = parse_spec(rest)
        if not name or name.startswith("=") or "=" in name:
            raise ConfigError(f"backbone {spec!r}: no hub repository after the hf-hub prefix; write hf-hub:org/name")
        return "timm", f"hf-hub:{name}", kwargs
    head, colon, rest = text.partition(":")
    head, first = head.strip(), rest.partition(":")[0]
    if head in FAMILIES and colon and not first.strip():
        raise ConfigError(f"backbone {spec!r}: no model name after the family; write {head}:name")
    if first.strip() and "=" not in first:
        if head not in FAMILIES:
            raise ConfigError(
                f"backbone {spec!r}: {head!r} is not a backbone family (registered: "
                f"{', '.join(FAMILIES.names())}) and {first.split(',')[0]!r} is not a key=value item"
            )
        return (head, *parse_spec(rest))
    return ("timm", *parse_spec(spec))


class Family:
    """A family of backbones: how a model name and its overrides become a model, and how local weights load into it.

    One subclass per family, registered in :data:`~vpeft.registry.FAMILIES`, which a backbone spec names as a prefix
    (see :func:`split_backbone_spec`). For now the model must offer timm's classifier interface (``reset_classifier``,
    ``get_classifier``, ``forward_features``, ``forward_head``): :func:`create_backbone` gives it its head.
    """

    name: str  # set by ``FAMILIES.register``

    def resolve(self, name: str, kwargs: dict) -> tuple[str, dict]:
        """Check a model name and return what :meth:`create` builds, ``(architecture, keyword arguments)``; an unknown
        name fails with a :class:`~vpeft.errors.ConfigError`."""
        return name, kwargs

    def create(self, arch: str, kwargs: dict, *, drop_path: float = 0.0, pretrained: bool = False) -> nn.Module:
        """The model without a classifier, random or (``pretrained``) with the family's published weights."""
        raise NotImplementedError

    def weights(self, name: str) -> Optional[Path]:
        """The weight file that ships with model ``name``, loaded when no checkpoint is given; None: none ships."""
        return None

    def load_checkpoint(self, model: nn.Module, path: str | Path) -> None:
        """Load local backbone weights into ``model``, strictly, leaving out its classifier."""
        load_backbone_weights(model, path)

    def anatomy(self, model: nn.Module) -> Anatomy:
        """The structural sites of ``model`` that methods attach to; by default timm's (for models built the timm
        way), a family of other models overrides it."""
        return TimmAnatomy(model)


@FAMILIES.register("timm")
class Timm(Family):
    """timm's models by name (``vit_base_patch16_224``, overrides as ``timm.create_model`` keywords) and the
    backbones shipped with vpeft (:mod:`vpeft.zoo`); a bare backbone name is this family's."""

    def resolve(self, name: str, kwargs: dict) -> tuple[str, dict]:
        if name in ZOO:  # a backbone shipped with vpeft: its timm architecture, the spec's options on top
            return ZOO[name].arch, {**ZOO[name].kwargs, **kwargs}
        if name.startswith(HUB_PREFIXES):  # its architecture is read from the hub when the model is built
            return name, kwargs
        timm = _timm()
        if not timm.is_model(name.split(".")[0]):
            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown backbone {name!r}: not a timm model name.{hint}")
        return name, kwargs

    def create(self, arch: str, kwargs: dict, *, drop_path: float = 0.0, pretrained: bool = False) -> nn.Module:
        timm = _timm()
        kwargs = dict(kwargs)
        kwargs.setdefault("drop_path_rate", drop_path)
        # Built headless, so random backbone weights depend on the seed only, not on the number of classes (tasks
        # that share a random-weight backbone, as in multi-task inference, get the same frozen weights).
        if pretrained or arch.startswith(HUB_PREFIXES):  # a hub name reads its config from the hub even so
            return _create_from_hub(timm, arch, pretrained=pretrained, num_classes=0, **kwargs)
        return timm.create_model(arch, num_classes=0, **kwargs)

    def weights(self, name: str) -> Optional[Path]:
        if name not in ZOO:
            return None
        path = ZOO[name].file
        if not path.is_file():
            raise CheckpointError(
                f"backbone {name!r}: its weights {path} are missing from this install; rebuild them with "
                "'python benchmarks/pretrain_c10.py' or reinstall vpeft"
            )
        return path


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _create_from_hub(timm, name: str, pretrained: bool = True, **kwargs):
    """timm hub weights (or, for an ``hf-hub:`` name without ``pretrained``, its config); with no network, look only
    in the local cache instead of retrying for a minute."""
    if _hub_reachable():
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    try:
        from huggingface_hub import constants
    except ImportError:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    finally:
        constants.HF_HUB_OFFLINE = old


#: VPT's head bias (its MLP head with ``special_bias=True``): -log((1 - 0.01) / 0.01), a prior probability of 0.01.
VPT_HEAD_BIAS = -math.log((1 - 0.01) / 0.01)


def _init_head(head: nn.Module, kind: str = "trunc_normal") -> None:
    """``trunc_normal``: std 0.02, zero bias (timm's init: GIST, iDAT, GPS, DTL, SSF, NOAH); ``default``: nn.Linear's
    own init, as timm's ``reset_classifier`` leaves it (FacT, PETL-ViT); ``kaiming_fanout``: kaiming-normal fan-out
    weight and the constant bias :data:`VPT_HEAD_BIAS` (VPT)."""
    if not isinstance(head, nn.Linear) or kind == "default":
        return
    if kind == "trunc_normal":
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
    elif kind == "kaiming_fanout":
        nn.init.kaiming_normal_(head.weight, a=0, mode="fan_out")
        nn.init.constant_(head.bias, VPT_HEAD_BIAS)
    else:
        raise ConfigError(f"unknown head_init {kind!r} (valid: trunc_normal, default, kaiming_fanout)")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` state dict without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(f"checkpoint {path}: unknown format {suffix!r}; use .npz, .safetensors or .pth")
    except CheckpointError:
        raise
    except Exception as e:  # corrupt file, pickled objects refused by weights_only, ...
        # torch's weights_only message runs to a page: its first sentence says what failed
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(e).__name__}: {first} (not a state dict of tensors, or corrupt)"
        ) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load backbone weights (everything but the classifier) from a local file into a timm model, strictly."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    name = type(model).__name__
    if path.suffix.lower() == ".npz":
        if not hasattr(model, "load_pretrained"):
            raise CheckpointError(f"{name} cannot load Google .npz checkpoints; convert {path} to .safetensors")
        try:
            model.load_pretrained(str(path))
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} does not match the backbone ({name}): {e}") from None
        return
    sd = read_state_dict(path)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            sd = filter_fn(sd, model)
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} does not match the backbone ({name}): {e}") from None
    classifier = model.pretrained_cfg.get("classifier", "head")
    classifier = classifier if isinstance(classifier, str) else classifier[0]
    own = model.state_dict()
    is_head = lambda k: k == classifier or k.startswith(classifier + ".")  # noqa: E731
    sd = {k: v for k, v in sd.items() if not is_head(k)}
    missing = [k for k in own if k not in sd and not is_head(k)]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd if k in own and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"checkpoint {path} does not match the backbone ({name}): "
            + describe_mismatch(missing, unexpected, mismatched)
        )
    model.load_state_dict(sd, strict=False)


def _set_pool(model: nn.Module, pool: str, spec: str) -> str:
    """Switch a ViT's classifier input after its weights are loaded; returns the effective pool."""
    is_vit_like = hasattr(model, "global_pool") and hasattr(model, "fc_norm") and hasattr(model, "norm")
    current = getattr(model, "global_pool", "avg")
    if pool is None:
        return "token" if current == "token" else "avg"
    if not is_vit_like:
        if pool == "token":
            raise ConfigError(f"backbone {spec!r} has no class token; use pool 'avg'")
        return "avg"
    if pool == "token":
        if not getattr(model, "has_class_token", False):
            raise ConfigError(f"backbone {spec!r} has no class token; use pool 'avg'")
        if current != "token":
            raise ConfigError(f"backbone {spec!r} was built with global_pool={current!r}; use pool 'avg'")
        return "token"
    if current == "token":
        # DTL's classifier: the mean of the patch tokens, then the (pretrained, frozen) final norm. In timm terms this
        # is global_pool='avg' with fc_norm holding the final norm, so the result stays a plain timm model.
        model.global_pool = "avg"
        if not isinstance(model.norm, nn.Identity):
            model.fc_norm, model.norm = model.norm, nn.Identity()
    return "avg"


def create_backbone(
    spec: str,
    num_classes: int,
    checkpoint: str | Path | None = None,
    *,
    pretrained: bool = False,
    pool: Optional[str] = None,
    drop_path: float = 0.0,
    head_init: str = "trunc_normal",
) -> Backbone:
    """Build a backbone of a registered family (timm unless the spec names one) with a fresh head for ``num_classes``.

    Args:
        spec: timm model name with optional overrides, ``name:key=value,...``, or another family's model,
            ``family:name:key=value,...`` (see :func:`split_backbone_spec`).
        num_classes: Classes of the new head.
        checkpoint: Local weights (``.npz``, ``.safetensors``, ``.pth``), loaded by the family; the head in it is
            ignored.
        pretrained: Fetch the family's published weights instead (timm: the hub; needs network); ignored when
            ``checkpoint`` is given.
        pool: ``token`` (class token) or ``avg`` (mean of patch tokens, then the final norm); None keeps timm's.
        drop_path: Stochastic depth rate of the backbone's blocks.
        head_init: Initialisation of the new head: ``trunc_normal``, ``default`` or ``kaiming_fanout`` (see
            :class:`~vpeft.config.BackboneConfig`).

    Returns:
        A :class:`Backbone` with every parameter trainable; methods decide what to freeze.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    family_name, name, kwargs = split_backbone_spec(spec)
    family = FAMILIES.get(family_name)()
    arch, kwargs = family.resolve(name, kwargs)
    if checkpoint is None:
        checkpoint = family.weights(name)
    use_hub = pretrained and checkpoint is None
    try:
        model = family.create(arch, kwargs, drop_path=drop_path, pretrained=use_hub)
    except TypeError as e:
        raise ConfigError(f"backbone {spec!r}: {e}") from None
    except VpeftError:  # a family's own message (a missing package, weights it does not publish), whole
        raise
    except Exception as e:
        if use_hub:
            raise CheckpointError(
                f"could not fetch the hub weights of {arch!r} ({type(e).__name__}: {e}). This machine may be offline: "
                "download the weights where there is network and pass them with --checkpoint FILE"
            ) from None
        raise ConfigError(f"backbone {spec!r}: {e}") from None
    if checkpoint is not None:
        family.load_checkpoint(model, checkpoint)
    pool = _set_pool(model, pool, spec)
    model.reset_classifier(num_classes)
    anatomy = family.anatomy(model)
    _init_head(anatomy.head, head_init)  # the classifier Linear (SAM's sits in a pooling head)
    return Backbone(model, spec=spec, pool=pool, anatomy=anatomy)
