"""Prompt learning on CLIP (the ``clip`` family): CoOp (Zhou et al., arXiv:2109.01134) and MaPLe (Khattak et al.,
arXiv:2210.03117).

Both learn the context of the class prompts: the token embeddings at positions ``1..n`` of "<context> {class}." are
replaced by trained vectors before the text tower's position embedding, and the text classifier is recomputed from
them every forward (:meth:`vpeft.families.clip.ClipHead.encode_text`). The image and text towers stay frozen.

``maple`` also prompts the image tower, coupled to the text prompts as MaPLe's code (``trainers/maple.py``,
``clip/model.py`` at 69bce21a) does: the shallow visual prompts are ``proj(ctx)`` (a Linear from the text width to the
image width), joined to the token sequence before ``ln_pre``; before blocks ``1..depth-1`` of both towers the
prompt tokens are replaced, on the text side by a fresh set of ``n`` vectors per depth, on the image side by that
set through its own Linear (the ``depth - 1`` Linears start as copies of one, as ``_get_clones`` makes them). The
visual prompts sit right after the class token (counted as prefix tokens) where MaPLe appends them after the patches:
attention does not depend on the order of the tokens, so the logits are the same up to float rounding (tested).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..families.clip import ClipHead, tokenize
from ..registry import METHODS
from .base import MethodConfig


def clip_head(backbone, user: str):
    """The backbone's :class:`~vpeft.families.clip.ClipHead`, or a one-line refusal naming ``user``."""
    head = backbone.head
    if not isinstance(head, ClipHead):
        raise ConfigError(
            f"method {user!r} learns CLIP's text prompts: it needs a clip backbone (clip:vit_b16, ...), not "
            f"{backbone.spec!r}"
        )
    return head


class TextContext(nn.Module):
    """Learned context vectors for the class prompts, and the text classifier they give.

    Args:
        head: The CLIP head (its token embedding initialises the context from ``init``).
        n_ctx: Context vectors (positions ``1..n_ctx`` of each prompt).
        init: Words whose token embeddings initialise the context (their first ``n_ctx`` tokens); the prompt then
            reads "<init> {class}.". Empty: N(0, 0.02) vectors and the prompt "X X ... X {class}.".
    """

    def __init__(self, head, n_ctx: int, init: str = ""):
        super().__init__()
        width = head.text.token_embedding.weight.shape[1]
        if init:
            tokens = tokenize([init.replace("_", " ")])
            words = int(tokens[0].argmax()) - 1  # tokens between the start and end tokens
            if words < n_ctx:
                raise ConfigError(f"context init {init!r} has {words} tokens, fewer than n_ctx={n_ctx}")
            with torch.no_grad():
                ctx = head.text.token_embedding(tokens.to(head.text.token_embedding.weight.device))[0, 1 : 1 + n_ctx]
            self.prefix = init.replace("_", " ")
            self.ctx = nn.Parameter(ctx.detach().clone().float())
        else:
            self.ctx = nn.Parameter(torch.empty(n_ctx, width).normal_(std=0.02))
            self.prefix = " ".join(["X"] * n_ctx)
        self._tokens: tuple = (None, None)

    def tokens(self, head) -> torch.Tensor:
        """The class prompts' tokens, "<prefix> {class}." (cached per class names)."""
        key = (tuple(head.class_names), head.class_tokens.device)
        if self._tokens[0] != key:
            prompts = [f"{self.prefix} {name.replace('_', ' ')}." for name in head.class_names]
            self._tokens = (key, tokenize(prompts).to(head.class_tokens.device))
        return self._tokens[1]

    def deep_text(self) -> list[torch.Tensor]:
        """The text prompts of blocks ``1..`` (none for CoOp)."""
        return []

    def class_features(self, head) -> torch.Tensor:
        return head.encode_text(self.tokens(head), self.ctx, self.deep_text())


class MaPLePrompts(TextContext):
    """MaPLe's prompts: the text context, ``proj`` to the shallow visual prompts, and per deeper block a text prompt
    set (``depth - 1``) with its Linear to the visual prompts."""

    def __init__(self, head, n_ctx: int, init: str, depth: int, vision_width: int):
        super().__init__(head, n_ctx, init)
        text_width = self.ctx.shape[1]
        self.proj = nn.Linear(text_width, vision_width)
        self.deep = nn.ParameterList(
            [nn.Parameter(torch.empty(n_ctx, text_width).normal_(std=0.02)) for _ in range(depth - 1)]
        )
        one = nn.Linear(text_width, vision_width)
        self.deep_proj = nn.ModuleList([copy.deepcopy(one) for _ in range(depth - 1)])

    def deep_text(self) -> list[torch.Tensor]:
        return list(self.deep)

    def visual(self, index: int) -> torch.Tensor:
        """The visual prompts ``[n_ctx, vision_width]`` before block ``index`` (0: the shallow ones)."""
        if index == 0:
            return self.proj(self.ctx)
        return self.deep_proj[index - 1](self.deep[index - 1])


