"""Segmentation metrics (issue 18) on hand-made masks, every value worked out by hand below: per-image and pooled Dice
and IoU with false positives counted, the empty-mask rule, and the GPS release's official metric (mmseg with
``ignore_index=0``), which scores an all-foreground prediction 100."""

import math

import pytest
import torch

from vpeft.metrics_seg import (
    OFFICIAL_METRIC_WARNING,
    SegCounts,
    confusion,
    dice_iou,
    official_prediction,
    seg_metrics,
)
from vpeft.tasks.segment import SegmentConfig

# Three 2x3 images. A: TP 1, FP 1, FN 1. B: nothing true, nothing predicted. C: TP 5, FP 0, FN 1.
GT = torch.tensor(
    [
        [[1, 1, 0], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 0]],
        [[1, 1, 1], [1, 1, 1]],
    ],
    dtype=torch.uint8,
)
PRED = torch.tensor(
    [
        [[1, 0, 0], [1, 0, 0]],
        [[0, 0, 0], [0, 0, 0]],
        [[1, 1, 1], [1, 1, 0]],
    ],
    dtype=torch.uint8,
)


def test_counts_and_per_image_values_by_hand():
    tp, fp, fn = confusion(PRED, GT)
    assert tp.tolist() == [1, 0, 5] and fp.tolist() == [1, 0, 0] and fn.tolist() == [1, 0, 1]
    dice, iou = dice_iou(tp, fp, fn)
    assert dice.tolist() == pytest.approx([2 / 4, 1.0, 10 / 11])  # B: both empty scores 1
    assert iou.tolist() == pytest.approx([1 / 3, 1.0, 5 / 6])


def test_per_image_and_pooled_by_hand():
    m = seg_metrics(PRED, GT)
    assert m["dice"] == pytest.approx(100 * (0.5 + 1 + 10 / 11) / 3)
    assert m["iou"] == pytest.approx(100 * (1 / 3 + 1 + 5 / 6) / 3)
    # pooled: TP 6, FP 1, FN 2 over the 18 pixels
    assert m["dice_pooled"] == pytest.approx(100 * 12 / 15)
    assert m["iou_pooled"] == pytest.approx(100 * 6 / 9)
    assert set(m) == {"dice", "iou", "dice_pooled", "iou_pooled"}  # the official pair only when asked


def test_pooled_and_per_image_differ_when_objects_differ_in_size():
    # A large object found exactly (12 px) and a one-pixel object missed: per image 1 and 0, pooled 12 of 13 found.
    gt = torch.zeros(2, 4, 4, dtype=torch.uint8)
    gt[0, :3] = 1
    gt[1, 3, 3] = 1
    pred = gt.clone()
    pred[1] = 0
    m = seg_metrics(pred, gt)
    assert m["dice"] == pytest.approx(50.0) and m["iou"] == pytest.approx(50.0)
    assert m["dice_pooled"] == pytest.approx(100 * 24 / 25) and m["iou_pooled"] == pytest.approx(100 * 12 / 13)


def test_empty_masks():
    empty = torch.zeros(2, 3, 3, dtype=torch.uint8)
    m = seg_metrics(empty, empty)  # nothing to find, nothing found: 100
    assert m == {"dice": 100.0, "iou": 100.0, "dice_pooled": 100.0, "iou_pooled": 100.0}
    one = empty.clone()
    one[0, 1, 1] = 1  # a false positive on an empty ground truth scores 0 for that image
    m = seg_metrics(one, empty)
    assert m["dice"] == pytest.approx(50.0) and m["iou"] == pytest.approx(50.0)
    assert m["dice_pooled"] == 0.0 and m["iou_pooled"] == 0.0
    m = seg_metrics(empty, one)  # a missed object: 0 for that image
    assert m["dice"] == pytest.approx(50.0) and m["dice_pooled"] == 0.0


def test_all_foreground_scores_100_officially_and_far_less_in_truth():
    # 4x4 ground truth with 2 foreground pixels; the prediction marks every pixel.
    gt = torch.zeros(1, 4, 4, dtype=torch.uint8)
    gt[0, 0, :2] = 1
    pred = torch.ones_like(gt)
    m = seg_metrics(pred, gt, official_pred=pred)
    assert m["official_dice"] == pytest.approx(100.0) and m["official_iou"] == pytest.approx(100.0)
    # TP 2, FP 14, FN 0: Dice 4 / 18, IoU 2 / 16
    assert m["dice"] == pytest.approx(100 * 4 / 18) and m["iou"] == pytest.approx(100 * 2 / 16)
    assert m["dice_pooled"] == pytest.approx(100 * 4 / 18) and m["iou_pooled"] == pytest.approx(12.5)


