"""Prompts drawn from a batch's ground-truth masks, for models that segment from a prompt (SAM in prompt mode ``box``
or ``points``).

A segmentation model is called with images only (``model(images)``, through every objective and evaluation loop). A
prompted model reads the batch's masks from :func:`current_masks`, which the segment task publishes around each call
(:meth:`vpeft.tasks.base.Task.model_context`): :func:`ground_truth` sets them for the length of a ``with`` block.
Where no masks are published (``vpeft predict`` on new images) a prompted model fails with a clear message.

:func:`mask_boxes` gives each mask's bounding box, :func:`inner_points` its innermost pixel: the one farthest from
the background (chessboard distance, by repeated 3x3 erosion; of the last surviving pixels, the one nearest their
mean), SAM's evaluation's first click. Both are deterministic: training and evaluation give the same prompt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Optional

import torch
import torch.nn.functional as F

_MASKS: ContextVar[Optional[torch.Tensor]] = ContextVar("vpeft_ground_truth_masks", default=None)


@contextmanager
def ground_truth(masks: Optional[torch.Tensor]) -> Iterator[None]:
    """Publish a batch's masks (uint8 or bool ``[B, H, W]``) to prompted models for the block's length."""
    token = _MASKS.set(masks)
    try:
        yield
    finally:
        _MASKS.reset(token)


def current_masks() -> Optional[torch.Tensor]:
    """The masks published by the innermost :func:`ground_truth` block, or ``None``."""
    return _MASKS.get()


def mask_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each mask's bounding box ``(x0, y0, x1, y1)`` in pixels, the last row and column inclusive (as SAM's
    ``batched_mask_to_box``), float ``[B, 4]``, and whether the mask has any foreground, bool ``[B]`` (an empty mask's
    box is all zeros)."""
    m = masks.bool()
    cols, rows = m.any(1), m.any(2)  # [B, W], [B, H]
    found = cols.any(1)
    w, h = cols.shape[1], rows.shape[1]
    x0 = cols.int().argmax(1)
    x1 = w - 1 - cols.flip(1).int().argmax(1)
    y0 = rows.int().argmax(1)
    y1 = h - 1 - rows.flip(1).int().argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).float() * found.unsqueeze(1)
    return boxes, found


def inner_points(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each mask's innermost pixel ``(x, y)``, float ``[B, 2]``, and whether the mask has any foreground, bool ``[B]``
    (an empty mask's point is ``(0, 0)``).

    The mask is eroded by a 3x3 square (pixels outside the image count as background) until nothing is left; the
    pixels left before the last erosion are the farthest from the background, and of those the one nearest their
    mean is taken (ties: the first in raster order)."""
    m = masks.bool()
    b, h, w = m.shape
    last = m
    cur = m.float().unsqueeze(1)
    while True:
        eroded = 1 - F.max_pool2d(F.pad(1 - cur, (1, 1, 1, 1), value=1.0), 3, 1)
        alive = eroded.flatten(1).any(1)
        if not bool(alive.any()):
            break
        last = torch.where(alive.view(-1, 1, 1), eroded[:, 0].bool(), last)
        cur = eroded
    ys = torch.arange(h, device=m.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=m.device, dtype=torch.float32).view(1, 1, w)
    keep = last.float()
    n = keep.sum((1, 2)).clamp(min=1).view(-1, 1, 1)
    cy, cx = (keep * ys).sum((1, 2), keepdim=True) / n, (keep * xs).sum((1, 2), keepdim=True) / n
    dist = ((ys - cy) ** 2 + (xs - cx) ** 2).masked_fill(~last, float("inf"))
    idx = dist.flatten(1).argmin(1)
    found = m.flatten(1).any(1)
    points = torch.stack([idx % w, idx // w], 1).float() * found.unsqueeze(1)
    return points, found
