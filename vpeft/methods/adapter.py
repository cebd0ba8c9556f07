"""Bottleneck adapters: sequential (Houlsby et al., arXiv:1902.00751; GIST/iDAT "seq"), AdaptFormer (Chen et al.,
arXiv:2205.13535) and the parallel-shared adapter of GIST (arXiv:2312.07255) and iDAT (arXiv:2403.15750).

All three hook timm's blocks without copying their forward: the sequential adapter rewrites a block's (or its MLP's,
before or after its drop-path) output; the parallel ones add their output to the residual branch right after timm's
drop-path, so stochastic depth drops the frozen branch but never the adapter, as in the authors' code
``x = x + DP(mlp(LN2 x)) + s * A(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import nn

from ..registry import METHODS
from ._common import Bottleneck, block_dim, require
from .base import MethodConfig

Init = Literal["trunc_normal", "zero_up", "xavier"]
Act = Literal["gelu", "relu", "quick_gelu", "silu"]


def _bottleneck_count(dim: int, hidden: int, bias: bool) -> int:
    return 2 * dim * hidden + ((hidden + dim) if bias else 0)


@dataclass(kw_only=True)
class _AdapterBase(MethodConfig):
    dim: int = 4
    act: Act = "gelu"
    init: Init = "trunc_normal"
    bias: bool = True
    scale: float = 1.0
    dropout: float = 0.0

    test_overrides: ClassVar[dict] = {"dim": 4}
    identity_overrides: ClassVar[dict] = {"init": "zero_up"}

    def __post_init__(self):
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def _make(self, block, channels_first: bool = False) -> Bottleneck:
        return Bottleneck(block_dim(block), self.dim, self.act, self.bias, self.init, self.scale, self.dropout,
                          channels_first=channels_first)

    def extra_trainable_count(self, backbone) -> int:
        return sum(_bottleneck_count(block_dim(b), self.dim, self.bias) for b in backbone.blocks)


@METHODS.register("adapter")
@dataclass(kw_only=True)
class AdapterConfig(_AdapterBase):
    """Sequential bottleneck adapter ``x + scale * up(act(down(x)))``, one per block.

    On ViT-B/16 with ``dim=4`` and biases: 12 x (768*4 + 4 + 4*768 + 768) = 82,992 parameters (``dim=8``: 156,768).
    NOAH's Adapter baseline as its code runs:
    ``adapter:dim=8,position=mlp_drop_path,act=quick_gelu,init=trunc_normal,dropout=0.1``.

    Args:
        dim: Hidden (bottleneck) size.
        position: ``block``: after the whole block (GIST/iDAT ``gist_seq_adapter``, the default); ``mlp``: on the
            MLP output h before drop-path and the residual add, ``x + DP(h + A(h))`` (Houlsby);
            ``mlp_drop_path``: on the MLP output after its drop-path, ``x + DP(h) + A(DP(h))`` (NOAH's code).
        act: Activation between the projections: ``gelu``, ``relu``, ``quick_gelu`` or ``silu``.
        init: ``trunc_normal`` (std 0.02, zero biases: timm's init, as GIST/iDAT, and what NOAH's code runs, its
            ``init_weights`` re-initialising every Linear), ``zero_up`` (up-projection zero, so the model starts as
            the backbone) or ``xavier`` (xavier-uniform weights, N(0, 1e-6) biases: NOAH's adapter module code,
            overwritten in NOAH's runs).
        bias: Biases in both projections.
        scale: Multiplier of the adapter output (1 for the sequential adapter).
        dropout: Dropout between the activation and the up-projection (NOAH's ``drop_rate_adapter``: 0.1).
    """

    position: Literal["block", "mlp", "mlp_drop_path"] = "block"

    def inject(self, backbone) -> None:
        adapters = nn.ModuleList()
        for block in backbone.blocks:
            if self.position == "mlp":
                require(backbone, block, ("mlp",), self.name, "position=mlp needs an MLP sub-module")
                target = block.mlp
            elif self.position == "mlp_drop_path":  # NOAH: x + DP(h) + A(DP(h))
                require(backbone, block, ("mlp", "drop_path2"), self.name, "position=mlp_drop_path hooks drop_path2")
                target = block.drop_path2
            else:  # ConvNeXt blocks (no norm1) return channels-first maps; their MLP works token-last
                require(backbone, block, ("norm1",), self.name, "its blocks output channels-first maps; use position=mlp")
                target = block
            # ConvNeXt's conv-MLP returns NCHW maps
            adapter = self._make(block, self.position == "mlp" and isinstance(getattr(block.mlp, "fc2", None), nn.Conv2d))
            adapters.append(adapter)
            backbone.register_module_hook(target, post=lambda x, y, a=adapter: y + a(y))
        backbone.extras[self.name] = adapters


def _inject_parallel(cfg: _AdapterBase, backbone, attn: bool) -> None:
    """One adapter per block whose output is added right after timm's drop_path2 (MLP) and, with ``attn``, also
    after drop_path1 (attention), reading the input of that sub-layer's residual branch."""
    needed = ("norm2", "drop_path1", "drop_path2") if attn else ("norm2", "drop_path2")
    adapters = nn.ModuleList()
    for block in backbone.blocks:
        require(backbone, block, needed, cfg.name, "it needs attention + MLP blocks")
        adapter = cfg._make(block)
        adapters.append(adapter)
        state: dict = {}
        if attn:
            backbone.register_module_hook(block, pre=lambda x, s=state: s.__setitem__("x", x))
            backbone.register_module_hook(block.drop_path1, post=lambda _, y, s=state, a=adapter: y + a(s.pop("x")))
        backbone.register_module_hook(block.norm2, pre=lambda x, s=state: s.__setitem__("mid", x))
        backbone.register_module_hook(block.drop_path2, post=lambda _, y, s=state, a=adapter: y + a(s.pop("mid")))
    backbone.extras[cfg.name] = adapters


@METHODS.register("adaptformer")
@dataclass(kw_only=True)
class AdaptFormerConfig(_AdapterBase):
    """AdaptFormer: an adapter parallel to the MLP, ``x = x + DP(mlp(LN2 x)) + scale * A(x)``; A reads the residual
    stream. Defaults as GIST/iDAT's ``adaptformer`` (GELU, hidden 4, scale 0.1, trunc-normal init, biases): 82,992
    parameters on ViT-B/16. PETL-ViT's original is ``adaptformer:dim=8,act=relu,init=zero_up,bias=false,dropout=0.1``
    with its per-task ``scale``.

    Args:
        dim: Hidden (bottleneck) size.
        act: Activation: ``gelu``, ``relu``, ``quick_gelu`` or ``silu``.
        init: ``trunc_normal`` (GIST/iDAT), ``zero_up`` (AdaptFormer's zero-initialised up-projection) or ``xavier``.
        bias: Biases in both projections.
        scale: Multiplier of the adapter output.
        dropout: Dropout between the activation and the up-projection (PETL-ViT's AdaptFormer: 0.1).
    """

    scale: float = 0.1

    def inject(self, backbone) -> None:
        _inject_parallel(self, backbone, attn=False)


@METHODS.register("adapter_ps")
@dataclass(kw_only=True)
class AdapterPSConfig(_AdapterBase):
    """Parallel-shared adapter (GIST's PEFT module, iDAT-PS): one adapter per block, used in parallel to both
    sub-layers on the un-normalised residual stream, ``x = x + DP(attn(LN1 x)) + s A(x)``, then
    ``x = x + DP(mlp(LN2 x)) + s A(x)``. 12 x 6,916 = 82,992 parameters on ViT-B/16 with the defaults.

    Args:
        dim: Hidden (bottleneck) size.
        act: Activation: ``gelu``, ``relu``, ``quick_gelu`` or ``silu``.
        init: ``trunc_normal`` (GIST: timm init runs on the whole model), ``zero_up`` or ``xavier``.
        bias: Biases in both projections.
        scale: Multiplier of the adapter output.
        dropout: Dropout between the activation and the up-projection.
    """

    scale: float = 0.1

    def inject(self, backbone) -> None:
        _inject_parallel(self, backbone, attn=True)
