"""Batched training augmentation on uint8 images ``[B, 3, H, W]``, run on whatever device the batch lives on.

What the per-image torchvision v2 pipelines vpeft ran before (RandomResizedCrop + flip + RandAugment, GPS's two
contrastive views) do, without a Python loop over images on a GPU: the random parameters of the whole batch are
drawn at once from a ``torch.Generator`` (a CPU one: the draws stay on the host, so grouping images needs no device
sync) and copied to the batch's device without blocking.
Nothing reads a value back from the device. The same generator state gives the same parameters on every device; the
pixels agree across devices up to float rounding (at most 1 grey level, on few pixels; on the CPU the resize is
torchvision's own uint8 kernel per image, see :func:`resized_crop`).

- ``random_resized_crop_flip``: torchvision's ``RandomResizedCrop`` boxes (10 attempts, then the centre-crop
  fallback) and ``RandomHorizontalFlip``, resized by two batched matmuls that apply the weights of torch's
  antialiased bilinear resize per image (the flip is folded into the column weights).
- ``rand_augment``: torchvision's ``RandAugment`` op set and magnitudes; each image draws its own ops and signs, and
  the images that drew the same (op, sign) go through torchvision's functional op as one sub-batch (the geometric
  ops and Sharpness through equal batched versions, with one parameter per image, see ``apply_randaug_op``).
- ``gps_views``: GPS's two contrastive views (crop + flip, colour jitter with p 0.8 in a random order per image,
  grayscale with p 0.2).
- ``augment``: the dispatcher for the data layouts' ``augment`` kinds.

timm's own augmentations, as NOAH's and DTL's recipes run them (``data.randaug``, ``data.erasing``, ``train.mixup``,
``train.cutmix``, ``train.smoothing``):

- ``timm_rand_augment`` / ``timm_randaug_batch``: timm's ``rand_augment_transform`` from a config string
  (``rand-m9-mstd0.5-inc1``), applied per image through PIL after the crop and flip, in place of ``rand_augment``.
- ``Erasing``: timm's ``RandomErasing`` (mode ``pixel``, one box) on the normalised float batch.
- ``Mixing``: timm's ``Mixup`` (mode ``batch``: one lambda and one box for the whole batch, each image mixed with its
  mirror in the batch) and label smoothing; soft targets ``[B, C]``.

timm draws from Python's ``random``, numpy's global generator and torch's CPU generator: ``host_rngs`` seeds all three
from one draw of the run's augmentation generator per call and restores them afterwards, so the same generator state
gives the same batch (and a resumed run augments as the uninterrupted one) without touching the rest of the run's
random streams. These host loops read the batch back from the device (RandAugment) or run per image (erasing).
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from collections.abc import Callable, Iterator
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from timm.data.mixup import Mixup, mixup_target
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import str_to_pil_interp
from torchvision.transforms.v2 import functional as F

from .vtab import NORMALIZATION

Size = Union[int, tuple[int, int]]

#: RandAugment's ops as torchvision v2's ``RandAugment._AUGMENTATION_SPACE``: name -> (magnitudes of the bins for
#: ``(num_bins, height, width)``, or None; whether the sign is drawn).
RANDAUG_OPS: dict[str, tuple[Callable | None, bool]] = {
    "Identity": (None, False),
    "ShearX": (lambda n, h, w: torch.linspace(0.0, 0.3, n), True),
    "ShearY": (lambda n, h, w: torch.linspace(0.0, 0.3, n), True),
    "TranslateX": (lambda n, h, w: torch.linspace(0.0, 150.0 / 331.0 * w, n), True),
    "TranslateY": (lambda n, h, w: torch.linspace(0.0, 150.0 / 331.0 * h, n), True),
    "Rotate": (lambda n, h, w: torch.linspace(0.0, 30.0, n), True),
    "Brightness": (lambda n, h, w: torch.linspace(0.0, 0.9, n), True),
    "Color": (lambda n, h, w: torch.linspace(0.0, 0.9, n), True),
    "Contrast": (lambda n, h, w: torch.linspace(0.0, 0.9, n), True),
    "Sharpness": (lambda n, h, w: torch.linspace(0.0, 0.9, n), True),
    "Posterize": (lambda n, h, w: (8 - (torch.arange(n) / ((n - 1) / 4))).round().int(), False),
    "Solarize": (lambda n, h, w: torch.linspace(1.0, 0.0, n), False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}

#: The RandAugment ops that warp the image (one affine matrix per image, one ``grid_sample`` for all of them).
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")

#: The ``augment`` kinds of the data layouts that ``augment`` runs (``none`` needs no call).
KINDS = ("crop_flip", "crop_flip_randaug")


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor (the drawn parameters) on ``device`` without a host sync: on CUDA through pinned memory with a
    non-blocking copy (the caching host allocator keeps the buffer until the copy is done)."""
    if t.device.type == "cpu" and device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def crop_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> torch.Tensor:
    """``n`` crop boxes ``(top, left, height, width)`` (int64 ``[n, 4]``, on the generator's device) drawn as
    torchvision's ``RandomResizedCrop`` draws one: up to ``attempts`` (area share, log aspect ratio) draws, the first
    that fits the image wins, else the centre crop clamped to ``ratio``. The attempts are drawn for every image at
    once, so the stream of random numbers differs from torchvision's (the distribution does not)."""
    dev = generator.device
    area = torch.empty(n, attempts, dtype=torch.float64, device=dev).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, attempts, dtype=torch.float64, device=dev)
    log_r.uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    target, aspect = area * (height * width), log_r.exp()
    w = (target * aspect).sqrt().round().long()  # round half to even, as Python's round()
    h = (target / aspect).sqrt().round().long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok, torch.arange(attempts, device=dev), attempts).amin(1, keepdim=True)
    found = first[:, 0] < attempts
    first = first.clamp(max=attempts - 1)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    pos = torch.rand(n, 2, dtype=torch.float64, device=dev, generator=generator)
    top = (pos[:, 0] * (height - h + 1)).long().clamp(max=height - h)
    left = (pos[:, 1] * (width - w + 1)).long().clamp(max=width - w)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], device=dev)
    return torch.where(found[:, None], torch.stack([top, left, h, w], 1), fallback)


