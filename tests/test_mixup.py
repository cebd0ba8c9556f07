"""Label mixing and smoothing (``train.mixup``, ``cutmix``, ``smoothing``: timm's ``Mixup``) and soft targets in the
objectives; end to end with timm's RandAugment and random erasing."""

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.data.mixup import Mixup

from vpeft.config import DataConfig, RunConfig, TrainConfig
from vpeft.data import augment as A
from vpeft.engine.trainer import train
from vpeft.errors import ConfigError
from vpeft.objectives.ce import CEConfig
from vpeft.objectives.gist import GISTConfig, gist_loss
from vpeft.objectives.idat import IDATConfig, idat_loss
from vpeft.registry import TASKS

SMALL = "vit_tiny_patch16_224:img_size=16,patch_size=8,embed_dim=16,depth=1,num_heads=2"
TEACHER = "vit_tiny_patch16_224:img_size=16,patch_size=8,embed_dim=8,depth=1,num_heads=2"
NOAH = {"mixup": 0.8, "cutmix": 1.0, "smoothing": 0.1}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _fixed(monkeypatch, lam, cutmix):
    monkeypatch.setattr(Mixup, "_params_per_batch", lambda self: (lam, cutmix))


def test_mixup_by_hand(monkeypatch):
    """lam 0.7, smoothing 0.1 over 4 classes: off 0.025, on 0.925; target = 0.7 y + 0.3 y.flip(0)."""
    _fixed(monkeypatch, 0.7, False)
    x = torch.randn(4, 3, 5, 5)
    images, target = A.Mixing(4, mixup=0.8, smoothing=0.1)(x.clone(), torch.tensor([0, 2, 1, 3]), _gen())
    torch.testing.assert_close(images, 0.7 * x + 0.3 * x.flip(0))
    want = [
        [0.7 * 0.925 + 0.3 * 0.025, 0.025, 0.025, 0.7 * 0.025 + 0.3 * 0.925],  # 0 mixed with 3
        [0.025, 0.7 * 0.025 + 0.3 * 0.925, 0.7 * 0.925 + 0.3 * 0.025, 0.025],  # 2 with 1
        [0.025, 0.7 * 0.925 + 0.3 * 0.025, 0.7 * 0.025 + 0.3 * 0.925, 0.025],  # 1 with 2
        [0.7 * 0.025 + 0.3 * 0.925, 0.025, 0.025, 0.7 * 0.925 + 0.3 * 0.025],  # 3 with 0
    ]
    torch.testing.assert_close(target, torch.tensor(want))
    assert want[0] == pytest.approx([0.655, 0.025, 0.025, 0.295])


def test_cutmix_by_hand(monkeypatch):
    """CutMix pastes one box of the mirror image into every image; lam becomes the share of the image kept."""
    _fixed(monkeypatch, 0.75, True)
    np.random.seed(0)
    x = torch.randn(2, 3, 8, 8)
    images, target = A.Mixing(3, cutmix=1.0)(x.clone(), torch.tensor([0, 2]), _gen(1))
    changed = (images != x).any(1)
    assert torch.equal(changed[0], changed[1])
    rows, cols = changed[0].any(1).nonzero()[:, 0], changed[0].any(0).nonzero()[:, 0]
    h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    assert changed[0].sum() == h * w > 0
    box = (slice(None), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    assert torch.equal(images[0][box], x[1][box]) and torch.equal(images[1][box], x[0][box])
    lam = 1 - h * w / 64
    torch.testing.assert_close(target, torch.tensor([[lam, 0.0, 1 - lam], [1 - lam, 0.0, lam]]))


@pytest.mark.parametrize("seed", range(16))
def test_mixing_is_timms_mixup_for_a_seeded_generator(seed):
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    kw = dict(prob=0.8, switch_prob=0.5, smoothing=0.1)
    g = _gen(seed)
    s = int(torch.randint(2**62, (1,), generator=g))
    state = random.getstate(), np.random.get_state()
    random.seed(s)
    np.random.seed(s % 2**32)
    timm = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.8, switch_prob=0.5, label_smoothing=0.1, num_classes=5)
    ref_x, ref_t = timm(x.clone(), y)
    random.setstate(state[0]), np.random.set_state(state[1])
    out_x, out_t = A.Mixing(5, mixup=0.8, cutmix=1.0, **kw)(x.clone(), y, _gen(seed))
    assert torch.equal(out_x, ref_x) and torch.equal(out_t, ref_t)
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1][1])
    torch.testing.assert_close(out_t.sum(1), torch.ones(6)) and (out_t >= 0).all()


