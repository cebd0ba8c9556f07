"""timm's RandAugment (``data.randaug``) and random erasing (``data.erasing``) in vpeft's training data path."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.random_erasing import RandomErasing

from vpeft.config import DataConfig, RunConfig, TrainConfig, run_identity
from vpeft.data import augment as A
from vpeft.data.vtab import normalize
from vpeft.errors import ConfigError
from vpeft.registry import TASKS

NOAH = "rand-m9-mstd0.5-inc1"


def _images(n=6, h=30, w=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (n, 3, 5, 5), dtype=torch.uint8, generator=g)
    return torch.nn.functional.interpolate(coarse.float(), size=(h, w), mode="bilinear").round().to(torch.uint8)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _global_states():
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()


def _same_states(a, b):
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


@pytest.mark.parametrize(
    "spec, message",
    [
        ("foo", "expected a timm RandAugment string"),
        ("", "expected a timm RandAugment string"),
        ("rand-m9-foo", "unknown section 'foo'"),  # timm itself would skip it silently
        ("rand-x3", "unknown section 'x3'"),
        ("rand-m9.5", "timm cannot read"),  # int('9.5') in timm
        ("rand-mstdx", "unknown section 'mstdx'"),
        ("rand-tbar", "unknown op set 'tbar'"),
    ],
)
def test_a_bad_randaug_string_fails_at_config_time(spec, message):
    with pytest.raises(ConfigError, match=f"data option 'randaug'.*{message}") as err:
        DataConfig(randaug=spec, augment="crop_flip_randaug")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="data option 'randaug'"):
        RunConfig.from_dict({"data": {"randaug": spec, "augment": "crop_flip_randaug"}})


def test_randaug_needs_the_randaug_augmentation():
    with pytest.raises(ConfigError, match="augmentation 'none' does not run: set data.augment=crop_flip_randaug"):
        DataConfig(randaug=NOAH)  # vtab1k: no augmentation
    with pytest.raises(ConfigError, match="augmentation 'crop_flip' does not run"):
        DataConfig(randaug=NOAH, augment="crop_flip")
    assert DataConfig(randaug=NOAH, format="fewshot").randaug == NOAH  # the format's own augmentation runs it
    assert DataConfig(randaug="rand-n3-m7-p1-mmax12-tweights", augment="crop_flip_randaug").randaug


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_erasing_is_a_probability(value):
    with pytest.raises(ConfigError, match="data option 'erasing' must be a probability in"):
        DataConfig(erasing=value)


def test_the_new_options_leave_a_default_run_identity_alone():
    plain = run_identity(RunConfig.from_dict({}).to_dict())
    assert not {"randaug", "erasing"} & set(plain["data"])
    assert not {"mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "smoothing"} & set(plain["train"])
    cfg = RunConfig.from_dict({"data": {"augment": "crop_flip_randaug", "randaug": NOAH, "erasing": 0.25}})
    ident = run_identity(cfg.to_dict())
    assert ident["data"]["randaug"] == NOAH and ident["data"]["erasing"] == 0.25
    del ident["data"]["randaug"], ident["data"]["erasing"], ident["data"]["augment"]
    assert ident == {**plain, "data": {k: v for k, v in plain["data"].items() if k != "augment"}}


def test_timm_hparams_are_create_transforms():
    t = A.timm_rand_augment(NOAH, 224, "imagenet")
    names = [op.name for op in t.ops]
    assert t.num_layers == 2 and "PosterizeIncreasing" in names and "SolarizeAdd" in names  # inc1: timm's set
    op = t.ops[0]
    assert op.magnitude == 9 and op.magnitude_std == 0.5 and op.prob == 0.5
    # create_transform: translate_const int(0.45 * 224), img_mean the normalisation mean in grey levels
    assert op.hparams["translate_const"] == 100 and op.kwargs["fillcolor"] == (124, 116, 104)
    assert op.kwargs["resample"] == Image.BICUBIC  # NOAH's and DTL's train interpolation
    small = A.timm_rand_augment(NOAH, (24, 40), "inception").ops[0]
    assert small.hparams["translate_const"] == 10 and small.kwargs["fillcolor"] == (128, 128, 128)


def test_timm_randaug_is_timms_transform_per_image_after_the_crop():
    """By hand: the crop and flip from the generator, then one seed drawn from it for Python's and numpy's
    generators, then timm's transform on each image in order through PIL."""
    x, t = _images(), A.timm_rand_augment(NOAH, 24)
    g = _gen(5)
    crop = A.random_resized_crop_flip(x, 24, g)
    seed = int(torch.randint(2**62, (1,), generator=g))
    before = _global_states()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    ref = torch.stack(
        [torch.from_numpy(np.array(t(Image.fromarray(img.permute(1, 2, 0).numpy())))).permute(2, 0, 1) for img in crop]
    )
    random.setstate(before[0])
    np.random.seed(0)
    states = _global_states()
    out = A.augment(x, 24, "crop_flip_randaug", _gen(5), randaug=t)
    assert out.dtype == torch.uint8 and out.shape == (6, 3, 24, 24) and out.is_contiguous()
    assert torch.equal(out, ref)
    assert not torch.equal(out, crop)  # it changed the images
    assert _same_states(states, _global_states())  # the run's own random streams are untouched