def _aa_weights(start: torch.Tensor, length: torch.Tensor, out: int, n: int) -> torch.Tensor:
    """``[B, out, n]``: the weights with which torch's antialiased bilinear resize (ATen's
    ``_compute_indices_min_size_weights_aa``: a triangle filter widened by the scale when downsampling, cut to its
    window and normalised) maps the pixels ``[start, start + length)`` of an axis of ``n`` pixels to ``out``."""
    scale = (length.float() / out)[:, None, None]
    support = scale.clamp(min=1.0)
    center = scale * (torch.arange(out, device=start.device, dtype=torch.float32) + 0.5)[:, None]
    lo = (center - support + 0.5).trunc().clamp(min=0)
    hi = torch.minimum((center + support + 0.5).trunc(), length[:, None, None].float())
    j = (torch.arange(n, device=start.device) - start[:, None])[:, None, :].float()  # crop coordinates
    w = (1 - ((j - center + 0.5) * (1 / support)).abs()).clamp(min=0) * ((j >= lo) & (j < hi))
    return w / w.sum(-1, keepdim=True)


def resized_crop(
    images_u8: torch.Tensor, boxes: torch.Tensor, size: Size, flips: torch.Tensor | None = None
) -> torch.Tensor:
    """Crop each image to its box ``(top, left, height, width)`` (``[B, 4]``, inside the image), resize it to
    ``size`` (bilinear, antialiased) and mirror it where ``flips`` (bool ``[B]``) is set; uint8 in, uint8 out.

    The resize is separable: per image a ``[size_h, H]`` row-weight and a ``[size_w, W]`` column-weight matrix hold
    exactly the taps and weights of ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` on the crop
    (triangle filter widened by the scale when downsampling; pixels outside the crop get weight 0), applied as two
    batched matmuls in float32 and rounded: what torchvision's ``resized_crop(..., antialias=True)`` computes for
    float and CUDA input. Against torchvision's uint8 CPU kernel (fixed-point, rounded between its two passes) it
    differs by at most 1 grey level (mean 0.15-0.2). Unlike torchvision, boxes reaching outside the image are not
    padded with zeros. The matmuls cost about ``2 * size_h * (H * W + W * size_w) * 3`` flops per image: nothing on
    a GPU, but on one CPU thread about 10x torchvision's vectorised uint8 kernel at 224 px (benchmarks/augment.py).
    Under TF32 matmuls the error grows by up to ~0.25 grey level before rounding; autocast is switched off here.

    On the CPU each crop goes through torch's vectorised uint8 kernel instead (what torchvision runs there, the same
    filter): a loop over images, but 10x cheaper than the dense matmuls on a CPU core."""
    if images_u8.device.type == "cpu":
        return _resized_crop_per_image(images_u8, boxes, size, flips)
    return _resized_crop_matmul(images_u8, boxes, size, flips)


