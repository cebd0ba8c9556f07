"""DTL / DTL+: disentangled transfer learning (Fu, Zhu, Wu, AAAI 2024, arXiv:2312.07856), as heekhero/DTL does it.

A compact side network (CSN) of low-rank maps ``B_i A_i`` (A kaiming-uniform, B zero, no bias) reads the input of
every block (on Swin, of every block in the stages that reach an injection, since ``h`` restarts per stage); its
cumulative sum ``h`` (all tokens) is added back, through ``swish(h) = h * sigmoid(beta * h)``, to the output of every
block from block M on (1-indexed). DTL+ passes the patch tokens of ``swish(h)`` through one depthwise
convolution shared by all injection points. The classifier reads the mean of the patch tokens after the frozen final
norm.

Memory comes from autograd alone: the backbone is frozen and the input needs no gradient, so the blocks before M keep
nothing for backward; only the maps' inputs and rank-r intermediates are kept there. A larger M saves more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..registry import METHODS
from .base import MethodConfig


class _Swish(torch.autograd.Function):
    """``h * sigmoid(beta h)`` keeping only ``h`` for backward (autograd's version keeps h and the sigmoid).

    Computed in (at least) fp32 whatever h's dtype: in fp16, ``beta * h`` overflows once ``|h| > 65504 / beta`` (655
    for beta = 100), and the derivative's ``beta h s (1 - s)`` would then be ``inf * 0 = NaN``.
    """

    @staticmethod
    def forward(ctx, h, beta):
        ctx.save_for_backward(h)
        ctx.beta = beta
        hf = h.to(torch.promote_types(h.dtype, torch.float32))
        return (hf * torch.sigmoid(beta * hf)).to(h.dtype)

    @staticmethod
    def backward(ctx, g):
        (h,) = ctx.saved_tensors
        hf = h.to(torch.promote_types(h.dtype, torch.float32))
        s = torch.sigmoid(ctx.beta * hf)
        return (g.to(hf.dtype) * (s + ctx.beta * hf * s * (1 - s))).to(g.dtype), None


def swish(h: torch.Tensor, beta: float) -> torch.Tensor:
    """``h * sigmoid(beta * h)``, the activation of DTL's side output (beta = 100 in the paper)."""
    return _Swish.apply(h, beta)


