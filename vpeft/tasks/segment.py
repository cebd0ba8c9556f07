"""``segment``: binary segmentation, one mask per image (the GPS paper's polyp segmentation with SAM, Table 5).

The data are images with their masks (the ``segfolder`` layout); a batch is ``{"image", "mask"}``, the masks uint8
``[B, H, W]`` of 0 and 1 at the input size. The model returns mask logits ``[B, 1, H, W]`` at the input size; the
prediction is ``sigmoid > 0.5``. Metrics (:mod:`vpeft.metrics_seg`, in percent): per-image Dice and IoU averaged
over the images (``dice``, the primary, and ``iou``) and pooled over the split's pixels (``dice_pooled``,
``iou_pooled``), false positives counted. ``metric=official`` adds the release's ``official_dice`` and
``official_iou`` (false positives ignored), makes them primary, records it and warns.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from ..data.vtab import normalize
from ..errors import ConfigError
from ..metrics_seg import OFFICIAL_METRIC_WARNING, SegCounts, official_prediction
from ..objectives.seg import seg_loss  # the task's loss, importable from here
from ..registry import TASKS
from ..seg_prompts import ground_truth
from .base import Batch, Metric, Task, TaskConfig

PRIMARY = ("dice", "iou", "dice_pooled", "iou_pooled")


def flip_pairs(
    images: torch.Tensor, masks: torch.Tensor, generator: Optional[torch.Generator] = None, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image ``[B, C, H, W]`` and its mask ``[B, H, W]`` flipped left-right together with probability ``p``,
    the draws (one per image, on the CPU) from ``generator``."""
    flip = torch.rand(len(images), generator=generator) < p
    if not flip.any():
        return images, masks
    on = flip.to(images.device)
    return (
        torch.where(on.view(-1, 1, 1, 1), images.flip(-1), images),
        torch.where(on.view(-1, 1, 1), masks.flip(-1), masks),
    )


class SegMetric(Metric):
    """Dice and IoU per image and pooled (and, with ``official``, the release's pair), counted on the device."""

    def __init__(self, official: bool = False):
        self.counts = SegCounts(official)

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        masks = batch["mask"]
        logits = outputs.detach()
        if logits.dim() != 4 or logits.shape[1] != 1 or logits.shape[-2:] != masks.shape[-2:]:
            raise ValueError(
                f"segmentation scores mask logits [B, 1, H, W] at the masks' size {list(masks.shape[-2:])}; the model "
                f"returned {list(logits.shape)}"
            )
        probs = torch.sigmoid(logits[:, 0].float())
        official = official_prediction(probs) if self.counts.official else None
        self.counts.update(probs > 0.5, masks, official)

    def sync(self, dist) -> None:
        self.counts.sync(dist)

    def compute(self) -> dict[str, float]:
        return self.counts.compute()

    @property
    def images(self) -> int:
        return int(self.counts.images)