def _resized_crop_per_image(images_u8, boxes, size, flips=None) -> torch.Tensor:
    oh, ow = _pair(size)
    out = torch.empty((len(images_u8), images_u8.shape[1], oh, ow), dtype=torch.uint8)
    flips = [False] * len(images_u8) if flips is None else flips.tolist()
    for i, ((t, left, h, w), f) in enumerate(zip(boxes.tolist(), flips)):
        r = torch.nn.functional.interpolate(
            images_u8[i : i + 1, :, t : t + h, left : left + w],
            size=(oh, ow),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0]
        out[i] = r.flip(-1) if f else r
    return out


def _resized_crop_matmul(images_u8, boxes, size, flips=None) -> torch.Tensor:
    b, c, height, width = images_u8.shape
    oh, ow = _pair(size)
    dev = images_u8.device
    params = boxes.long() if flips is None else torch.cat([boxes.long(), flips.long()[:, None]], 1)
    params = _to_device(params, dev)
    with torch.autocast(dev.type, enabled=False) if dev.type in ("cpu", "cuda") else contextlib.nullcontext():
        wy = _aa_weights(params[:, 0], params[:, 2], oh, height)  # B x oh x H
        wx = _aa_weights(params[:, 1], params[:, 3], ow, width)  # B x ow x W
        if flips is not None:
            wx = torch.where(params[:, 4, None, None].bool(), wx.flip(1), wx)
        x = images_u8.permute(0, 2, 1, 3).reshape(b, height, c * width).float()  # B x H x (C W)
        x = torch.bmm(wy, x).view(b, oh * c, width)  # rows first
        x = torch.bmm(x, wx.transpose(1, 2)).view(b, oh, c, ow)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 1, 3).contiguous()