def test_timm_randaug_is_deterministic_for_a_seeded_generator():
    x, t = _images(12), A.timm_rand_augment(NOAH, 24)
    a, b, c = (A.augment(x, 24, "crop_flip_randaug", _gen(s), randaug=t) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # and it is not vpeft's batched RandAugment
    assert not torch.equal(a, A.augment(x, 24, "crop_flip_randaug", _gen(3)))
    # whatever the global generators hold before
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    assert torch.equal(a, A.augment(x, 24, "crop_flip_randaug", _gen(3), randaug=t))


def test_erasing_is_timms_random_erasing_seeded_from_the_generator():
    x = normalize(_images(8), "inception")
    g = _gen(7)
    seed = int(torch.randint(2**62, (1,), generator=g))
    states = _global_states()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    ref = RandomErasing(1.0, mode="pixel", max_count=1, device="cpu")(x.clone())
    random.setstate(states[0]), torch.set_rng_state(states[2])
    np.random.seed(0)
    states = _global_states()
    out = A.Erasing(1.0)(x.clone(), _gen(7))
    assert torch.equal(out, ref) and _same_states(states, _global_states())
    # every image got one box of noise: a rectangle of 2-33% of the image
    for before, after in zip(x, out):
        changed = (before != after).any(0)
        rows, cols = changed.any(1).nonzero()[:, 0], changed.any(0).nonzero()[:, 0]
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert changed.sum() == h * w and 0.02 * 900 * 0.8 <= h * w <= 900 / 3 * 1.2
    again, other = A.Erasing(1.0)(x.clone(), _gen(7)), A.Erasing(1.0)(x.clone(), _gen(8))
    assert torch.equal(again, out) and not torch.equal(other, out)
    assert torch.equal(A.Erasing(0.0)(x.clone(), _gen(7)), x)


def _task(data: DataConfig, size=(24, 24), train=None):
    task = TASKS.build("classify").build(data.normalize, data.augment or "none", size)
    task.configure_training(data, train or TrainConfig(), num_classes=3)
    return task


def test_the_task_runs_randaug_then_erasing_and_only_in_training():
    x, labels = _images(), torch.tensor([0, 1, 2, 0, 1, 2])
    data = DataConfig(augment="crop_flip_randaug", randaug=NOAH, erasing=0.5)
    task = _task(data)
    a = task.prepare({"image": x, "label": labels}, train=True, generator=_gen(1))
    b = task.prepare({"image": x, "label": labels}, train=True, generator=_gen(1))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], labels) and "target" not in a
    g = _gen(1)
    augmented = normalize(A.augment(x, 24, "crop_flip_randaug", g, randaug=task._randaug), "inception")
    ref = A.Erasing(0.5)(augmented.clone(), g)  # on the same generator, after the augmentation's draws
    assert torch.equal(a["image"], ref) and not torch.equal(ref, augmented)
    # evaluation: the plain normalised images
    assert torch.equal(task.prepare({"image": x, "label": labels}, train=False)["image"], normalize(x, "inception"))
    # erasing alone also runs without augmentation
    plain = _task(DataConfig(erasing=1.0), size=None)
    out = plain.prepare({"image": x, "label": labels}, train=True, generator=_gen(2))["image"]
    assert not torch.equal(out, normalize(x, "inception"))


def test_default_options_keep_vpefts_own_randaugment():
    x, labels = _images(), torch.tensor([0, 1, 2, 0, 1, 2])
    task = _task(DataConfig(augment="crop_flip_randaug"))
    assert task._randaug is None and task._erasing is None and task._mixing is None
    out = task.prepare({"image": x, "label": labels}, train=True, generator=_gen(4))
    assert torch.equal(out["image"], normalize(A.augment(x, 24, "crop_flip_randaug", _gen(4)), "inception"))