@TASKS.register("segment")
@dataclass(kw_only=True)
class SegmentConfig(TaskConfig):
    """Binary segmentation: mask logits at the input size, BCE + 1 - soft IoU, Dice and IoU with false positives.

    Reads the ``segfolder`` layout (images and their masks); trains with objective ``seg`` (which follows ``loss``).
    Training flips each image and its mask left-right together with probability 0.5 (``flip``; the release's only
    augmentation); ``data.augment`` stays ``none``, and mixing, smoothing and random erasing are refused. Metrics in
    percent: ``dice`` and ``iou`` per image (an image with nothing true and nothing predicted scores 100), averaged;
    ``dice_pooled`` and ``iou_pooled`` over every pixel of the split.

    Args:
        loss: ``bce_iou``: BCE with logits + (1 - soft IoU from the sigmoids, per image, batch mean), the GPS /
            SAM-Adapter release's; ``bce_dice``: BCE + (1 - soft Dice).
        metric: ``standard``: Dice and IoU with false positives counted. ``official``: also the release's metric
            (mmseg's ``eval_metrics`` with ``ignore_index=0``: "IoU" = TP/|GT|, "Dice" = 2TP/(TP+|GT|), pooled;
            an all-foreground mask scores 100), as ``official_dice`` and ``official_iou``, which then select and
            head the reports; recorded in ``result.json`` (``seg_metric``) and warned. Only to compare with the
            release's numbers.
        primary: The metric that selects epochs (``train.select=val``) and grid points and heads the reports:
            ``dice`` (per image, the default), ``iou``, ``dice_pooled`` or ``iou_pooled``; with ``metric=official``
            its kind picks ``official_dice`` or ``official_iou``.
        flip: Flip each training image and its mask left-right together with probability 0.5.
    """

    loss: Literal["bce_iou", "bce_dice"] = "bce_iou"
    metric: Literal["standard", "official"] = "standard"
    primary: Literal["dice", "iou", "dice_pooled", "iou_pooled"] = "dice"
    flip: bool = True

    labels = "mask"
    outputs = 1
    objectives = ("seg",)

    @property
    def default_objective(self) -> dict:  # the objective follows the task's loss
        return {"name": "seg", "loss": self.loss}

    @property
    def primary_metric(self) -> str:
        if self.metric == "official":
            return "official_iou" if self.primary.startswith("iou") else "official_dice"
        return self.primary

    def check(self, data_format: str, objective) -> None:
        super().check(data_format, objective)
        loss = getattr(objective, "loss", self.loss)
        if loss != self.loss:
            raise ConfigError(
                f"objective {objective.name!r} trains with loss {loss!r} but task.loss is {self.loss!r}: make them "
                f"agree (objective.loss={self.loss}), or leave the objective unset: it follows task.loss"
            )

    def build(
        self, normalize: str = "inception", augment: str = "none", size: Optional[tuple[int, int]] = None
    ) -> SegmentTask:
        if augment != "none":
            raise ConfigError(
                f"data.augment={augment!r} crops images without their masks; task 'segment' augments by flipping "
                "image and mask together (task.flip): set data.augment=none"
            )
        if self.metric == "official":
            warnings.warn(OFFICIAL_METRIC_WARNING, stacklevel=2)
        return SegmentTask(self, normalize, augment, size)


class SegmentTask(Task):
    cfg: SegmentConfig

    def configure_training(self, data, train, num_classes: int, objective=None) -> None:
        if getattr(data, "erasing", 0.0):
            raise ConfigError(
                "data option 'erasing' erases boxes of the image and not of its mask; task 'segment' does not take "
                "it: leave data.erasing at 0"
            )
        super().configure_training(data, train, num_classes, objective)

    def prepare(self, batch: Batch, train: bool, generator: Optional[torch.Generator] = None) -> dict:
        """The images (in training flipped with their masks, draws from ``generator``) normalised to float32; the
        masks stay uint8 ``[B, H, W]``."""
        images, masks = batch["image"], batch["mask"]
        if train and self.cfg.flip and len(images):
            images, masks = flip_pairs(images, masks, generator)
        return {**batch, "image": normalize(images, self.normalize), "mask": masks}

    def model_context(self, batch: Batch):
        """The batch's ground-truth masks, published to prompted models (SAM in prompt mode ``box`` or ``points``)."""
        return ground_truth(batch["mask"])

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return seg_loss(outputs, batch["mask"], self.cfg.loss)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Binary masks uint8 ``[B, H, W]``: ``sigmoid(logits) > 0.5``."""
        return (torch.sigmoid(outputs[:, 0].float()) > 0.5).to(torch.uint8)

    def metric(self) -> SegMetric:
        return SegMetric(official=self.cfg.metric == "official")

    def result_keys(self, test: Metric, val: Optional[dict]) -> dict:
        primary = self.cfg.primary_metric
        out = {f"test_{k}": v for k, v in test.compute().items()}
        out["test_images"] = test.images
        out[f"val_{primary}"] = val[primary] if val is not None else None
        out["seg_metric"] = self.cfg.metric
        if self.cfg.metric == "official":
            out["seg_metric_warning"] = OFFICIAL_METRIC_WARNING
        return out
