"""Bottleneck adapters: sequential (Houlsby et al., arXiv:1902.00751; GIST/iDAT "seq"), AdaptFormer (Chen et al.,
arXiv:2205.13535) and the parallel-shared adapter of GIST (arXiv:2312.07255) and iDAT (arXiv:2403.15750).

All three hook the sites the backbone's anatomy names, without copying a block's forward: the sequential adapter
rewrites a block's (or its MLP's, before or after its drop-path) output; the parallel ones add their output to a
residual branch's output right after its drop-path, so stochastic depth drops the frozen branch but never the adapter,
as in the authors' code ``x = x + DP(mlp(LN2 x)) + s * A(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ..registry import METHODS
from ._common import Bottleneck
from .base import MethodConfig

Init = Literal["trunc_normal", "zero_up", "xavier", "default"]
Act = Literal["gelu", "relu", "quick_gelu", "silu", "gelu_new"]


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

    def _make(self, width: int, channels_first: bool = False) -> Bottleneck:
        return Bottleneck(
            width, self.dim, self.act, self.bias, self.init, self.scale, self.dropout, channels_first=channels_first
        )

    def extra_trainable_count(self, backbone) -> int:
        anatomy = backbone.anatomy
        return sum(_bottleneck_count(anatomy.width(b), self.dim, self.bias) for b in anatomy.blocks)


@METHODS.register("adapter")
@dataclass(kw_only=True)
class AdapterConfig(_AdapterBase):
    """Sequential bottleneck adapter ``x + scale * up(act(down(x)))``, one per block.

    On ViT-B/16 with ``dim=4`` and biases: 12 x (768*4 + 4 + 4*768 + 768) = 82,992 parameters (``dim=8``: 156,768).
    NOAH's Adapter baseline as its code runs:
    ``adapter:dim=8,position=mlp_drop_path,act=quick_gelu,init=trunc_normal,dropout=0.1``. ATTEMPT's adapters on
    T5-base (GIST's Table 3): ``adapter:position=sublayers,dim=24,act=gelu_new,init=default,train_norms=true``,
    1,855,104 parameters (48 adapters of 37,656 and the 62 RMS norms' 47,616).

    Args:
        dim: Hidden (bottleneck) size.
        position: ``block``: after the whole block (GIST/iDAT ``gist_seq_adapter``, the default); ``mlp``: on the
            MLP output h before drop-path and the residual add, ``x + DP(h + A(h))`` (Houlsby);
            ``mlp_drop_path``: on the MLP output after its drop-path, ``x + DP(h) + A(DP(h))`` (NOAH's code);
            ``sublayers``: two per block, on the output of each residual branch (attention and MLP) before its
            residual add, ``h + A(h)`` (Houlsby; ATTEMPT's placement): on a post-norm BERT layer after each
            sub-layer's ``dense``, ``LN(x + drop(h + A(h)))``; on timm blocks after each drop-path. Twice the
            parameters of one per block.
        act: Activation between the projections: ``gelu``, ``relu``, ``quick_gelu``, ``silu`` or ``gelu_new``
            (GELU's tanh approximation, Hugging Face's ``gelu_new``: ATTEMPT's).
        init: ``trunc_normal`` (std 0.02, zero biases: timm's init, as GIST/iDAT, and what NOAH's code runs, its
            ``init_weights`` re-initialising every Linear), ``zero_up`` (up-projection zero, so the model starts as
            the backbone), ``xavier`` (xavier-uniform weights, N(0, 1e-6) biases: NOAH's adapter module code,
            overwritten in NOAH's runs) or ``default`` (nn.Linear's own: ATTEMPT's).
        bias: Biases in both projections.
        scale: Multiplier of the adapter output (1 for the sequential adapter).
        dropout: Dropout between the activation and the up-projection (NOAH's ``drop_rate_adapter``: 0.1).
        train_norms: Also train every norm the backbone's anatomy lists (each block's norms and the final norms),
            as ATTEMPT's ``unfreeze_layer_norms``: on T5 the 62 RMS norms of encoder and decoder (47,616 on T5-base).
    """

    position: Literal["block", "mlp", "mlp_drop_path", "sublayers"] = "block"
    train_norms: bool = False

    def inject(self, backbone) -> None:
        anatomy = backbone.anatomy
        user = f"method {self.name!r}"
        adapters = nn.ModuleList()
        for block in anatomy.blocks:
            if self.position == "sublayers":  # Houlsby / ATTEMPT: after attention and after the MLP, before each add
                branches = anatomy.residual_branches(block)
                for name in ("attn", "mlp"):
                    if name not in branches:
                        raise anatomy.refuse(user, f"branch:{name}", block, "; position=sublayers adapts both outputs")
                for name in ("attn", "mlp"):
                    adapter = self._make(anatomy.width(block))
                    adapters.append(adapter)
                    backbone.register_module_hook(branches[name].output, post=lambda x, y, a=adapter: y + a(y))
                continue
            channels_first = False
            if self.position == "mlp":
                mlp = anatomy.mlp(block)
                if mlp is None:
                    raise anatomy.refuse(user, "mlp", block, " (position=mlp adapts the MLP's output)")
                target, channels_first = mlp.module, mlp.channels_first  # ConvNeXt's conv-MLP returns NCHW maps
            elif self.position == "mlp_drop_path":  # NOAH: x + DP(h) + A(DP(h))
                branch = anatomy.residual_branches(block).get("mlp")
                if branch is None:
                    raise anatomy.refuse(user, "branch:mlp", block, "; position=mlp_drop_path adapts its output")
                target = branch.output
            else:  # ConvNeXt blocks return channels-first maps; their MLP works token-last
                if anatomy.channels_first(block):
                    raise anatomy.refuse(user, "tokens_last", block, "; use position=mlp")
                target = block
            adapter = self._make(anatomy.width(block), channels_first)
            adapters.append(adapter)
            backbone.register_module_hook(target, post=lambda x, y, a=adapter: y + a(y))
        backbone.extras[self.name] = adapters
        if self.train_norms:
            for p in _norm_params(anatomy):
                p.requires_grad_(True)

    def extra_trainable_count(self, backbone) -> int:
        norms = sum(p.numel() for p in _norm_params(backbone.anatomy)) if self.train_norms else 0
        return super().extra_trainable_count(backbone) * (2 if self.position == "sublayers" else 1) + norms


def _norm_params(anatomy) -> list[nn.Parameter]:
    """The parameters of every norm the anatomy lists (each block's, then the final norms), each once."""
    norms = [n for block in anatomy.blocks for n in anatomy.norms(block).values()]
    norms += list(anatomy.final_norms().values())
    seen: dict[int, nn.Parameter] = {}
    for norm in norms:
        for p in norm.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def _inject_parallel(cfg: _AdapterBase, backbone, branches: tuple[str, ...]) -> None:
    """One adapter per block, added to the output of each named residual branch (``attn``, ``mlp``) right before
    its residual add (after timm's drop-path), reading the residual stream that enters that branch."""
    anatomy = backbone.anatomy
    adapters = nn.ModuleList()
    for block in anatomy.blocks:
        found = anatomy.residual_branches(block)
        for name in branches:
            if name not in found:
                raise anatomy.refuse(
                    f"method {cfg.name!r}",
                    f"branch:{name}",
                    block,
                    f"; it adds to the {' and '.join(branches)} branches of transformer blocks",
                )
        adapter = cfg._make(anatomy.width(block))
        adapters.append(adapter)
        for name in branches:
            branch, state = found[name], {}
            backbone.register_module_hook(branch.input, pre=lambda x, s=state: s.__setitem__("x", x))
            backbone.register_module_hook(
                branch.output, post=lambda _, y, s=state, a=adapter, f=branch.to_output: y + _laid_out(a(s.pop("x")), f)
            )
    backbone.extras[cfg.name] = adapters


def _laid_out(x: torch.Tensor, to_output) -> torch.Tensor:
    """The adapter output in the branch output's layout (SAM's windowed attention: as windows)."""
    return x if to_output is None else to_output(x)


@METHODS.register("adaptformer")
@dataclass(kw_only=True)
class AdaptFormerConfig(_AdapterBase):
    """AdaptFormer: an adapter parallel to the MLP, ``x = x + DP(mlp(LN2 x)) + scale * A(x)``; A reads the residual
    stream. Defaults as GIST/iDAT's ``adaptformer`` (GELU, hidden 4, scale 0.1, trunc-normal init, biases): 82,992
    parameters on ViT-B/16. PETL-ViT's original is ``adaptformer:dim=8,act=relu,init=zero_up,bias=false,dropout=0.1``
    with its per-task ``scale``.

    Args:
        dim: Hidden (bottleneck) size.
        act: Activation: ``gelu``, ``relu``, ``quick_gelu``, ``silu`` or ``gelu_new``.
        init: ``trunc_normal`` (GIST/iDAT), ``zero_up`` (AdaptFormer's zero-initialised up-projection), ``xavier``
            or ``default`` (nn.Linear's own).
        bias: Biases in both projections.
        scale: Multiplier of the adapter output.
        dropout: Dropout between the activation and the up-projection (PETL-ViT's AdaptFormer: 0.1).
    """

    scale: float = 0.1

    def inject(self, backbone) -> None:
        _inject_parallel(self, backbone, ("mlp",))


@METHODS.register("adapter_ps")
@dataclass(kw_only=True)
class AdapterPSConfig(_AdapterBase):
    """Parallel-shared adapter (GIST's PEFT module, iDAT-PS): one adapter per block, used in parallel to both
    sub-layers on the un-normalised residual stream, ``x = x + DP(attn(LN1 x)) + s A(x)``, then
    ``x = x + DP(mlp(LN2 x)) + s A(x)``. 12 x 6,916 = 82,992 parameters on ViT-B/16 with the defaults.

    Args:
        dim: Hidden (bottleneck) size.
        act: Activation: ``gelu``, ``relu``, ``quick_gelu``, ``silu`` or ``gelu_new``.
        init: ``trunc_normal`` (GIST: timm init runs on the whole model), ``zero_up``, ``xavier`` or ``default``
            (nn.Linear's own).
        bias: Biases in both projections.
        scale: Multiplier of the adapter output.
        dropout: Dropout between the activation and the up-projection.
    """

    scale: float = 0.1

    def inject(self, backbone) -> None:
        _inject_parallel(self, backbone, ("attn", "mlp"))
