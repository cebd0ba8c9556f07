"""SSF: scaling and shifting features (Lian et al., arXiv:2210.08823), placed as in the GPS/SSF code.

``y = x * gamma + beta`` (gamma ~ N(1, 0.02), beta ~ N(0, 0.02)) after the patch embedding, after every Linear in the
blocks (attention qkv and proj, MLP fc1 and fc2), after both LayerNorms of every block, and after the final norm.

Memory-lean: a plain ``x * gamma + beta`` keeps its input ``x`` for gamma's gradient, an extra copy of nearly every
activation (about 1.25x the activations of full fine-tuning on ViT-B). Here:

* after a LayerNorm, the scale and shift are fused into the norm's affine (``weight * gamma``, ``bias * gamma +
  beta``), so the norm keeps only what it keeps anyway (its input and statistics);
* after a Linear or convolution, :class:`ScaleShift` keeps its *output* and recovers ``x = (y - beta) / gamma`` in
  backward; the output is usually kept anyway by the next operation (GELU, attention), so the two share one storage.

Gradients match the plain formula to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import METHODS
from .base import MethodConfig


class ScaleShift(torch.autograd.Function):
    """``x * scale + shift`` over the last dimension, saving the output rather than the input for backward.

    The output keeps x's dtype (under autocast, the bf16/fp16 output of a Linear stays so rather than being promoted by
    the fp32 scale and shift, which would make every later op save fp32 activations). The scale and shift gradients
    are reduced in fp32 and returned in the parameters' dtype.
    """

    @staticmethod
    def forward(ctx, x, scale, shift):
        y = torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))
        ctx.save_for_backward(y, scale, shift)
        return y

    @staticmethod
    def backward(ctx, gy):
        y, scale, shift = ctx.saved_tensors
        gx = gy * scale.to(gy.dtype) if ctx.needs_input_grad[0] else None
        dims = tuple(range(gy.dim() - 1))
        g_scale = g_shift = None
        acc = torch.promote_types(gy.dtype, torch.float32)
        if ctx.needs_input_grad[1]:  # x recovered from the output: (y - shift) / scale
            g_scale = (gy.to(acc) * ((y.to(acc) - shift.to(acc)) / scale.to(acc))).sum(dims).to(scale.dtype)
        if ctx.needs_input_grad[2]:
            g_shift = gy.sum(dims, dtype=acc).to(shift.dtype)
        return gx, g_scale, g_shift


def _ssf_layernorm(norm: nn.LayerNorm, ssf: SSF, channels_first: bool):
    """``norm(x) * gamma + beta`` as one layer norm with the affine folded in (nothing extra saved for backward)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        w = norm.weight * ssf.ssf_scale
        b = ssf.ssf_shift if norm.bias is None else torch.addcmul(ssf.ssf_shift, norm.bias, ssf.ssf_scale)
        if channels_first:
            return F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, w, b, norm.eps).permute(0, 3, 1, 2)
        return F.layer_norm(x, norm.normalized_shape, w, b, norm.eps)

    return forward


class SSF(nn.Module):
    def __init__(self, dim: int, channels_first: bool = False):
        super().__init__()
        self.ssf_scale = nn.Parameter(torch.empty(dim))
        self.ssf_shift = nn.Parameter(torch.empty(dim))
        self.channels_first = channels_first
        nn.init.normal_(self.ssf_scale, mean=1.0, std=0.02)
        nn.init.normal_(self.ssf_shift, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            return ScaleShift.apply(x.movedim(1, -1), self.ssf_scale, self.ssf_shift).movedim(-1, 1)
        return ScaleShift.apply(x, self.ssf_scale, self.ssf_shift)


def _is_layernorm(m: nn.Module) -> bool:
    return isinstance(m, nn.LayerNorm) and m.elementwise_affine


def _sites(anatomy) -> list[tuple[str, nn.Module, int]]:
    """``(qualified name, module, width)`` whose output SSF rescales, in forward order: the patch embedding, every
    Linear, convolution and affine LayerNorm of the blocks, and the final norms."""
    names = anatomy.module_names()
    sites = []
    emb = anatomy.embedding()
    if emb is not None:
        sites.append((names[id(emb.module)], emb.module, emb.width))
    for block in anatomy.blocks:
        for m in anatomy.layers(block):
            if isinstance(m, (nn.Linear, nn.Conv2d)) or _is_layernorm(m):
                sites.append((names[id(m)], m, _width(m)))
    for name, m in anatomy.final_norms().items():
        if _is_layernorm(m):
            sites.append((name, m, _width(m)))
    return sites


def _width(m: nn.Module) -> int:
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.Conv2d):
        return m.out_channels
    return m.normalized_shape[-1]


@METHODS.register("ssf")
@dataclass(kw_only=True)
class SSFConfig(MethodConfig):
    """SSF: a learnt per-channel scale and shift after the patch embedding, every block Linear (qkv, proj, fc1,
    fc2), both block LayerNorms and the final norm. On ViT-B/16: 2 x (768 + 12 x (2304 + 768 + 768 + 768 + 3072 +
    768) + 768) = 205,824 parameters. On ConvNeXt, after every convolution and norm of the blocks. Mergeable: each
    scale and shift folds into the layer before it.
    """

    mergeable: ClassVar[bool] = True

    def inject(self, backbone) -> None:
        anatomy = backbone.anatomy
        modules = nn.ModuleDict()
        for name, m, width in _sites(anatomy):
            channels_first = anatomy.channels_first(m)
            ssf = SSF(width, channels_first=channels_first)
            modules[name.replace(".", "_")] = ssf
            if _is_layernorm(m):
                backbone.override_forward(m, _ssf_layernorm(m, ssf, channels_first))
            else:
                backbone.register_module_hook(m, post=lambda x, y, s=ssf: s(y))
        backbone.extras["ssf"] = modules

    def extra_trainable_count(self, backbone) -> int:
        return sum(2 * width for _, _, width in _sites(backbone.anatomy))

    def merge(self, backbone) -> None:
        anatomy = backbone.anatomy
        modules = backbone.extras["ssf"]
        emb = anatomy.embedding()
        with torch.no_grad():
            for name, m, _ in _sites(anatomy):
                ssf = modules[name.replace(".", "_")]
                g, b = ssf.ssf_scale, ssf.ssf_shift
                if emb is not None and m is emb.module:
                    m = emb.last  # the embedding's last op: its norm's affine, else the projection
                shape = (-1,) + (1,) * (m.weight.dim() - 1)
                if m.bias is None:
                    m.bias = nn.Parameter(torch.zeros_like(g), requires_grad=False)
                m.weight.mul_(g.view(shape))
                m.bias.mul_(g).add_(b)
