"""Dice and IoU of binary segmentation masks, counted so that false positives count (issue 18).

Two standard forms, both in percent:

* **per image** (``dice``, ``iou``): each image's Dice ``2TP / (2TP + FP + FN)`` and IoU ``TP / (TP + FP + FN)``,
  averaged over the images. An image whose ground truth and prediction are both empty scores 1 for both (the model
  rightly found nothing; 0/0 otherwise has no value, and leaving such images out would reward predicting nothing on
  them less than predicting something). An image with an empty ground truth and any predicted pixel scores 0.
* **pooled** (``dice_pooled``, ``iou_pooled``): TP, FP and FN summed over every pixel of the split, then the same
  formulas (large objects weigh more). A split with no foreground anywhere, predicted or true, scores 1.

The **official** form (``official_dice``, ``official_iou``) is what the GPS / SAM-Adapter release reports
(``SAM/test.py``: mmseg's ``eval_metrics`` with two classes and ``ignore_index=0``, read for class 1). Ignoring label
0 drops every background pixel of the ground truth before counting, so a false positive never counts: "IoU" is
``TP / |GT|`` (the recall) and "Dice" ``2TP / (TP + |GT|)``, pooled over the split; an all-foreground prediction
scores 100. The release thresholds ``sigmoid * 255 > 128`` (:func:`official_prediction`), not ``sigmoid > 0.5``. With
no foreground pixel in the ground truth it is undefined (NaN, as mmseg). Use it only to compare with the release's
numbers (``task.metric=official``, warned: :data:`OFFICIAL_METRIC_WARNING`).

:class:`SegCounts` accumulates what all of these need on the device (one host read per split); :func:`seg_metrics`
computes them at once from whole masks (the tests' and the reports' reference). A leaf: it imports only torch.
"""

from __future__ import annotations

import math

import torch

#: The one warning of the official metric (``task.metric=official``): emitted when the task is built and recorded in
#: ``result.json``.
OFFICIAL_METRIC_WARNING = (
    "task.metric=official scores Dice and IoU as the GPS / SAM-Adapter release does (mmseg's eval_metrics with "
    "ignore_index=0): background pixels are dropped before counting, so false positives never count ('IoU' = TP/|GT|, "
    "the recall; 'Dice' = 2TP/(TP+|GT|)) and an all-foreground prediction scores 100. These numbers are not Dice and "
    "IoU; compare them only with the release's, and report the standard dice and iou beside them"
)


def official_prediction(probs: torch.Tensor) -> torch.Tensor:
    """The release's binary prediction from sigmoid probabilities: ``probs * 255 > 128`` (in float32)."""
    return probs.float() * 255 > 128


def confusion(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image ``(TP, FP, FN)`` pixel counts (int64 ``[B]``) of binary predictions against binary ground truths
    (both ``[B, ...]``, bool or 0/1)."""
    if pred.shape != target.shape:
        raise ValueError(f"predicted masks {tuple(pred.shape)} and ground truths {tuple(target.shape)} differ in shape")
    p, t = pred.bool().flatten(1), target.bool().flatten(1)
    tp = (p & t).sum(1)
    return tp, (p & ~t).sum(1), (~p & t).sum(1)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` in float64, 1 where ``den`` is 0 (nothing true, nothing predicted)."""
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(den))


def dice_iou(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice and IoU (fractions in [0, 1], float64) of counts, elementwise; 1 where TP + FP + FN is 0."""
    return _ratio(2 * tp, 2 * tp + fp + fn), _ratio(tp, tp + fp + fn)


def official_dice_iou(tp: float, gt: float) -> tuple[float, float]:
    """The release's "Dice" ``2TP / (TP + |GT|)`` and "IoU" ``TP / |GT|`` (fractions) of pooled counts, where TP
    counts with :func:`official_prediction`; NaN without ground-truth foreground (as mmseg)."""
    if gt <= 0:
        return math.nan, math.nan
    return 2 * tp / (tp + gt), tp / gt


class SegCounts:
    """The running counts of a split's Dice and IoU, on the device until :meth:`sync`.

    Attributes:
        dice_sum, iou_sum: Sums of the per-image Dice and IoU (fractions, float64).
        images: Images counted.
        tp, fp, fn: Pixel counts summed over the split (int64).
        official_tp: True positives under the release's threshold (:func:`official_prediction`); with ``official``.
    """

    def __init__(self, official: bool = False):
        self.official = official
        self.dice_sum: torch.Tensor | float = 0.0
        self.iou_sum: torch.Tensor | float = 0.0
        self.tp: torch.Tensor | int = 0
        self.fp: torch.Tensor | int = 0
        self.fn: torch.Tensor | int = 0
        self.official_tp: torch.Tensor | int = 0
        self.images = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor, official_pred: torch.Tensor | None = None) -> None:
        """Add binary predictions and ground truths ``[B, ...]`` (and, with ``official``, the release's predictions
        :func:`official_prediction`); nothing is read from the device."""
        tp, fp, fn = confusion(pred, target)
        dice, iou = dice_iou(tp, fp, fn)
        self.dice_sum = self.dice_sum + dice.sum()
        self.iou_sum = self.iou_sum + iou.sum()
        self.tp, self.fp, self.fn = self.tp + tp.sum(), self.fp + fp.sum(), self.fn + fn.sum()
        if self.official:
            if official_pred is None:
                raise ValueError("official counts need the release's predictions (official_pred)")
            self.official_tp = self.official_tp + confusion(official_pred, target)[0].sum()
        self.images += len(tp)

    def sync(self, dist=None) -> None:
        """Read the counts to the host (the split's one read) and, under ``torchrun`` (``dist`` enabled), sum them
        over the processes (each counted its share of every batch)."""
        values = [float(self.dice_sum), float(self.iou_sum), float(self.images)]
        values += [float(v) for v in (self.tp, self.fp, self.fn, self.official_tp)]
        if dist is not None and dist.enabled:
            values = dist.sum_floats(values)
        self.dice_sum, self.iou_sum = values[0], values[1]
        self.images, self.tp, self.fp, self.fn, self.official_tp = (int(round(v)) for v in values[2:])

    def compute(self) -> dict[str, float]:
        """The metrics in percent: ``dice``, ``iou`` (per image, averaged), ``dice_pooled``, ``iou_pooled`` and, with
        ``official``, ``official_dice``, ``official_iou``; the per-image means are NaN for a split of no image."""
        n = int(self.images)
        out = {
            "dice": 100.0 * float(self.dice_sum) / n if n else math.nan,
            "iou": 100.0 * float(self.iou_sum) / n if n else math.nan,
        }
        tp, fp, fn = (torch.tensor(int(v), dtype=torch.int64) for v in (self.tp, self.fp, self.fn))
        dice, iou = dice_iou(tp, fp, fn)
        out["dice_pooled"], out["iou_pooled"] = 100.0 * float(dice), 100.0 * float(iou)
        if self.official:
            d, i = official_dice_iou(float(self.official_tp), float(int(self.tp) + int(self.fn)))
            out["official_dice"], out["official_iou"] = 100.0 * d, 100.0 * i
        return out


def seg_metrics(pred, target, official_pred=None) -> dict[str, float]:
    """Every metric of :class:`SegCounts` (percent) of whole sets of binary masks ``[N, H, W]`` (tensors or arrays);
    with ``official_pred`` (the release's predictions) also the official pair."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    counts = SegCounts(official=official_pred is not None)
    counts.update(pred, target, None if official_pred is None else torch.as_tensor(official_pred))
    counts.sync()
    return counts.compute()
