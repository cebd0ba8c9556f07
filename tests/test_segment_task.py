"""The ``segment`` task and its ``seg`` objective (issue 18): the release's loss and the Dice variant by hand on a
2x2 toy, the options a segmentation run refuses, the flip that keeps image and mask aligned, and a tiny stand-in
segmentation model trained and evaluated through the task / objective / metric API on generated data."""

import math

import pytest
import torch
from torch import nn

from vpeft.config import RunConfig
from vpeft.data.loader import DeviceData, batch_len, batch_targets
from vpeft.data.synth_seg import generate_seg
from vpeft.data.vtab import NORMALIZATION, load_split
from vpeft.errors import ConfigError
from vpeft.metrics_seg import seg_metrics
from vpeft.objectives.seg import SegConfig, seg_loss, seg_loss_parts
from vpeft.registry import OBJECTIVES, TASKS
from vpeft.run import evaluate_task
from vpeft.tasks.segment import SegmentConfig, flip_pairs

L3 = math.log(3.0)
#: One 2x2 image: logits 0, ln 3, -ln 3, 0 give sigmoids 0.5, 0.75, 0.25, 0.5; the mask's top row is foreground.
LOGITS = torch.tensor([[[[0.0, L3], [-L3, 0.0]]]])
MASK = torch.tensor([[[1, 1], [0, 0]]], dtype=torch.uint8)


def test_the_releases_loss_by_hand_on_a_2x2_toy():
    parts = seg_loss_parts(LOGITS, MASK, "bce_iou")
    # BCE: -ln 0.5, -ln 0.75, -ln 0.75, -ln 0.5 averaged = ln(8/3) / 2
    assert parts["bce"].item() == pytest.approx(math.log(8 / 3) / 2, rel=1e-6)
    # soft IoU: sum(p t) = 1.25, sum(p + t) = 4, union 2.75: 1 - 5/11
    assert parts["iou_loss"].item() == pytest.approx(6 / 11, rel=1e-6)
    assert seg_loss(LOGITS, MASK).item() == pytest.approx(math.log(8 / 3) / 2 + 6 / 11, rel=1e-6)
    dice = seg_loss_parts(LOGITS, MASK, "bce_dice")
    # soft Dice: 2 * 1.25 / (2 + 2) = 0.625
    assert set(dice) == {"bce", "dice_loss"} and dice["dice_loss"].item() == pytest.approx(0.375, rel=1e-6)


def test_the_overlap_term_is_per_image_and_the_bce_per_pixel():
    # A second image: logits 0 (sigmoid 0.5), an empty mask: BCE ln 2 a pixel, soft IoU 0 (loss 1), soft Dice 0.
    logits = torch.cat([LOGITS, torch.zeros(1, 1, 2, 2)])
    masks = torch.cat([MASK, torch.zeros(1, 2, 2, dtype=torch.uint8)])
    parts = seg_loss_parts(logits, masks, "bce_iou")
    assert parts["bce"].item() == pytest.approx((2 * math.log(8 / 3) + 4 * math.log(2)) / 8, rel=1e-6)
    assert parts["iou_loss"].item() == pytest.approx((6 / 11 + 1) / 2, rel=1e-6)  # the batch mean of per-image terms
    assert seg_loss_parts(logits, masks, "bce_dice")["dice_loss"].item() == pytest.approx((0.375 + 1) / 2, rel=1e-6)


def test_the_objective_trains_the_tasks_loss_and_logs_its_parts():
    model = nn.Identity()
    obj = OBJECTIVES.build("seg").attach(None)
    out = obj(model, LOGITS.clone().requires_grad_(), MASK)
    assert set(out) == {"loss", "logits", "bce", "iou_loss"}
    assert out["loss"].item() == pytest.approx(seg_loss(LOGITS, MASK).item())
    task = SegmentConfig().build()
    assert task.loss(LOGITS, {"mask": MASK}).item() == pytest.approx(out["loss"].item())
    assert task.predict(LOGITS).tolist() == [[[0, 1], [0, 0]]]  # sigmoid > 0.5: 0.5 itself is background
    with pytest.raises(ValueError, match=r"logits are 1x2 but the masks are 2x2: masks are compared at the input size"):
        obj(model, LOGITS[..., :1, :], MASK)
    with pytest.raises(ValueError, match=r"needs mask logits \[B, 1, H, W\].*returned \[1, 3\]"):
        obj(model, torch.zeros(1, 3), MASK)


