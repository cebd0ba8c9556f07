"""Model anatomy: the structural points methods attach to, asked of a protocol rather than read off the model.

Methods, objectives and :class:`~vpeft.MultiTask` never reach into a model by attribute (``attn.qkv``,
``drop_path2``, ``fc_norm``); they ask its :class:`Anatomy`, which one family implements for its models
(:meth:`vpeft.backbones.Family.anatomy`). A site a model lacks comes back as None, and :meth:`Anatomy.refuse` turns
that into a clear error naming the model and why (``method 'vpt_shallow' does not apply to VisionTransformerSAM: its
tokens are a windowed [B,H,W,C] grid, there is no token sequence to insert into``).

:class:`TimmAnatomy` covers timm's ViT (and the CLIP image tower, a ViT with ``norm_pre``), Swin, ConvNeXt and the
SAM image encoder (``samvit_*``). :meth:`Anatomy.describe` lists every site and its owner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, Optional

import torch
from torch import nn

from .errors import ConfigError

#: Where inserted tokens join the sequence: after the position embedding and ``norm_pre`` (VPT, GIST) or before
#: ``norm_pre`` (MaPLe's visual prompts on CLIP, whose ``norm_pre`` is ``ln_pre``); ``embeddings``: after a text
#: model's embedding module (its position embedding and norm included), the attention mask growing to match.
Where = Literal["post_norm_pre", "pre_norm_pre", "embeddings"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_FEATURE_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class Site:
    """A projection: output features ``out`` of ``layer`` (a fused qkv layer gives q, k and v as three slices)."""

    layer: nn.Linear
    out: slice


@dataclass(frozen=True)
class MLP:
    """A block's MLP: the module as a whole and its two layers; ``channels_first``: they are 1x1 convolutions on
    NCHW maps rather than Linear layers on the last dimension."""

    module: nn.Module
    fc1: nn.Module
    fc2: nn.Module
    channels_first: bool


@dataclass(frozen=True)
class Branch:
    """A residual branch of a block, ``x + branch(x)``.

    Attributes:
        input: The module whose first positional input is the residual stream entering the branch (a pre-hook reads
            it).
        output: The module whose output is the branch's output just before the residual add (a forward hook may add
            to it: parallel adapters).
        to_output: Maps a tensor laid out as the residual stream to ``output``'s layout (SAM's windowed attention
            returns windows: the window partition); None: the layouts agree.
        channels_first: The branch works on NCHW maps (ConvNeXt).
    """

    input: nn.Module
    output: nn.Module
    to_output: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    channels_first: bool = False


@dataclass(frozen=True)
class TokenSequence:
    """Where tokens can join the model's token sequence.

    Attributes:
        module: The module to hook.
        hook: ``output``: rewrite its output (a forward hook); ``input``: rewrite its first input (a pre-hook).
        prefix: Tokens before the patch tokens now (class and register tokens, and tokens inserted earlier).
        width: Token width.
    """

    module: nn.Module
    hook: Literal["output", "input"]
    prefix: int
    width: int


@dataclass(frozen=True)
class Embedding:
    """The patch embedding: its module (whose output is the embedded patches), the layer that computes its output
    last (a norm, else the projection: where a per-channel affine folds in) and its width."""

    module: nn.Module
    last: nn.Module
    width: int


@dataclass(frozen=True)
class InputSpec:
    """What the model takes: image ``size`` (height, width), normalisation ``mean`` / ``std``, ``patch`` size
    (None without a patch embedding) and input ``channels``."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    patch: Optional[tuple[int, int]]
    channels: int


@dataclass(frozen=True)
class TextInputSpec(InputSpec):
    """What a text model takes: token ids ``[B, L]``, int64, ``L <= max_length``, padded with ``pad_id`` (the attention
    mask is ``ids != pad_id``). ``size`` is ``(max_length,)``; the image fields are empty (``mean``, ``std``: ``()``,
    ``patch``: None, ``channels``: 0). ``cls_id`` and ``sep_id``: the tokens that open and separate the texts."""

    max_length: int
    pad_id: int
    cls_id: int
    sep_id: int
    vocab_size: int


@dataclass(frozen=True)
class SiteRow:
    """One row of :meth:`Anatomy.describe`: ``owner`` (``model`` or a block's name), the ``site`` (``attention.q``,
    ``branch.mlp.output``, ...), the hooked ``module``'s qualified name and class, and a ``detail``."""

    owner: str
    site: str
    module: str
    kind: str
    detail: str = ""


