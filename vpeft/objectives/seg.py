"""The segmentation loss (the ``segment`` task's objective): binary cross-entropy on the mask logits plus a soft
overlap term, as the GPS / SAM-Adapter release trains SAM (``SAM/models/sam.py``: ``BCEWithLogitsLoss`` plus
``_iou_loss``).

``bce_iou`` (the release's): ``BCE(logits, mask) + mean_b(1 - soft IoU_b)``, soft IoU from the sigmoids per image,
``sum(p t) / (sum(p + t) - sum(p t))``; the BCE is the mean over every pixel of the batch. ``bce_dice``: the same
BCE plus ``mean_b(1 - soft Dice_b)``, ``2 sum(p t) / (sum p + sum t)``. Both in float32 whatever the autocast dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from ..registry import OBJECTIVES
from .base import Objective, ObjectiveConfig

SEG_LOSSES = ("bce_iou", "bce_dice")


def _logits_and_target(logits: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits ``[B, 1, H, W]`` and masks ``[B, H, W]`` (or ``[B, 1, H, W]``, 0/1) as float32 ``[B, 1, H, W]``;
    other shapes fail saying what a segmentation model returns."""
    target = masks.unsqueeze(1) if masks.dim() == 3 else masks
    if logits.dim() != 4 or logits.shape[1] != 1 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            f"segmentation needs mask logits [B, 1, H, W] (one binary mask per image); the model returned "
            f"{list(logits.shape)} for masks {list(masks.shape)}"
        )
    if logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"the model's mask logits are {logits.shape[-2]}x{logits.shape[-1]} but the masks are "
            f"{target.shape[-2]}x{target.shape[-1]}: masks are compared at the input size, so the model must "
            "upsample its logits to it"
        )
    return logits.float(), target.float()


def soft_iou_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``mean_b(1 - sum(p t) / (sum(p + t) - sum(p t)))`` with ``p = sigmoid(logits)``: the release's ``_iou_loss``."""
    x, t = _logits_and_target(logits, masks)
    p = torch.sigmoid(x)
    inter = (p * t).sum(dim=(2, 3))
    union = (p + t).sum(dim=(2, 3)) - inter
    return (1 - inter / union.clamp_min(torch.finfo(union.dtype).tiny)).mean()


def soft_dice_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``mean_b(1 - 2 sum(p t) / (sum p + sum t))`` with ``p = sigmoid(logits)``."""
    x, t = _logits_and_target(logits, masks)
    p = torch.sigmoid(x)
    inter = (p * t).sum(dim=(2, 3))
    total = p.sum(dim=(2, 3)) + t.sum(dim=(2, 3))
    return (1 - 2 * inter / total.clamp_min(torch.finfo(total.dtype).tiny)).mean()


def bce_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, the mean over every pixel of the batch."""
    x, t = _logits_and_target(logits, masks)
    return F.binary_cross_entropy_with_logits(x, t)


def seg_loss_parts(logits: torch.Tensor, masks: torch.Tensor, kind: str = "bce_iou") -> dict[str, torch.Tensor]:
    """The loss ``kind`` (``bce_iou`` or ``bce_dice``) of mask ``logits`` against 0/1 ``masks``, by part: ``bce`` and
    ``iou_loss`` (1 - soft IoU) or ``dice_loss`` (1 - soft Dice)."""
    if kind not in SEG_LOSSES:
        raise ValueError(f"segmentation loss must be one of {', '.join(SEG_LOSSES)}, got {kind!r}")
    if kind == "bce_iou":
        return {"bce": bce_loss(logits, masks), "iou_loss": soft_iou_loss(logits, masks)}
    return {"bce": bce_loss(logits, masks), "dice_loss": soft_dice_loss(logits, masks)}


def seg_loss(logits: torch.Tensor, masks: torch.Tensor, kind: str = "bce_iou") -> torch.Tensor:
    """The sum of :func:`seg_loss_parts`."""
    return sum(seg_loss_parts(logits, masks, kind).values())


@OBJECTIVES.register("seg")
@dataclass(kw_only=True)
class SegConfig(ObjectiveConfig):
    """BCE on the mask logits plus 1 - soft IoU (the GPS / SAM-Adapter release's loss) or 1 - soft Dice: the
    ``segment`` task's objective, which follows ``task.loss`` when the run names no objective.

    Args:
        loss: ``bce_iou`` (BCE + 1 - soft IoU, per image, batch mean: the release's) or ``bce_dice`` (BCE + 1 - soft
            Dice); it must be the task's ``loss``.
    """

    loss: Literal["bce_iou", "bce_dice"] = "bce_iou"

    tasks: ClassVar[tuple[str, ...]] = ("segment",)

    def attach(self, backbone) -> SegObjective:
        return SegObjective(self)


class SegObjective(Objective):
    def __init__(self, cfg: SegConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, model, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``labels``: the batch's masks, uint8 ``[B, H, W]`` of 0 and 1 at the input size."""
        logits = model(images)
        parts = seg_loss_parts(logits, labels, self.cfg.loss)
        loss = sum(parts.values())
        return {"loss": loss, "logits": logits, **{k: v.detach() for k, v in parts.items()}}