def test_a_segmentation_run_names_its_objective_and_refuses_the_others(tmp_path):
    data = {"root": str(tmp_path), "format": "segfolder"}
    cfg = RunConfig.from_dict({"task": "segment", "data": data})
    assert isinstance(cfg.objective, SegConfig) and cfg.objective.loss == "bce_iou"
    cfg = RunConfig.from_dict({"task": {"name": "segment", "loss": "bce_dice"}, "data": data})
    assert cfg.objective.loss == "bce_dice"  # the objective follows the task's loss
    assert RunConfig.from_dict(cfg.to_dict()).objective.loss == "bce_dice"  # and reads back from the record
    with pytest.raises(ConfigError, match=r"trains with loss 'bce_iou' but task.loss is 'bce_dice'"):
        RunConfig.from_dict({"task": "segment:loss=bce_dice", "objective": "seg", "data": data})
    for name in ("ce", "gist", "idat"):
        with pytest.raises(ConfigError, match=f"objective '{name}' does not train task 'segment'"):
            RunConfig.from_dict({"task": "segment", "objective": name, "data": data})
    with pytest.raises(ConfigError, match="objective 'seg' does not train task 'classify'"):
        RunConfig.from_dict({"objective": "seg"})
    for option in ("mixup", "cutmix", "smoothing"):
        with pytest.raises(ConfigError, match=f"train option '{option}' mixes or smooths class labels; task 'segment'"):
            RunConfig.from_dict({"task": "segment", "data": data, "train": {option: 0.5}})
    with pytest.raises(ConfigError, match="data.augment='crop_flip' crops images without their masks"):
        TASKS.build("segment").build("inception", "crop_flip", (32, 32))
    task = TASKS.build("segment").build("imagenet")
    erasing = RunConfig.from_dict({"task": "segment", "data": {**data, "erasing": 0.25}})
    with pytest.raises(ConfigError, match="data option 'erasing' erases boxes of the image and not of its mask"):
        task.configure_training(erasing.data, erasing.train, 1, erasing.objective)
    assert SegmentConfig().outputs == 1 and SegmentConfig().higher_is_better


def _aligned_batch(n=16, size=8, seed=0):
    """Images whose red channel is 255 exactly where the mask is 1, asymmetric left to right."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        x, y = torch.randint(0, size // 2, (2,), generator=g).tolist()
        masks[i, y : y + 3, x : x + 2] = 1
    images = torch.randint(0, 100, (n, 3, size, size), dtype=torch.uint8, generator=g)
    images[:, 0] = masks * 255
    return {"image": images, "mask": masks}


def test_training_flips_image_and_mask_together():
    batch = _aligned_batch()
    task = SegmentConfig().build("imagenet")
    out = task.prepare(batch, train=True, generator=torch.Generator().manual_seed(3))
    mean, std = NORMALIZATION["imagenet"]
    red = out["image"][:, 0] * std[0] + mean[0]  # back to [0, 1]
    assert torch.equal((red > 0.5).to(torch.uint8), out["mask"])  # every image still on its mask
    flipped = [not torch.equal(out["mask"][i], batch["mask"][i]) for i in range(16)]
    assert 0 < sum(flipped) < 16  # some flipped, some not
    for i in range(16):
        expect = batch["mask"][i].flip(-1) if flipped[i] else batch["mask"][i]
        assert torch.equal(out["mask"][i], expect)
    again = task.prepare(batch, train=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again["mask"], out["mask"]) and torch.equal(again["image"], out["image"])  # seeded
    test = task.prepare(batch, train=False)
    assert torch.equal(test["mask"], batch["mask"])  # no flip outside training
    off = SegmentConfig(flip=False).build("imagenet").prepare(batch, train=True, generator=torch.Generator())
    assert torch.equal(off["mask"], batch["mask"])
    images, masks = flip_pairs(batch["image"], batch["mask"], torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(images, batch["image"].flip(-1)) and torch.equal(masks, batch["mask"].flip(-1))


class TinySeg(nn.Module):
    """A stand-in segmentation model: mask logits [B, 1, H, W] at the input size from two convolutions."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))

    def forward(self, x):
        return self.net(x)


def test_a_stand_in_model_trains_and_scores_through_the_task(tmp_path):
    root = generate_seg(tmp_path / "seg", size=16, n_test=60)
    train = load_split(root, "train", (16, 16), fmt="segfolder", labels="mask")
    test = load_split(root, "test", (16, 16), fmt="segfolder", labels="mask")
    cfg = RunConfig.from_dict({"task": "segment", "data": {"root": str(root), "normalize": "imagenet"}})
    task = cfg.task.build(cfg.data.normalize)
    torch.manual_seed(0)
    model, objective = TinySeg(), cfg.objective.attach(None)
    before = evaluate_task(model, objective, test, task, 32, "cpu")
    before.sync(type("NoDist", (), {"enabled": False})())
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    data = DeviceData(train, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(3):
        metric = task.metric()
        for batch, n in data.mappings(32, torch.randperm(len(data), generator=gen)):
            batch = task.prepare(batch, train=True, generator=gen)
            out = objective(model, batch["image"], batch_targets(batch))
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            metric.update(out["logits"], batch)
            losses.append(out["loss"].item())
            assert batch_len(batch) == n and set(out) == {"loss", "logits", "bce", "iou_loss"}
        metric.sync(type("NoDist", (), {"enabled": False})())
        assert metric.images == 240
    after = evaluate_task(model, objective, test, task, 32, "cpu")
    after.sync(type("NoDist", (), {"enabled": False})())
    m = after.compute()
    assert sum(losses[-5:]) < sum(losses[:5])
    assert m["dice"] > before.compute()["dice"] + 20 and m["dice"] > 75, (before.compute(), m)
    # the metric state agrees with the reference computed on the whole split at once
    model.eval()
    with torch.no_grad():
        logits = model(task.prepare({"image": test.images, "mask": test.masks}, train=False)["image"])
    assert m == pytest.approx(seg_metrics(torch.sigmoid(logits[:, 0]) > 0.5, test.masks))
    keys = task.result_keys(after, {"dice": 1.0})
    assert keys["test_dice"] == m["dice"] and keys["test_iou_pooled"] == m["iou_pooled"]
    assert keys["test_images"] == 60 and keys["val_dice"] == 1.0 and keys["seg_metric"] == "standard"
    assert "seg_metric_warning" not in keys