def random_resized_crop_flip(
    images_u8: torch.Tensor,
    size: Size,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop(size, scale, ratio, antialias=True)`` then ``RandomHorizontalFlip()`` on
    every image of the batch (see ``crop_boxes`` for the boxes, ``resized_crop`` for the resize)."""
    b, _, height, width = images_u8.shape
    boxes = crop_boxes(b, height, width, generator, scale, ratio)
    flips = torch.rand(b, device=generator.device, generator=generator) < 0.5 if flip else None
    return resized_crop(images_u8, boxes, size, flips)


def _grouped(x: torch.Tensor, keys: torch.Tensor, apply: Callable) -> torch.Tensor:
    """``apply(sub_batch, key, idx)`` on the images of each distinct key (keys: int64 ``[B]`` on the host; ``idx``:
    the sub-batch's positions, on ``x``'s device), put back in place. One host-to-device copy, no device sync."""
    order = torch.argsort(keys.cpu(), stable=True)
    counts = torch.bincount(keys.cpu()).tolist()
    order = _to_device(order, x.device)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    start = 0
    for key, n in enumerate(counts):
        if n:
            idx = order[start : start + n]
            out.index_copy_(0, idx, apply(x.index_select(0, idx), key, idx))
            start += n
    return out


def _inverse_affine(center, angle: float, translate, shear) -> list[float]:
    """torchvision's ``_get_inverse_affine_matrix`` at scale 1: the 2 x 3 matrix mapping output to input pixels."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    a = math.cos(rot - sy) / math.cos(sy)
    b = -(a * math.tan(sx) + math.sin(rot))
    c = math.sin(rot - sy) / math.cos(sy)
    d = math.cos(rot) - c * math.tan(sx)
    m = [d, -b, 0.0, -c, a, 0.0]
    (cx, cy), (tx, ty) = center, translate
    m[2] += cx - m[0] * (cx + tx) - m[1] * (cy + ty)
    m[5] += cy - m[3] * (cx + tx) - m[4] * (cy + ty)
    return m


def _affine_theta(name: str, magnitude: float, height: int, width: int) -> torch.Tensor:
    """The ``[3, 2]`` matrix (transposed, divided by half the size) with which torchvision's ``affine`` / ``rotate``
    build their sampling grid for a geometric RandAugment op."""
    if name == "Rotate":
        m = _inverse_affine([0.0, 0.0], -(magnitude % 360), [0.0, 0.0], [0.0, 0.0])
    elif name in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        m = _inverse_affine(
            [-width * 0.5, -height * 0.5], 0.0, [0.0, 0.0], [shear, 0.0] if name == "ShearX" else [0.0, shear]
        )
    else:
        shift = [float(int(magnitude)), 0.0] if name == "TranslateX" else [0.0, float(int(magnitude))]
        m = _inverse_affine([0.0, 0.0], 0.0, shift, [0.0, 0.0])
    return torch.tensor(m, dtype=torch.float32).view(2, 3).t() / torch.tensor([0.5 * width, 0.5 * height])


def _warp(images_u8: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """torchvision's affine warp (nearest, fill 0) with one ``_affine_theta`` per image (``theta``: ``[n, 3, 2]``
    on the images' device). The grid is computed elementwise, not by torchvision's ``bmm``, so TF32 matmuls cannot
    move its sampling points."""
    n, c, h, w = images_u8.shape
    dev = images_u8.device
    gx = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=dev)[None, None, :, None]
    gy = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=dev)[None, :, None, None]
    t = theta[:, None, None]  # n x 1 x 1 x 3 x 2
    grid = gx * t[..., 0, :] + gy * t[..., 1, :] + t[..., 2, :]  # n x h x w x 2
    out = torch.nn.functional.grid_sample(
        images_u8.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    return out.round_().to(torch.uint8)


def _sharpen(images_u8: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_sharpness`` with one factor per image (``factor``: float64 ``[n]``: torchvision takes
    ``1 - factor`` in double precision, then rounds it to float32)."""
    n, c, h, w = images_u8.shape
    if h <= 2 or w <= 2:
        return images_u8
    kernel = torch.full((c, 1, 3, 3), 1.0 / 13.0, device=images_u8.device)
    kernel[:, :, 1, 1] = 5.0 / 13.0
    out = images_u8.float()
    blurred = torch.nn.functional.conv2d(out, kernel, groups=c).round_()
    inner = out[..., 1:-1, 1:-1]
    # torchvision's inner + (1 - f) * (blurred - inner) is one fused multiply-add: exact in float64, rounded once
    alpha = (1.0 - factor.double()).float().double()[:, None, None, None]
    step = blurred.sub_(inner).double().mul_(alpha)
    inner.copy_(step.add_(inner.double()).float())
    return out.clamp_(0, 255).to(torch.uint8)


def apply_randaug_op(images_u8: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """One RandAugment op at a signed ``magnitude`` on a batch, as torchvision's
    ``RandAugment._apply_image_or_video_transform`` (nearest interpolation, fill 0): torchvision's functional op,
    except the geometric ops and Sharpness, whose torchvision kernels copy a small tensor to the device with a
    blocking copy (a host sync per call); they run through ``_warp`` / ``_sharpen`` with the same arithmetic."""
    n, _, height, width = images_u8.shape
    if name == "Identity":
        return images_u8
    if name in GEOMETRIC:
        theta = _to_device(_affine_theta(name, magnitude, height, width), images_u8.device)
        return _warp(images_u8, theta.expand(n, 3, 2))
    if name == "Brightness":
        return F.adjust_brightness(images_u8, 1.0 + magnitude)
    if name == "Color":
        return F.adjust_saturation(images_u8, 1.0 + magnitude)
    if name == "Contrast":
        return F.adjust_contrast(images_u8, 1.0 + magnitude)
    if name == "Sharpness":
        return _sharpen(images_u8, torch.full((n,), 1.0 + magnitude, dtype=torch.float64, device=images_u8.device))
    if name == "Posterize":
        return F.posterize(images_u8, bits=int(magnitude))
    if name == "Solarize":
        return F.solarize(images_u8, threshold=255.0 * magnitude)
    if name == "AutoContrast":
        return F.autocontrast(images_u8)
    if name == "Equalize":
        return F.equalize(images_u8)
    raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(RANDAUG_OPS)}")


def draw_randaug(n: int, generator: torch.Generator, num_ops: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and step: the op (index into ``RANDAUG_OPS``, uniform) and whether its magnitude is negated (p 0.5,
    used by the signed ops only); int64 ``[n, num_ops]`` and bool ``[n, num_ops]``."""
    ops = torch.randint(len(RANDAUG_OPS), (n, num_ops), device=generator.device, generator=generator)
    neg = torch.rand(n, num_ops, device=generator.device, generator=generator) < 0.5
    return ops, neg


def rand_augment(
    images_u8: torch.Tensor,
    generator: torch.Generator,
    num_ops: int = 2,
    magnitude: int = 9,
    num_magnitude_bins: int = 31,
) -> torch.Tensor:
    """torchvision's ``RandAugment(num_ops, magnitude, num_magnitude_bins)`` (nearest interpolation, fill 0) on every
    image of the batch: each image draws its own ``num_ops`` ops and signs (``draw_randaug``). Per step, the images
    that drew the same (op, sign) go through ``apply_randaug_op`` as one sub-batch; the images that drew any
    geometric op share one ``_warp`` (one matrix each), those that drew Sharpness one ``_sharpen``."""
    names = list(RANDAUG_OPS)
    b, _, height, width = images_u8.shape
    dev = images_u8.device
    ops, neg = draw_randaug(b, generator, num_ops)
    ops, neg = ops.cpu(), neg.cpu()
    signed = torch.tensor([s for _, s in RANDAUG_OPS.values()])
    keys = ops * 2 + (neg & signed[ops])  # (op, sign)
    mags = []  # signed magnitude per key
    for fn, _ in RANDAUG_OPS.values():
        m = 0.0 if fn is None else float(fn(num_magnitude_bins, height, width)[magnitude])
        mags += [m, -m]
    thetas = torch.stack(
        [
            _affine_theta(names[k // 2], mags[k], height, width) if names[k // 2] in GEOMETRIC else torch.zeros(3, 2)
            for k in range(len(mags))
        ]
    )
    geometric = torch.tensor([names[k // 2] in GEOMETRIC for k in range(len(mags))])
    sharp, geo = len(mags), len(mags) + 1  # group keys shared by all Sharpness / all geometric images
    groups = torch.where(geometric[keys], geo, torch.where(ops == names.index("Sharpness"), sharp, keys))
    factors = 1.0 + torch.tensor(mags, dtype=torch.float64)  # Sharpness's, in double as torchvision's
    params = torch.cat([thetas[keys].flatten(2).double(), factors[keys, None]], 2)  # b x steps x 7
    params = _to_device(params, dev)

    def apply(sub, key, idx):
        if key == geo:
            return _warp(sub, params[idx, step, :6].float().view(-1, 3, 2))
        if key == sharp:
            return _sharpen(sub, params[idx, step, 6])
        return apply_randaug_op(sub, names[key // 2], mags[key])

    x = images_u8
    for step in range(num_ops):
        x = _grouped(x, groups[:, step], apply)
    return x


def _jitter_op(x: torch.Tensor, kind: int, f: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_brightness`` (0), ``adjust_contrast`` (1), ``adjust_saturation`` (2) or
    ``adjust_hue`` (3) on uint8 ``x``, with one factor per image (``f``: float32 ``[n]``)."""
    if kind == 3:
        from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

        hsv = _rgb_to_hsv(F.to_dtype(x, torch.float32, scale=True))
        hsv[:, 0].add_(f[:, None, None]).remainder_(1.0)
        return F.to_dtype(_hsv_to_rgb(hsv), torch.uint8, scale=True)
    f = f[:, None, None, None]
    if kind == 0:
        return x.mul(f).clamp_(0, 255).to(torch.uint8)
    r, g, b = x.unbind(-3)
    gray = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(-3)
    if kind == 1:
        gray = gray.mean(dim=(-3, -2, -1), keepdim=True)
    # torchvision's x * f + (1 - f) * gray is one fused multiply-add: exact in float64, then rounded once
    out = x.mul(f).double().add_(gray.double() * (1.0 - f).double()).float()
    return out.clamp_(0, 255).to(torch.uint8)


def color_jitter(
    images_u8: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 1.0,
) -> torch.Tensor:
    """``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)`` per image: each image draws whether
    it is jittered, its four factors (brightness etc. uniform in ``[1 - v, 1 + v]``, hue in ``[-hue, hue]``) and the
    order of the four ops, as torchvision does; the ops run per step on the images that drew the same op there."""
    n, dev = len(images_u8), generator.device
    on = torch.rand(n, device=dev, generator=generator) < p
    order = torch.rand(n, 4, device=dev, generator=generator).argsort(1)  # a uniform random permutation per image
    lo = torch.tensor([max(0.0, 1 - brightness), max(0.0, 1 - contrast), max(0.0, 1 - saturation), -hue], device=dev)
    hi = torch.tensor([1 + brightness, 1 + contrast, 1 + saturation, hue], device=dev)
    factors = lo + (hi - lo) * torch.rand(n, 4, device=dev, generator=generator)
    factors = _to_device(factors, images_u8.device)

    def apply(sub, kind, idx):
        return sub if kind == 4 else _jitter_op(sub, kind, factors[idx, kind])

    x = images_u8
    for step in range(4):
        x = _grouped(x, torch.where(on, order[:, step], 4).cpu(), apply)
    return x


def random_grayscale(images_u8: torch.Tensor, generator: torch.Generator, p: float = 0.2) -> torch.Tensor:
    """torchvision's ``RandomGrayscale(p)`` per image (3-channel grayscale)."""
    gray = torch.rand(len(images_u8), device=generator.device, generator=generator) < p
    gray = _to_device(gray, images_u8.device)[:, None, None, None]
    return torch.where(gray, F.rgb_to_grayscale(images_u8, num_output_channels=3), images_u8)


def gps_views(images_u8: torch.Tensor, size: Size, generator: torch.Generator) -> torch.Tensor:
    """GPS's two contrastive views of every image, uint8 ``B x 2 x 3 x h x w``: random-resized crop (0.08-1, ratio
    3/4-4/3) + flip, colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8 in a random order per image, grayscale with p
    0.2; each view of each image draws its own parameters."""
    b = len(images_u8)
    x = images_u8.unsqueeze(1).expand(b, 2, *images_u8.shape[1:]).flatten(0, 1)  # image-major: B*2
    x = random_resized_crop_flip(x, size, generator)
    x = color_jitter(x, generator, 0.4, 0.4, 0.4, 0.1, p=0.8)
    return random_grayscale(x, generator, p=0.2).unflatten(0, (b, 2))


def augment(
    images_u8: torch.Tensor, size: Size, kind: str, generator: torch.Generator, randaug: Optional[Callable] = None
) -> torch.Tensor:
    """Training augmentation of a batch by the data layouts' ``augment`` kind: ``crop_flip`` (random-resized crop
    0.08-1 + flip, FGVC as VPT/GPS) or ``crop_flip_randaug`` (plus RandAugment with 2 ops of magnitude 9, few-shot as
    NOAH/DTL). ``randaug``: a timm RandAugment (:func:`timm_rand_augment`) that ``crop_flip_randaug`` runs per image
    (:func:`timm_randaug_batch`) in place of the batched torchvision one."""
    if kind not in KINDS:
        raise ValueError(f"unknown augment kind {kind!r}; known: {', '.join(KINDS)}")
    x = random_resized_crop_flip(images_u8, size, generator)
    if kind != "crop_flip_randaug":
        return x
    if randaug is not None:
        return timm_randaug_batch(x, randaug, generator)
    return rand_augment(x, generator, num_ops=2, magnitude=9)


# --------------------------------------------------------------------------------------------------------------------
# timm's augmentations (NOAH's and DTL's recipes)


@contextlib.contextmanager
def host_rngs(generator: Optional[torch.Generator]) -> Iterator[None]:
    """Seed Python's ``random``, numpy's global generator and torch's CPU generator (which timm's augmentations draw
    from) from one draw of ``generator``, and restore their states on leaving; ``None``: leave them as they are."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's (dropout there) stays untouched
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


#: timm RandAugment config sections (``rand_augment_transform``): a key and its number; ``t<name>`` names a set of ops.
_RANDAUG_SECTION = re.compile(r"(m|n|p|mstd|mmax|inc)\d.*")
_RANDAUG_SETS = ("weights", "3aw", "3a")


def timm_rand_augment(spec: str, size: Size = 224, normalize: str = "inception") -> Callable:
    """timm's RandAugment for the config string ``spec`` (``rand-m9-mstd0.5-inc1``: magnitude 9, its std 0.5, the
    ops whose strength grows with it), with the hparams timm's ``create_transform`` gives it for images of ``size``:
    ``translate_const`` 45% of the smaller side, fill ``img_mean`` the normalisation's mean in grey levels, and
    bicubic interpolation (NOAH's and DTL's ``--train-interpolation``). A string timm cannot read, or whose sections
    timm would silently skip, fails with a one-line ``ValueError``."""
    sections = spec.split("-") if isinstance(spec, str) else []
    if not sections or sections[0] != "rand":
        raise ValueError(
            f"expected a timm RandAugment string 'rand-<sections>' (e.g. rand-m9-mstd0.5-inc1), got {spec!r}"
        )
    for c in sections[1:]:
        if c.startswith("t") and c[1:] not in _RANDAUG_SETS:
            raise ValueError(f"{spec!r}: unknown op set {c!r}; timm knows {', '.join('t' + n for n in _RANDAUG_SETS)}")
        if not c.startswith("t") and not _RANDAUG_SECTION.fullmatch(c):
            raise ValueError(
                f"{spec!r}: unknown section {c!r}; timm reads m<magnitude>, n<ops>, p<prob>, mstd<std>, mmax<max>, "
                "inc<0|1>, t<op set>"
            )
    mean = NORMALIZATION[normalize][0]
    hparams = {
        "translate_const": int(min(_pair(size)) * 0.45),
        "img_mean": tuple(min(255, round(255 * m)) for m in mean),
        "interpolation": str_to_pil_interp("bicubic"),
    }
    try:
        return rand_augment_transform(spec, hparams)
    except (AssertionError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"timm cannot read RandAugment string {spec!r}: {e or type(e).__name__}") from None


def timm_randaug_batch(images_u8: torch.Tensor, transform: Callable, generator: Optional[torch.Generator]):
    """``transform`` (a timm RandAugment, PIL in and out) on every image of a uint8 batch ``[B, 3, H, W]``, in order,
    under Python's and numpy's generators seeded from ``generator`` (:func:`host_rngs`); uint8 out, on the batch's
    device. The batch goes to the host and back."""
    host = images_u8.cpu().permute(0, 2, 3, 1).numpy()
    with host_rngs(generator):
        out = [np.asarray(transform(Image.fromarray(np.ascontiguousarray(img), "RGB"))) for img in host]
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()
    return _to_device(x, images_u8.device)


class Erasing:
    """timm's ``RandomErasing(probability, mode="pixel", max_count=1)`` on a normalised float batch, in place: each
    image, with probability ``probability``, gets one box (2-33% of its area, aspect ratio 0.3-3.3) filled with
    standard-normal noise. The noise is drawn on the host (timm's ``device="cpu"``) and copied into the batch, so the
    same generator erases the same pixels on every device."""

    def __init__(self, probability: float):
        self.probability = probability
        self.erase = RandomErasing(probability, mode="pixel", max_count=1, device="cpu")

    def __call__(self, images: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        with host_rngs(generator):
            return self.erase(images)


class Mixing:
    """Soft training targets ``[B, C]`` as timm's training script makes them: with ``mixup`` or ``cutmix`` alpha > 0,
    timm's ``Mixup`` in mode ``batch`` (with probability ``prob`` one lambda for the batch, drawn from
    Beta(alpha, alpha) of cutmix with probability ``switch_prob`` when both are on, else of mixup; each image is mixed
    with its mirror in the batch, ``flip(0)``; the target is ``lam * y + (1 - lam) * y.flip(0)`` of the smoothed
    one-hot labels); otherwise the smoothed one-hot labels alone (``off = smoothing / C``, ``on = 1 - smoothing +
    off``: timm's ``--smoothing``). timm's ``Mixup`` refuses an odd batch (an assertion); here an odd batch (the last
    one without ``drop_last``) is mixed the same way, its middle image with itself (so unmixed)."""

    def __init__(
        self,
        num_classes: int,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        smoothing: float = 0.0,
    ):
        self.num_classes, self.smoothing = num_classes, smoothing
        self.mixup = None
        if mixup > 0 or cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                prob=prob,
                switch_prob=switch_prob,
                mode="batch",
                label_smoothing=smoothing,
                num_classes=num_classes,
            )

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, generator: Optional[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch mixed in place and its soft targets (float32, on the labels' device)."""
        if self.mixup is None:
            return images, mixup_target(labels, self.num_classes, 1.0, self.smoothing)
        with host_rngs(generator):
            if len(images) % 2 == 0:
                return self.mixup(images, labels)
            lam = self.mixup._mix_batch(images)  # what Mixup.__call__ runs in mode 'batch', past its even-size check
        return images, mixup_target(labels, self.num_classes, lam, self.smoothing)