class Anatomy:
    """The protocol: a model's structural sites. One subclass per family of models; methods ask it, never the model.

    Look-ups of sites a model may lack (:meth:`attention`, :meth:`mlp`, :meth:`token_sequence`, ...) return None;
    :meth:`reason` says why, for :meth:`refuse`.

    Args:
        model: The model (not copied; sites are looked up when asked, so they follow changes such as a new head).
    """

    def __init__(self, model: nn.Module):
        self.model = model

    @property
    def name(self) -> str:
        """The model's class name, for messages."""
        return type(self.model).__name__

    # ---- blocks ------------------------------------------------------------------------------------------------------
    def stacks(self) -> dict[str, list[nn.Module]]:
        """Named block lists, each in forward order (``{"blocks": ...}``; an encoder-decoder has two)."""
        raise NotImplementedError

    def stages(self) -> list[tuple[Optional[nn.Module], list[nn.Module]]]:
        """``(stage module, its blocks)`` pairs in forward order; a plain stack is one stage without a module."""
        return [(None, blocks) for blocks in self.stacks().values()]

    @property
    def blocks(self) -> list[nn.Module]:
        """Every block in forward order, stages flattened."""
        return [blk for _, blocks in self.stages() for blk in blocks]

    def attention(self, block: nn.Module) -> Optional[dict[str, Site]]:
        """``{"q", "k", "v", "o"}`` projections of the block's attention, or None without attention."""
        return None

    def mlp(self, block: nn.Module) -> Optional[MLP]:
        """The block's two-layer MLP, or None."""
        return None

    def norms(self, block: nn.Module) -> dict[str, nn.Module]:
        """The block's normalisation layers by name, in forward order."""
        return {}

    def residual_branches(self, block: nn.Module) -> dict[str, Branch]:
        """The block's residual branches by name (``attn`` and ``mlp`` for a transformer block), in forward order."""
        return {}

    def width(self, block: nn.Module) -> int:
        """Channel width of the block's residual stream."""
        raise NotImplementedError

    def layers(self, block: nn.Module) -> list[nn.Module]:
        """Every linear, convolution and normalisation layer of the block, in module order."""
        return [m for m in block.modules() if isinstance(m, _FEATURE_LAYERS)]

    def bias_free_layers(self) -> dict[str, tuple[nn.Module, int]]:
        """Layers that BitFit gives a zero-initialised bias, added to their output: ``{qualified name: (module,
        output width)}``. None by default (BitFit trains the model's own biases); a model without biases (T5) lists
        its layers."""
        return {}

    def channels_first(self, module: nn.Module) -> bool:
        """Whether ``module`` reads and writes channels-first (NCHW) maps rather than channels in the last dim."""
        return isinstance(module, nn.modules.conv._ConvNd)

    # ---- tokens and input --------------------------------------------------------------------------------------------
    def token_sequence(self, where: Where = "post_norm_pre") -> Optional[TokenSequence]:
        """Where tokens join the token sequence (see :data:`Where`), or None: the model has none."""
        return None

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens (0 without a token sequence)."""
        return 0

    def add_prefix_tokens(self, n: int) -> None:
        """Count ``n`` more (negative: fewer) tokens as prefix tokens, so pooling leaves inserted tokens out."""
        raise ConfigError(f"{self.name} has no token sequence: {self.reason('token_sequence')}")

    @property
    def has_class_token(self) -> bool:
        return False

    def embedding(self) -> Optional[Embedding]:
        """The patch embedding, or None."""
        return None

    def patch_grid(self) -> Optional[tuple[int, int]]:
        """Rows and columns of the patch grid, or None."""
        return None

    @property
    def input_spec(self) -> InputSpec:
        raise NotImplementedError

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The first block's input: images through the embedding (and position embedding, prefix tokens)."""
        raise ConfigError(f"{self.name} cannot run its embedding alone: {self.reason('token_sequence')}")

    # ---- head --------------------------------------------------------------------------------------------------------
    @property
    def head(self) -> nn.Module:
        """The classifier layer (what a method makes trainable as the head)."""
        raise NotImplementedError

    def final_norms(self) -> dict[str, nn.Module]:
        """Norms after the last block and before the head, by qualified name."""
        return {}

    def pooled_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """The head's input from a token pooled out of the model's features (``forward_features`` output)."""
        raise ConfigError(f"{self.name} has no pooled-token path to its head: {self.reason('token_sequence')}")

    def head_input(self, last: torch.Tensor) -> torch.Tensor:
        """The head's input from the last block's output (final norm, pooling)."""
        raise ConfigError(f"{self.name}: computing the head input from block outputs is not supported")

    # ---- messages ----------------------------------------------------------------------------------------------------
    def reason(self, site: str, block: Optional[nn.Module] = None) -> str:
        """Why the model lacks ``site`` (``attention``, ``mlp``, ``branch:<name>``, ``token_sequence``,
        ``tokens_last``), as a clause for a message."""
        owner = type(block).__name__ if block is not None else self.name
        return f"its {owner} has no {site.replace('branch:', '')} site that vpeft knows how to find"

    def refuse(self, user: str, site: str, block: Optional[nn.Module] = None, why: str = "") -> ConfigError:
        """The error for ``user`` (``method 'lora'``) needing a ``site`` the model lacks; ``why`` is appended."""
        return ConfigError(f"{user} does not apply to {self.name}: {self.reason(site, block)}{why}")

    # ---- inventory ---------------------------------------------------------------------------------------------------
    def module_names(self) -> dict[int, str]:
        """Qualified names of the model's modules by ``id``."""
        return {id(m): n for n, m in self.model.named_modules()}

    def describe(self) -> list[SiteRow]:
        """Every site the protocol offers, with its owner and module (validate what a method will touch first)."""
        names = self.module_names()
        rows: list[SiteRow] = []

        def add(owner: str, site: str, module: nn.Module, detail: str = "") -> None:
            rows.append(SiteRow(owner, site, names.get(id(module), "?"), type(module).__name__, detail))

        emb = self.embedding()
        if emb is not None:
            add("model", "embedding", emb.module, f"width {emb.width}")
        for where in ("pre_norm_pre", "post_norm_pre"):
            seq = self.token_sequence(where)
            if seq is not None:
                add(
                    "model",
                    f"token_sequence.{where}",
                    seq.module,
                    f"{seq.hook}, prefix {seq.prefix}, width {seq.width}",
                )
        for blocks in self.stacks().values():
            for block in blocks:
                owner = names.get(id(block), "?")
                for kind, site in (self.attention(block) or {}).items():
                    add(owner, f"attention.{kind}", site.layer, f"out[{site.out.start}:{site.out.stop}]")
                mlp = self.mlp(block)
                if mlp is not None:
                    add(owner, "mlp.fc1", mlp.fc1, "channels first" if mlp.channels_first else "")
                    add(owner, "mlp.fc2", mlp.fc2, "channels first" if mlp.channels_first else "")
                for kind, norm in self.norms(block).items():
                    add(owner, f"norm.{kind}", norm)
                for kind, br in self.residual_branches(block).items():
                    add(owner, f"branch.{kind}.input", br.input)
                    add(owner, f"branch.{kind}.output", br.output, "windowed" if br.to_output is not None else "")
        for norm in self.final_norms().values():
            add("model", "final_norm", norm)
        add("model", "head", self.head)
        return rows


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    from timm.models.vision_transformer_sam import window_partition

    return window_partition(x, size)[0]