def test_the_seeds_cover_mixup_cutmix_and_no_mix():
    """The parity test above meets every branch of timm's batch mode at these seeds."""
    kinds = set()
    x = torch.randn(4, 3, 8, 8)
    for seed in range(16):
        out, _ = A.Mixing(5, mixup=0.8, cutmix=1.0, prob=0.8)(x.clone(), torch.tensor([0, 1, 2, 3]), _gen(seed))
        diff = (out != x).any(1)
        kinds.add("none" if not diff.any() else "cutmix" if not diff.all() else "mixup")
    assert kinds == {"none", "cutmix", "mixup"}


def test_an_odd_batch_mixes_its_middle_image_with_itself(monkeypatch):
    _fixed(monkeypatch, 0.6, False)
    x, y = torch.randn(5, 3, 4, 4), torch.tensor([0, 1, 2, 1, 0])
    images, target = A.Mixing(3, mixup=0.8, smoothing=0.3)(x.clone(), y, _gen())  # timm's Mixup asserts here
    torch.testing.assert_close(images, 0.6 * x + 0.4 * x.flip(0))
    torch.testing.assert_close(images[2], x[2])
    torch.testing.assert_close(target[2], torch.tensor([0.1, 0.1, 0.8]))  # 1 - 0.3 + 0.1 on its class
    torch.testing.assert_close(target.sum(1), torch.ones(5))


def test_smoothing_alone_needs_no_draw():
    x, y, g = torch.randn(3, 3, 4, 4), torch.tensor([2, 0, 1]), _gen(3)
    state = g.get_state()
    images, target = A.Mixing(4, smoothing=0.2)(x.clone(), y, g)
    assert torch.equal(images, x) and torch.equal(g.get_state(), state)
    off, on = 0.2 / 4, 1 - 0.2 + 0.2 / 4
    want = torch.full((3, 4), off)
    want[0, 2] = want[1, 0] = want[2, 1] = on
    torch.testing.assert_close(target, want)


def test_the_task_keeps_hard_labels_beside_the_soft_targets():
    task = TASKS.build("classify").build("inception", "none", None)
    task.configure_training(DataConfig(), TrainConfig(**NOAH), num_classes=3)
    x, y = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 2, 0])
    out = task.prepare({"image": x, "label": y}, train=True, generator=_gen(2))
    assert torch.equal(out["label"], y) and out["target"].shape == (4, 3) and out["target"].dtype == torch.float32
    torch.testing.assert_close(out["target"].sum(1), torch.ones(4))
    again = task.prepare({"image": x, "label": y}, train=True, generator=_gen(2))
    assert torch.equal(out["image"], again["image"]) and torch.equal(out["target"], again["target"])
    assert "target" not in task.prepare({"image": x, "label": y}, train=False)
    assert task.loss(torch.zeros(4, 3), out).item() == pytest.approx(math.log(3))


@pytest.mark.parametrize("option", ["mixup", "cutmix", "smoothing"])
def test_regress_refuses_label_mixing(option):
    with pytest.raises(ConfigError, match=f"train option '{option}' mixes or smooths class labels; task 'regress'"):
        RunConfig.from_dict({"task": "regress", "train": {option: 0.5}})
    task = TASKS.build("regress").build("inception", "none", None)
    with pytest.raises(ConfigError, match="has real-valued targets"):
        task.configure_training(DataConfig(), TrainConfig(**{option: 0.5}), num_classes=1)
    # the image-only augmentations stay open to it
    assert RunConfig.from_dict({"task": "regress", "data": {"erasing": 0.25}}).data.erasing == 0.25


def test_an_objective_without_soft_labels_is_refused(monkeypatch):
    monkeypatch.setattr(CEConfig, "soft_labels", False)
    with pytest.raises(ConfigError, match="which objective 'ce' does not train on"):
        RunConfig.from_dict({"train": {"smoothing": 0.1}})
    RunConfig.from_dict({"train": {"smoothing": 0.0}})


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("mixup", -0.1, "alpha >= 0"),
        ("cutmix", float("inf"), "alpha >= 0"),
        ("mixup_prob", 1.5, "probability"),
        ("mixup_switch_prob", -1, "probability"),
        ("smoothing", 1.0, r"in \[0, 1\)"),
        ("smoothing", float("nan"), r"in \[0, 1\)"),
    ],
)
def test_mixing_options_are_validated(option, value, message):
    with pytest.raises(ConfigError, match=f"train option '{option}' must be .*{message}"):
        TrainConfig(**{option: value})