class SideNetwork(nn.Module):
    """The CSN: per-block maps, the activation and (DTL+) the shared depthwise convolution.

    Args:
        dims: Width of each block's input.
        rank: Inner rank r of every map.
        first: 0-indexed first block whose output receives ``swish(h)``.
        beta: Swish's beta.
        kernel: Depthwise kernel size for DTL+ (0: plain DTL).
        stage_starts: 0-indexed blocks where ``h`` restarts (Swin stages); ``[0]`` for a ViT.
        grid: Patch grid (rows, columns) of a ViT, for DTL+.
    """

    def __init__(self, dims, rank, first, beta, kernel, stage_starts, grid=None):
        super().__init__()
        self.blocks = mapped_blocks(len(dims), first, stage_starts)
        self.dtl_down = nn.ModuleDict({str(i): nn.Linear(dims[i], rank, bias=False) for i in self.blocks})
        self.dtl_up = nn.ModuleDict({str(i): nn.Linear(rank, dims[i], bias=False) for i in self.blocks})
        for a, b in zip(self.dtl_down.values(), self.dtl_up.values()):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)
        self.first, self.beta, self.stage_starts = first, beta, set(stage_starts)
        self.grid = grid
        self.dtl_conv = None
        if kernel:
            widths = {dims[i] for i in range(first, len(dims))}
            if len(widths) != 1:
                raise ConfigError("dtl_plus shares one convolution, so the injected blocks must have one width")
            d = widths.pop()
            self.dtl_conv = nn.Conv2d(d, d, kernel, padding="same", groups=d, bias=False)

    def map(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.dtl_up[str(i)](self.dtl_down[str(i)](x))

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        g = swish(h, self.beta)
        if self.dtl_conv is None:
            return g
        if g.dim() == 4:  # Swin, SAM: B H W C
            return self.dtl_conv(g.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        gh, gw = self.grid
        p = g.shape[1] - gh * gw  # the patch grid is always the last gh * gw tokens (class, gist, prompts first)
        patches = g[:, p:].transpose(1, 2).reshape(g.shape[0], -1, gh, gw)
        patches = self.dtl_conv(patches).flatten(2).transpose(1, 2)
        return torch.cat([g[:, :p], patches], dim=1)


def _stage_starts(backbone) -> list[int]:
    starts, k = [], 0
    for _, blks in backbone.anatomy.stages():
        starts.append(k)
        k += len(blks)
    return starts


def mapped_blocks(n: int, first: int, stage_starts) -> list[int]:
    """Blocks with a map: every block of a stage where ``h`` reaches an injection (all blocks of a ViT)."""
    bounds = sorted(stage_starts) + [n]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi - 1 >= first:
            out.extend(range(lo, hi))
    return out


@dataclass(kw_only=True)
class _DTLBase(MethodConfig):
    rank: Optional[int] = None
    first_block: Optional[int] = None
    beta: float = 100.0
    pool: Literal["avg", "token"] = "avg"
    checkpoint: bool = False

    kernel_default: ClassVar[int] = 0
    # B = 0 gives h = 0 and swish(0) = 0; with the default avg pool the head reads other features than a plain
    # class-token backbone, so identity is checked with pool=token.
    identity_overrides: ClassVar[dict] = {"pool": "token"}
    test_overrides: ClassVar[dict] = {"first_block": 2}

    def __post_init__(self):
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.first_block is not None and self.first_block < 1:
            raise ValueError(f"first_block is 1-indexed and must be >= 1, got {self.first_block}")

    def _kernel(self) -> int:
        return 0

    def resolve(self, backbone) -> tuple[int, int]:
        """``(rank, first)``: rank 2 for a ViT and 4 for staged backbones; first (0-indexed) defaults to half-way."""
        n = len(backbone.anatomy.blocks)
        staged = len(backbone.anatomy.stages()) > 1
        rank = self.rank or (4 if staged else 2)
        first = (self.first_block or n // 2 + 1) - 1
        if first >= n:
            raise ConfigError(f"first_block={first + 1} but the backbone has only {n} blocks")
        return rank, first

    def build_side(self, backbone) -> SideNetwork:
        """Check the backbone, set its pool, and make the side network (shared by :class:`vpeft.MultiTask`)."""
        anatomy = backbone.anatomy
        blocks = anatomy.blocks
        for b in blocks:
            if anatomy.channels_first(b):
                raise anatomy.refuse(
                    f"method {self.name!r}",
                    "tokens_last",
                    b,
                    "; its side network adds token-last features to transformer blocks",
                )
        if self._kernel() and anatomy.patch_grid() is None and anatomy.token_sequence() is not None:
            raise anatomy.refuse(
                f"method {self.name!r}", "patch_grid", None, "; its depthwise convolution runs on the patch grid"
            )
        backbone.set_pool(self.pool)
        rank, first = self.resolve(backbone)
        return SideNetwork(
            [anatomy.width(b) for b in blocks],
            rank,
            first,
            self.beta,
            self._kernel(),
            _stage_starts(backbone),
            grid=anatomy.patch_grid(),
        )

    def inject(self, backbone) -> None:
        blocks = backbone.anatomy.blocks
        side = self.build_side(backbone)
        first = side.first
        backbone.extras["dtl"] = side
        state: dict = {}

        def read(i, x):
            h = side.map(i, x)
            state["h"] = h if i in side.stage_starts else state["h"] + h

        for i, blk in enumerate(blocks):
            if i in side.blocks:
                backbone.register_module_hook(blk, pre=lambda x, i=i: read(i, x))
            if i >= first:
                backbone.register_module_hook(blk, post=lambda x, y: y + side.activation(state["h"]))
                if self.checkpoint:
                    forward = type(blk).forward.__get__(blk)
                    backbone.override_forward(
                        blk, lambda *a, f=forward, **kw: checkpoint(f, *a, use_reentrant=False, **kw)
                    )

    def extra_trainable_count(self, backbone) -> int:
        rank, first = self.resolve(backbone)
        starts = _stage_starts(backbone)
        anatomy = backbone.anatomy
        blocks = anatomy.blocks
        n = sum(2 * rank * anatomy.width(blocks[i]) for i in mapped_blocks(len(blocks), first, starts))
        k = self._kernel()
        return n + (anatomy.width(blocks[first]) * k * k if k else 0)


@METHODS.register("dtl")
@dataclass(kw_only=True)
class DTLConfig(_DTLBase):
    """DTL: a compact side network of low-rank maps, added back after the later blocks. 36,864 parameters on
    ViT-B/16 (12 x 2 x 768 x 2). Not mergeable (the side path reads every block's input).

    Args:
        rank: Rank r of each map; null: 2 for a ViT, 4 for Swin (the paper's).
        first_block: M, the first block (1-indexed) whose output receives the side output; null: half-way
            (7 for ViT-B, as the paper). DTL+* is ``dtl_plus:first_block=1``.
        beta: Beta of the swish activation.
        pool: Classifier input: ``avg`` (mean of the patch tokens, then the frozen final norm: the authors') or
            ``token``.
        checkpoint: Recompute the blocks from M on in backward (activation checkpointing) to save more memory.
    """


@METHODS.register("dtl_plus")
@dataclass(kw_only=True)
class DTLPlusConfig(_DTLBase):
    """DTL+: DTL plus one depthwise convolution (k x k, ``same`` padding, no bias) shared by all injection points,
    applied to the patch tokens of swish(h) on the token grid (the class token skips it). 36,864 + 768 k^2 on
    ViT-B/16: 43,776 (k = 3), 49,152 (k = 4), 56,064 (k = 5).

    Args:
        rank: Rank r of each map; null: 2 for a ViT, 4 for Swin.
        first_block: M (1-indexed); null: half-way. ``first_block=1`` is DTL+*.
        beta: Beta of the swish activation.
        kernel: Depthwise kernel size (3, 4 or 5 in the authors' per-task settings).
        pool: Classifier input: ``avg`` (the authors') or ``token``.
        checkpoint: Recompute the blocks from M on in backward to save more memory.
    """

    kernel: int = 3

    def __post_init__(self):
        super().__post_init__()
        if self.kernel < 1:
            raise ValueError(f"kernel must be >= 1, got {self.kernel}")

    def _kernel(self) -> int:
        return self.kernel
