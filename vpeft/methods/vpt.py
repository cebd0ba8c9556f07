"""Visual prompt tuning (Jia et al., arXiv:2203.12119): learnt prompt tokens in the token sequence.

``vpt_shallow`` inserts ``length`` prompts once, after the position embedding, right after the class token;
``vpt_deep`` also replaces them with a fresh set before every later block. The prompts carry no position embedding and
count as prefix tokens, so timm's average pooling and ``forward_intermediates`` leave them out and the class token
stays at index 0: the classifier never reads a prompt. NOAH's code appends its prompts after the patches instead;
attention does not depend on the order of the tokens, so the logits are the same up to float rounding (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ..anatomy import TokenSequence
from ..registry import METHODS
from .base import MethodConfig


class Prompts(nn.Module):
    def __init__(self, depth: int, length: int, dim: int, init: str, dropout: float, patch_dim: int):
        super().__init__()
        self.vpt_prompts = nn.Parameter(torch.empty(depth, length, dim))
        self.drop = nn.Dropout(dropout)
        if init == "xavier_uniform":  # VPT: uniform(-v, v), v = sqrt(6 / (patch_dim + dim))
            bound = math.sqrt(6.0 / float(patch_dim + dim))
            nn.init.uniform_(self.vpt_prompts, -bound, bound)
        elif init == "noah":  # torch's xavier_uniform_ on each (1, length, dim) set: v = sqrt(6 / ((length + 1) dim))
            for layer in self.vpt_prompts.data:
                nn.init.xavier_uniform_(layer.unsqueeze(0))
        else:
            nn.init.trunc_normal_(self.vpt_prompts, std=0.02)

    def get(self, layer: int, batch: int) -> torch.Tensor:
        return self.drop(self.vpt_prompts[layer]).unsqueeze(0).expand(batch, -1, -1)


@dataclass(kw_only=True)
class _VPTBase(MethodConfig):
    length: int = 10
    init: Literal["xavier_uniform", "noah", "trunc_normal"] = "xavier_uniform"
    dropout: float = 0.0

    deep: ClassVar[bool] = False
    test_overrides: ClassVar[dict] = {"length": 2}

    def __post_init__(self):
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def _sequence(self, backbone) -> TokenSequence:
        seq = backbone.anatomy.token_sequence()
        if seq is None:
            raise backbone.anatomy.refuse(f"method {self.name!r}", "token_sequence")
        return seq

    def inject(self, backbone) -> None:
        anatomy = backbone.anatomy
        seq = self._sequence(backbone)
        if self.deep and len(anatomy.stacks()) > 1:  # an encoder-decoder: the later stacks read other sequences
            raise anatomy.refuse(f"method {self.name!r}", "deep_prompts")
        depth = len(anatomy.blocks) if self.deep else 1
        spec = anatomy.input_spec
        k = spec.patch or (16, 16)
        patch_dim = spec.channels * k[0] * k[1]
        prompts = Prompts(depth, self.length, seq.width, self.init, self.dropout, patch_dim)
        backbone.extras[self.name] = prompts
        start = seq.prefix  # after the class (and register) tokens
        end = start + self.length

        def insert(x):
            return torch.cat([x[:, :start], prompts.get(0, x.shape[0]), x[:, start:]], dim=1)

        backbone.register_token_hook(insert, self.length, owner=self.name)
        if self.deep:
            for i in range(1, depth):
                backbone.register_block_hook(
                    i, pre=lambda x, i=i: torch.cat([x[:, :start], prompts.get(i, x.shape[0]), x[:, end:]], dim=1)
                )

    def extra_trainable_count(self, backbone) -> int:
        return (len(backbone.anatomy.blocks) if self.deep else 1) * self.length * self._sequence(backbone).width


@METHODS.register("vpt_shallow")
@dataclass(kw_only=True)
class VPTShallowConfig(_VPTBase):
    """VPT-shallow: ``length`` prompt tokens inserted once at the input (``length x dim`` parameters; 7,680 on
    ViT-B/16 with length 10). ViT-like backbones only.

    Args:
        length: Number of prompt tokens.
        init: ``xavier_uniform`` (VPT's code: uniform, bound sqrt(6 / (3 * patch^2 + dim))), ``noah`` (torch's
            xavier_uniform_ on a (1, length, dim) tensor, bound sqrt(6 / ((length + 1) * dim)): what NOAH's code
            runs) or ``trunc_normal`` (std 0.02: NOAH's unused supernet module, not what NOAH runs).
        dropout: Dropout on the prompts (VPT's code: 0.0; NOAH's VTAB script: 0.1).
    """


@METHODS.register("vpt_deep")
@dataclass(kw_only=True)
class VPTDeepConfig(_VPTBase):
    """VPT-deep: a fresh set of ``length`` prompts before every block (``depth x length x dim`` parameters; 92,160
    on ViT-B/16 with length 10). ViT-like backbones only. NOAH's VPT as its code runs:
    ``vpt_deep:init=noah,dropout=0.1``.

    Args:
        length: Number of prompt tokens per block.
        init: ``xavier_uniform`` (VPT's code: uniform, bound sqrt(6 / (3 * patch^2 + dim))), ``noah`` (torch's
            xavier_uniform_ on each (1, length, dim) set, bound sqrt(6 / ((length + 1) * dim)): what NOAH's code
            runs) or ``trunc_normal`` (std 0.02: NOAH's unused supernet module, not what NOAH runs).
        dropout: Dropout on the prompts (VPT's code: 0.0; NOAH's VTAB script: 0.1).
    """

    deep: ClassVar[bool] = True