def test_every_objective_takes_one_hot_targets_as_labels():
    """Soft targets that are one-hot give each classification objective's loss on the class indices."""
    torch.manual_seed(0)
    z, z2, y = (
        torch.randn(5, 4, dtype=torch.float64),
        torch.randn(5, 4, dtype=torch.float64),
        torch.tensor([0, 3, 1, 1, 2]),
    )
    one_hot = F.one_hot(y, 4).double()
    for hard, soft in (
        (gist_loss(z, z2, y, GISTConfig()), gist_loss(z, z2, one_hot, GISTConfig())),
        (idat_loss(z, z2, y, IDATConfig()), idat_loss(z, z2, one_hot, IDATConfig())),
    ):
        assert hard.keys() == soft.keys() and all(torch.allclose(hard[k], soft[k]) for k in hard)
    # and a soft target is the expected cross-entropy over it
    t = torch.softmax(torch.randn(5, 4, dtype=torch.float64), -1)
    ce = -(t * torch.log_softmax(z, -1)).sum(-1).mean()
    assert gist_loss(z, z2, t, GISTConfig(mu=0, lam=0))["loss"].item() == pytest.approx(ce.item(), rel=1e-12)
    assert idat_loss(z, z2, t, IDATConfig())["ce_student"].item() == pytest.approx(ce.item(), rel=1e-12)


def _noah_cfg(root, objective, **train):
    t = {"epochs": 2, "batch_size": 5, "lr": 1e-2, "warmup_epochs": 1, **NOAH, **train}
    return RunConfig.from_dict(
        {
            "backbone": {"spec": SMALL},
            "method": "bitfit",
            "objective": objective,
            "data": {
                "root": str(root),
                "augment": "crop_flip_randaug",
                "randaug": "rand-m9-mstd0.5-inc1",
                "erasing": 0.25,
            },
            "train": t,
        }
    )


@pytest.mark.parametrize("objective", ["ce", "gist", {"name": "idat", "teacher": TEACHER}])
def test_noahs_recipe_trains_every_classification_objective(small_task, tmp_path, objective):
    """36 training images (train800val200) in batches of 5 and a last one of 1: all odd, which timm's Mixup alone
    refuses."""
    result = train(_noah_cfg(small_task, objective), tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(math.isfinite(e["loss"]) and e["loss"] > 0 for e in log)
    assert 0 <= result["test_acc"] <= 100 and 0 <= log[-1]["train_acc"] <= 100
    if isinstance(objective, dict):
        assert 0 <= log[-1]["teacher_acc"] <= 100 and result["teacher"]["train_acc_last_epoch"] is not None
    if objective == "gist":
        assert {"ce_cls", "ce_gist", "kl_fwd", "kl_rev"} <= set(log[0])


class Killed(Exception):
    pass


def test_a_resumed_run_augments_and_mixes_as_the_uninterrupted_one(small_task, tmp_path):
    cfg = _noah_cfg(small_task, "ce", epochs=3, batch_size=6)  # even batches: timm's own Mixup.__call__
    straight = train(cfg, tmp_path / "a", progress=False)
    again = train(cfg, tmp_path / "same", progress=False)
    assert again["test_acc"] == straight["test_acc"]

    def kill_after_1(epoch, entry):
        if epoch == 1:
            raise Killed()

    with pytest.raises(Killed):
        train(cfg, tmp_path / "b", progress=False, on_epoch_end=kill_after_1)
    assert (tmp_path / "b" / "state.pt").is_file()
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    assert resumed["test_acc"] == straight["test_acc"]
    strip = lambda p: [{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in p.read_text().splitlines()]  # noqa
    assert (
        strip(tmp_path / "a" / "log.jsonl")
        == strip(tmp_path / "b" / "log.jsonl")
        == strip(tmp_path / "same" / "log.jsonl")
    )
    # and the options are the run's identity: a plain run is another run
    train(
        _noah_cfg(small_task, "ce", epochs=3, batch_size=6, mixup=0.0, cutmix=0.0, smoothing=0.0),
        tmp_path / "c",
        progress=False,
    )
    assert strip(tmp_path / "c" / "log.jsonl") != strip(tmp_path / "a" / "log.jsonl")


def test_the_trainer_hands_the_objective_the_smoothed_targets(small_task, tmp_path):
    """train.smoothing trains as ce's own label_smoothing does (the same loss, reached through soft targets)."""
    base = {"backbone": {"spec": SMALL}, "method": "bitfit", "data": {"root": str(small_task)}}
    t = {"epochs": 2, "batch_size": 8, "lr": 1e-2}
    soft = train(RunConfig.from_dict({**base, "train": {**t, "smoothing": 0.2}}), tmp_path / "a", progress=False)
    own = train(
        RunConfig.from_dict({**base, "objective": "ce:label_smoothing=0.2", "train": t}), tmp_path / "b", progress=False
    )
    train(RunConfig.from_dict({**base, "train": t}), tmp_path / "c", progress=False)
    logs = [[json.loads(x) for x in (tmp_path / r / "log.jsonl").read_text().splitlines()] for r in "abc"]
    assert [e["loss"] for e in logs[0]] == pytest.approx([e["loss"] for e in logs[1]], rel=1e-5)
    assert logs[0][0]["loss"] != pytest.approx(logs[2][0]["loss"], rel=1e-3)
    assert own["test_acc"] == pytest.approx(soft["test_acc"])
