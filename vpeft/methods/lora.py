"""LoRA (Hu et al., arXiv:2106.09685) on the attention projections of timm's fused ``qkv`` layer.

``targets=[q,v]`` (default, as most vision papers and PETL-ViT's Bi-LoRA) adds a separate low-rank update to the query
and value slices of the fused weight; ``targets=[qkv]`` (NOAH) one update to the whole fused weight. ``proj``,
``fc1`` and ``fc2`` may be added. By default A is kaiming-uniform and B zero, so the model starts as the backbone;
``init=trunc_normal`` is what NOAH's code runs (its ``init_weights`` re-initialises every Linear after building the
model, B included). The update is scaled by ``alpha / rank`` (``alpha`` null: no scaling, as NOAH).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import METHODS
from .base import MethodConfig

Target = Literal["q", "k", "v", "qkv", "proj", "fc1", "fc2"]


class LoRAUpdate(nn.Module):
    """``scale * B(drop_mid(A(drop(x))))``: A (rank x in) kaiming-uniform and B (out x rank) zero (``zero_up``), or
    both trunc-normal 0.02 (``trunc_normal``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        scale: float,
        dropout: float = 0.0,
        init: str = "zero_up",
        mid_dropout: float = 0.0,
    ):
        super().__init__()
        self.lora_down = nn.Linear(in_features, rank, bias=False)
        self.lora_up = nn.Linear(rank, out_features, bias=False)
        self.drop = nn.Dropout(dropout)
        self.drop_mid = nn.Dropout(mid_dropout)
        self.scale = scale
        if init == "trunc_normal":
            nn.init.trunc_normal_(self.lora_down.weight, std=0.02)
            nn.init.trunc_normal_(self.lora_up.weight, std=0.02)
        else:
            nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lora_up(self.drop_mid(self.lora_down(self.drop(x))))
        return out * self.scale if self.scale != 1 else out

    def delta_weight(self) -> torch.Tensor:
        return self.lora_up.weight @ self.lora_down.weight * self.scale


def _sites(backbone, targets) -> list[tuple[nn.Linear, str, slice]]:
    """``(linear layer, target, output slice)`` for every target in every block, from the backbone's anatomy."""
    anatomy = backbone.anatomy
    out = []
    for block in anatomy.blocks:
        attn, mlp = anatomy.attention(block), anatomy.mlp(block)
        for t in targets:
            if t in ("q", "k", "v", "qkv", "proj"):
                if attn is None:
                    raise anatomy.refuse("method 'lora'", "attention", block, f" (target {t!r})")
                if t == "qkv":
                    q, k, v = attn["q"], attn["k"], attn["v"]
                    if not (q.layer is k.layer is v.layer and q.out.stop == k.out.start and k.out.stop == v.out.start):
                        raise ConfigError(
                            f"method 'lora': target 'qkv' needs q, k and v fused in one Linear, and "
                            f"{type(block).__name__} of {anatomy.name} projects them separately; "
                            "use targets q, k, v"
                        )
                    out.append((q.layer, t, slice(q.out.start, v.out.stop)))
                else:
                    site = attn["o" if t == "proj" else t]
                    out.append((site.layer, t, site.out))
            else:
                layer = getattr(mlp, t, None)
                if mlp is None or mlp.channels_first or not isinstance(layer, nn.Linear):
                    raise anatomy.refuse("method 'lora'", "mlp", block, f" (target {t!r} needs a Linear)")
                out.append((layer, t, slice(0, layer.out_features)))
    return out


@METHODS.register("lora")
@dataclass(kw_only=True)
class LoRAConfig(MethodConfig):
    """LoRA: a trainable low-rank update ``W + (alpha / rank) * B A`` of attention (and optionally MLP) weights.

    On ViT-B/16 with ``rank=8``: ``targets=[q,v]`` 12 x 2 x (8*768 + 768*8) = 294,912 parameters;
    ``targets=[qkv]`` 12 x (8*768 + 2304*8) = 294,912 as well. Mergeable: ``vpeft.merge`` folds B A into the weights.
    NOAH's LoRA as its code runs: ``lora:targets=[qkv],init=trunc_normal,dropout=0.1``; PETL-ViT's:
    ``lora:targets=[q,v],alpha=<s * rank>,bottleneck_dropout=0.1``.

    Args:
        rank: Inner dimension r of the update.
        targets: Which projections: ``q``, ``k``, ``v`` (slices of the fused qkv), ``qkv`` (the fused weight, as
            NOAH), ``proj``, ``fc1``, ``fc2``.
        alpha: Scale numerator; the update is multiplied by ``alpha / rank``. Null: no scaling (NOAH).
        dropout: Dropout on the LoRA input (NOAH's ``drop_rate_LoRA``, 0.1 in its runs).
        init: ``zero_up`` (A kaiming-uniform, B zero: the model starts as the backbone) or ``trunc_normal`` (A and B
            trunc-normal, std 0.02: what NOAH's code runs, its ``init_weights`` re-initialising every Linear).
        bottleneck_dropout: Dropout between A and B (PETL-ViT's LoRA: 0.1).
    """

    rank: int = 8
    targets: tuple[Target, ...] = ("q", "v")
    alpha: Optional[float] = None
    dropout: float = 0.0
    init: Literal["zero_up", "trunc_normal"] = "zero_up"
    bottleneck_dropout: float = 0.0

    identity_init: ClassVar[bool] = True
    mergeable: ClassVar[bool] = True
    test_overrides: ClassVar[dict] = {"rank": 2}

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not self.targets:
            raise ValueError("targets must name at least one projection")
        if "qkv" in self.targets and set(self.targets) & {"q", "k", "v"}:
            raise ValueError("targets: 'qkv' already covers q, k and v")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets repeat a name: {list(self.targets)}")
        for key in ("dropout", "bottleneck_dropout"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def inject(self, backbone) -> None:
        updates = nn.ModuleList()
        by_layer: dict[int, list] = {}
        for layer, _target, sl in _sites(backbone, self.targets):
            upd = LoRAUpdate(
                layer.in_features,
                sl.stop - sl.start,
                self.rank,
                self.scale,
                self.dropout,
                self.init,
                self.bottleneck_dropout,
            )
            updates.append(upd)
            by_layer.setdefault(id(layer), [layer, []])[1].append((sl, upd))
        for layer, parts in by_layer.values():
            backbone.register_module_hook(layer, post=lambda x, y, parts=parts: _add_updates(x, y, parts))
        backbone.extras["lora"] = updates

    def extra_trainable_count(self, backbone) -> int:
        return sum(
            self.rank * (layer.in_features + sl.stop - sl.start) for layer, _, sl in _sites(backbone, self.targets)
        )

    def merge(self, backbone) -> None:
        updates = backbone.extras["lora"]
        with torch.no_grad():  # same order as inject
            for (layer, _, sl), upd in zip(_sites(backbone, self.targets), updates):
                layer.weight[sl] += upd.delta_weight().to(layer.weight.dtype)


def _add_updates(x: torch.Tensor, y: torch.Tensor, parts) -> torch.Tensor:
    # In place into the output slices (q and v of the fused qkv: no zero block for k, no concatenated 3d delta). A
    # Linear keeps its input, not its output, for backward; should another hook on the layer have saved this output,
    # autograd's version check fails the backward rather than letting it use the changed values.
    for sl, upd in parts:
        y[..., sl].add_(upd(x))
    return y