def _check_ctx(n_ctx: int) -> None:
    if n_ctx < 1:
        raise ValueError(f"n_ctx must be >= 1, got {n_ctx}")


@METHODS.register("coop")
@dataclass(kw_only=True)
class CoOpConfig(MethodConfig):
    """CoOp: ``n_ctx`` learned context vectors before each class name in the text prompts ("X X ... X {class}."),
    shared by the classes; both CLIP towers frozen (``n_ctx x text width`` parameters: 8,192 on ViT-B/16 with 16).
    clip backbones only.

    Args:
        n_ctx: Context vectors (CoOp's few-shot default: 16).
        init: Words that initialise the context (their first ``n_ctx`` token embeddings; "a photo of a" with
            n_ctx=4); empty: N(0, 0.02), CoOp's default.
    """

    n_ctx: int = 16
    init: str = ""

    families: ClassVar[tuple[str, ...]] = ("clip",)
    test_overrides: ClassVar[dict] = {"n_ctx": 2}

    def __post_init__(self):
        _check_ctx(self.n_ctx)

    def inject(self, backbone) -> None:
        head = clip_head(backbone, self.name)
        learner = TextContext(head, self.n_ctx, self.init)
        backbone.extras[self.name] = learner
        head.set_learner(learner)

    def extra_trainable_count(self, backbone) -> int:
        return self.n_ctx * clip_head(backbone, self.name).text.token_embedding.weight.shape[1]


@METHODS.register("maple")
@dataclass(kw_only=True)
class MaPLeConfig(MethodConfig):
    """MaPLe: multi-modal prompts, text context coupled to visual prompts by Linears, in the first ``depth`` blocks
    of both CLIP towers; both towers frozen. 3,555,072 parameters on ViT-B/16 (n_ctx 2, depth 9). clip backbones
    only.

    Args:
        n_ctx: Context vectors per depth (MaPLe: 2).
        init: Words that initialise the first context (their first ``n_ctx`` token embeddings; MaPLe: "a photo of
            a", so the prompts read "a photo of a {class}." with "a photo" learned); empty: N(0, 0.02).
        depth: Blocks that get prompts (MaPLe: 9; 1: the shallow prompts only).
    """

    n_ctx: int = 2
    init: str = "a photo of a"
    depth: int = 9

    families: ClassVar[tuple[str, ...]] = ("clip",)
    test_overrides: ClassVar[dict] = {"depth": 2}

    def __post_init__(self):
        _check_ctx(self.n_ctx)
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")

    def _check_depth(self, backbone) -> None:
        head = clip_head(backbone, self.name)
        blocks = min(len(backbone.anatomy.blocks), len(head.text.transformer.resblocks))
        if self.depth > blocks:
            raise ConfigError(f"maple depth {self.depth} exceeds the towers' {blocks} blocks: set maple:depth={blocks}")

    def inject(self, backbone) -> None:
        head = clip_head(backbone, self.name)
        self._check_depth(backbone)
        seq = backbone.anatomy.token_sequence("pre_norm_pre")
        if seq is None:
            raise backbone.anatomy.refuse(f"method {self.name!r}", "token_sequence")
        prompts = MaPLePrompts(head, self.n_ctx, self.init, self.depth, seq.width)
        backbone.extras[self.name] = prompts
        head.set_learner(prompts)
        start, n = seq.prefix, self.n_ctx

        def insert(x):
            return torch.cat([x[:, :start], prompts.visual(0).to(x.dtype).expand(len(x), -1, -1), x[:, start:]], 1)

        backbone.register_token_hook(insert, n, owner=self.name, where="pre_norm_pre")
        for i in range(1, self.depth):
            backbone.register_block_hook(
                i,
                pre=lambda x, i=i: torch.cat(
                    [x[:, :start], prompts.visual(i).to(x.dtype).expand(len(x), -1, -1), x[:, start + n :]], 1
                ),
            )

    def extra_trainable_count(self, backbone) -> int:
        head = clip_head(backbone, self.name)
        text = head.text.token_embedding.weight.shape[1]
        vision = backbone.anatomy.token_sequence("pre_norm_pre").width
        return self.depth * (self.n_ctx * text + text * vision + vision)


@METHODS.register("zeroshot")
@dataclass(kw_only=True)
class ZeroShotConfig(MethodConfig):
    """CLIP zero-shot: nothing trains; the run evaluates the frozen model with the task's class prompts (``vpeft
    train`` then runs no epoch and writes the run folder with the test result). clip backbones only."""

    identity_init = True
    families: ClassVar[tuple[str, ...]] = ("clip",)
    #: Nothing to train: the trainer evaluates without an epoch.
    trains_nothing: ClassVar[bool] = True

    def inject(self, backbone) -> None:
        clip_head(backbone, self.name)

    def extra_trainable_count(self, backbone) -> int:
        return 0