def test_official_metric_is_recall_and_pooled_by_hand():
    m = seg_metrics(PRED, GT, official_pred=PRED)
    # TP 6 of |GT| 8 pixels: "IoU" 6/8, "Dice" 12/14; the false positive of image A does not count.
    assert m["official_iou"] == pytest.approx(100 * 6 / 8) and m["official_dice"] == pytest.approx(100 * 12 / 14)
    empty = torch.zeros(1, 2, 2, dtype=torch.uint8)
    m = seg_metrics(torch.ones_like(empty), empty, official_pred=torch.ones_like(empty))
    assert math.isnan(m["official_dice"]) and math.isnan(m["official_iou"])  # as mmseg: 0/0
    assert m["dice"] == 0.0


def test_the_official_threshold_is_the_releases():
    # sigmoid * 255 > 128, i.e. sigmoid > 0.50196: logit 0.005 (p = 0.50125) is foreground for sigmoid > 0.5 only.
    probs = torch.sigmoid(torch.tensor([0.005, 0.03, -0.1]))
    assert official_prediction(probs).tolist() == [False, True, False]
    assert (probs > 0.5).tolist() == [True, True, False]


class _Recorder:
    """A stand-in for an enabled :class:`~vpeft.engine.distributed.Dist` that records what a process sends."""

    enabled = True
    values = None

    def sum_floats(self, values):
        self.values = list(values)
        return values


class _PlusOther:
    """A stand-in for a two-process Dist: the sum adds the other process's numbers."""

    enabled = True

    def __init__(self, other):
        self.other = other

    def sum_floats(self, values):
        return [a + b for a, b in zip(values, self.other)]


def test_counts_accumulate_over_batches_and_combine_over_processes():
    whole = SegCounts(official=True)
    whole.update(PRED.bool(), GT, PRED.bool())
    whole.sync()
    first, second = SegCounts(official=True), SegCounts(official=True)
    first.update(PRED[:1].bool(), GT[:1], PRED[:1].bool())
    second.update(PRED[1:2].bool(), GT[1:2], PRED[1:2].bool())
    second.update(PRED[2:].bool(), GT[2:], PRED[2:].bool())  # two batches
    sent = _Recorder()
    second.sync(sent)
    first.sync(_PlusOther(sent.values))
    assert first.images == 3 and (first.tp, first.fp, first.fn, first.official_tp) == (6, 1, 2, 6)
    assert first.compute() == pytest.approx(whole.compute())
    assert second.images == 2  # without the other's numbers: its own share


def test_the_official_switch_is_named_and_warned():
    cfg = SegmentConfig(metric="official")
    assert cfg.primary_metric == "official_dice" and SegmentConfig(metric="official", primary="iou").primary_metric == (
        "official_iou"
    )
    assert (
        SegmentConfig().primary_metric == "dice" and SegmentConfig(primary="iou_pooled").primary_metric == "iou_pooled"
    )
    with pytest.warns(UserWarning) as caught:
        task = cfg.build("imagenet")
    assert [str(w.message) for w in caught] == [OFFICIAL_METRIC_WARNING]
    assert "false positives never count" in OFFICIAL_METRIC_WARNING and "100" in OFFICIAL_METRIC_WARNING
    metric = task.metric()
    logits = torch.full((1, 1, 4, 4), 5.0)  # all foreground
    gt = torch.zeros(1, 4, 4, dtype=torch.uint8)
    gt[0, 0, 0] = 1
    metric.update(logits, {"mask": gt})
    metric.sync(type("NoDist", (), {"enabled": False})())
    keys = task.result_keys(metric, None)
    assert keys["seg_metric"] == "official" and keys["seg_metric_warning"] == OFFICIAL_METRIC_WARNING
    assert keys["test_official_dice"] == pytest.approx(100.0) and keys["test_dice"] == pytest.approx(100 * 2 / 17)
    assert keys["test_images"] == 1 and keys["val_official_dice"] is None