def _present(module: Optional[nn.Module]) -> bool:
    return module is not None and not isinstance(module, nn.Identity)


class TimmAnatomy(Anatomy):
    """The anatomy of timm's ViT (and CLIP image tower), Swin, ConvNeXt and SAM image encoder (``samvit_*``).

    Sites, by kind of model:

    * ViT / CLIP: ``blocks[i]``; q, k, v as slices of ``attn.qkv``, o ``attn.proj``; ``mlp.fc1/fc2``;
      branches end at ``drop_path1/2``; tokens join at ``norm_pre``; head ``head`` after ``fc_norm``.
    * Swin: ``layers[s].blocks[i]``, sites as ViT; its tokens are a windowed ``[B,H,W,C]`` grid.
    * ConvNeXt: ``stages[s].blocks[i]``, no attention, one residual branch ending at ``drop_path``; NCHW maps.
    * SAM encoder: ``blocks[i]`` as ViT on a ``[B,H,W,C]`` grid; windowed blocks return their attention branch as
      windows (``to_output`` partitions); the head reads the neck's maps.
    """

    def __init__(self, model: nn.Module):
        super().__init__(model)
        m = model
        if hasattr(m, "blocks"):
            if hasattr(m, "num_prefix_tokens") and hasattr(m, "norm_pre"):
                self.kind = "vit"
            else:
                self.kind = "sam" if hasattr(m, "neck") else "blocks"
        elif hasattr(m, "layers"):
            self.kind = "swin"
        elif hasattr(m, "stages"):
            self.kind = "convnext"
        else:
            self.kind = "unknown"

    def stacks(self) -> dict[str, list[nn.Module]]:
        m = self.model
        if hasattr(m, "blocks"):
            return {"blocks": list(m.blocks)}
        name = self._stage_attr()  # Swin's layers, ConvNeXt's stages: one stream of blocks, in stages
        return {name: self.blocks} if name is not None else {}

    def _stage_attr(self) -> Optional[str]:
        return next((n for n in ("layers", "stages") if hasattr(self.model, n)), None)

    def stages(self) -> list[tuple[Optional[nn.Module], list[nn.Module]]]:
        m = self.model
        if hasattr(m, "blocks"):
            return [(None, list(m.blocks))]
        name = self._stage_attr()
        if name is None:
            raise ConfigError(f"{self.name} has no blocks that vpeft knows how to find")
        return [(s, list(s.blocks)) for s in getattr(m, name)]

    def attention(self, block: nn.Module) -> Optional[dict[str, Site]]:
        attn = getattr(block, "attn", None)
        qkv, proj = getattr(attn, "qkv", None), getattr(attn, "proj", None)
        if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
            return None
        d = qkv.out_features // 3
        sites = {t: Site(qkv, slice(i * d, (i + 1) * d)) for i, t in enumerate("qkv")}
        sites["o"] = Site(proj, slice(0, proj.out_features))
        return sites

    def mlp(self, block: nn.Module) -> Optional[MLP]:
        mlp = getattr(block, "mlp", None)
        fc1, fc2 = getattr(mlp, "fc1", None), getattr(mlp, "fc2", None)
        layer = (nn.Linear, nn.Conv2d)
        if not (isinstance(fc1, layer) and isinstance(fc2, layer)):
            return None
        return MLP(mlp, fc1, fc2, channels_first=isinstance(fc2, nn.Conv2d))

    def norms(self, block: nn.Module) -> dict[str, nn.Module]:
        return {n: getattr(block, n) for n in ("norm1", "norm2", "norm") if _present(getattr(block, n, None))}

    def residual_branches(self, block: nn.Module) -> dict[str, Branch]:
        if self.kind == "convnext":
            dp = getattr(block, "drop_path", None)
            return {"block": Branch(block, dp, channels_first=True)} if dp is not None else {}
        dp1, dp2, norm2 = (getattr(block, n, None) for n in ("drop_path1", "drop_path2", "norm2"))
        out = {}
        if dp1 is not None:
            window = getattr(block, "window_size", 0) if self.kind == "sam" else 0
            out["attn"] = Branch(block, dp1, partial(_windows, size=window) if window > 0 else None)
        if dp2 is not None and norm2 is not None:
            out["mlp"] = Branch(norm2, dp2)
        return out

    def width(self, block: nn.Module) -> int:
        for m in block.modules():
            if isinstance(m, nn.LayerNorm):
                return m.normalized_shape[-1]
        raise ConfigError(f"cannot tell the width of {type(block).__name__}: it has no LayerNorm")

    def channels_first(self, module: nn.Module) -> bool:
        """Convolutions, timm's ``LayerNorm2d`` and ConvNeXt's blocks work on NCHW maps."""
        if isinstance(module, nn.Conv2d):
            return True
        if isinstance(module, nn.LayerNorm):
            return type(module).__name__.endswith("2d")
        return self.kind == "convnext" and any(module is b for b in self.blocks)

    def token_sequence(self, where: Where = "post_norm_pre") -> Optional[TokenSequence]:
        if where not in ("post_norm_pre", "pre_norm_pre", "embeddings"):
            raise ConfigError(f"unknown token insertion point {where!r} (valid: post_norm_pre, pre_norm_pre)")
        if self.kind != "vit" or where == "embeddings":  # a text model's point: timm's image models have none
            return None
        m = self.model
        hook = "output" if where == "post_norm_pre" else "input"
        return TokenSequence(m.norm_pre, hook, m.num_prefix_tokens, m.embed_dim)

    @property
    def num_prefix_tokens(self) -> int:
        return getattr(self.model, "num_prefix_tokens", 0)

    def add_prefix_tokens(self, n: int) -> None:
        if self.kind != "vit":
            return super().add_prefix_tokens(n)
        self.model.num_prefix_tokens += n

    @property
    def has_class_token(self) -> bool:
        return getattr(self.model, "cls_token", None) is not None

    def embedding(self) -> Optional[Embedding]:
        pe = getattr(self.model, "patch_embed", None)
        proj = getattr(pe, "proj", None)
        if proj is None:
            return None
        norm = getattr(pe, "norm", None)
        return Embedding(pe, norm if _present(norm) else proj, proj.out_channels)

    def patch_grid(self) -> Optional[tuple[int, int]]:
        grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)
        return tuple(grid) if grid is not None else None

    @property
    def input_spec(self) -> InputSpec:
        m = self.model
        cfg = getattr(m, "pretrained_cfg", None) or {}
        pe = getattr(m, "patch_embed", None)
        size = getattr(pe, "img_size", None)
        if size is None:
            size = tuple(cfg.get("input_size", (3, 224, 224))[1:])
        elif isinstance(size, int):
            size = (size, size)
        proj = getattr(pe, "proj", None)
        patch = tuple(proj.kernel_size) if isinstance(proj, nn.Conv2d) else None
        channels = proj.in_channels if isinstance(proj, nn.Conv2d) else 3
        return InputSpec(
            tuple(size), tuple(cfg.get("mean", _IMAGENET_MEAN)), tuple(cfg.get("std", _IMAGENET_STD)), patch, channels
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind != "vit":
            return super().embed(images)
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(images))))

    @property
    def head(self) -> nn.Module:
        head = self.model.get_classifier()
        fc = getattr(head, "fc", None)  # SAM: a pooling ClassifierHead around its Linear
        return fc if not isinstance(head, nn.Linear) and isinstance(fc, nn.Linear) else head

    def final_norms(self) -> dict[str, nn.Module]:
        return {n: getattr(self.model, n) for n in ("norm", "fc_norm") if _present(getattr(self.model, n, None))}

    def pooled_features(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.kind != "vit":
            return super().pooled_features(pooled)
        return self.model.head_drop(self.model.fc_norm(pooled))

    def head_input(self, last: torch.Tensor) -> torch.Tensor:
        if self.kind != "vit":
            return super().head_input(last)
        return self.model.forward_head(self.model.norm(last), pre_logits=True)

    def reason(self, site: str, block: Optional[nn.Module] = None) -> str:
        blk = type(block).__name__ if block is not None else "block"
        grid = "its tokens are a windowed [B,H,W,C] grid"
        if site == "token_sequence":
            if self.kind in ("swin", "sam"):
                return f"{grid}, there is no token sequence to insert into"
            if self.kind == "convnext":
                return "it works on convolutional feature maps, there is no token sequence to insert into"
        if site == "tokens_last" and self.kind == "convnext":
            return f"its {blk} blocks read and write channels-first maps, not token-last features"
        if site == "attention":
            if self.kind == "convnext":
                return f"its {blk} has no attention (a depthwise convolution mixes its tokens)"
            return f"its {blk} has no attention with a fused qkv Linear and a proj Linear"
        if site == "mlp":
            return f"its {blk} has no MLP with fc1 and fc2 layers"
        if site.startswith("branch:"):
            name = site.removeprefix("branch:")
            end = {"attn": " ending in drop_path1", "mlp": " ending in drop_path2"}.get(name, "")
            found = ", ".join(f"{k}, ending in {n}" for k, n in self._branch_names(block).items()) or "none"
            return f"its {blk} has no separate {name} residual branch{end} (it has: {found})"
        return super().reason(site, block)

    def _branch_names(self, block: Optional[nn.Module]) -> dict[str, str]:
        if block is None:
            return {}
        names = {id(m): n for n, m in block.named_modules()}
        return {k: names.get(id(b.output), "?") for k, b in self.residual_branches(block).items()}
