"""``vpeft predict`` for a segmentation run: one mask PNG per image (0/255, at the image's own size, named by its
stem) that is the run's own thresholded prediction, resized back with nearest neighbour."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("segment_anything", reason="the SAM family needs the sam extra: pip install 'vpeft[sam]'")

from vpeft.cli import main  # noqa: E402
from vpeft.config import RunConfig  # noqa: E402
from vpeft.data.sources import load  # noqa: E402
from vpeft.data.synth_seg import generate_seg  # noqa: E402
from vpeft.data.vtab import _decode, normalize  # noqa: E402
from vpeft.engine.trainer import train  # noqa: E402
from vpeft.errors import ConfigError  # noqa: E402
from vpeft.metrics_seg import seg_metrics  # noqa: E402
from vpeft.predict import Predictor  # noqa: E402
from vpeft.run import load_run  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A decoder-only run of the shipped tiny SAM (64 px input) on a generated task of 48 px images."""
    tmp = tmp_path_factory.mktemp("segpredict")
    root = generate_seg(tmp / "seg", size=48, n_train=32, n_val=8, n_test=12)
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": "sam:tiny_synth"},
            "method": "linear",
            "task": "segment",
            "data": {"root": str(root)},
            "train": {"epochs": 1, "batch_size": 16, "lr": 2e-3, "device": "cpu"},
        }
    )
    result = train(cfg, tmp / "run", progress=False)
    return tmp / "run", root, result


def _run_predictions(run_dir) -> tuple[np.ndarray, np.ndarray]:
    """The run's thresholded predictions on its test split, at the model's input size, as evaluation makes them."""
    model, objective, cfg, _ = load_run(run_dir)
    ds = load(cfg.data, "test", model.input_size, None, training=False, labels="mask")
    task = cfg.task.build(cfg.data.normalize)
    batch = task.prepare({"image": ds.images, "mask": ds.masks}, train=False)
    with torch.no_grad():
        pred = task.predict(objective.predict(model, batch["image"]))
    return pred.numpy(), ds.masks.numpy()


def test_predict_writes_the_runs_masks_at_each_images_size(run, tmp_path, capsys):
    run_dir, root, result = run
    images = tmp_path / "new"
    stems = [line.split()[0] for line in (root / "test.txt").read_text().splitlines()]
    images.mkdir()
    for s in stems:
        shutil.copy(root / s, images / s.split("/")[-1])
    out = tmp_path / "masks"
    assert main(["predict", "--run", str(run_dir), "--images", str(images), "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {len(stems)} mask(s)" in printed
    pred64, masks64 = _run_predictions(run_dir)
    assert pred64.shape == (12, 64, 64) and 0 < pred64.mean() < 0.5  # shapes found, not everything
    # They are the run's predictions: their Dice is the one the run recorded.
    assert seg_metrics(pred64, masks64)["dice"] == pytest.approx(result["test_dice"], abs=1e-9)
    for i, s in enumerate(stems):
        name = s.split("/")[-1]
        with Image.open(out / name) as m:  # named by the image's stem (the images are PNGs too)
            assert m.mode == "L" and m.size == (48, 48)
            got = np.asarray(m)
        assert set(np.unique(got)) <= {0, 255}
        want = np.asarray(Image.fromarray(pred64[i]).resize((48, 48), Image.NEAREST)) * 255
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in out.iterdir()) == sorted(s.split("/")[-1] for s in stems)


def test_a_non_square_image_gets_a_mask_of_its_own_size(run, tmp_path, capsys):
    run_dir, root, _ = run
    src = root / (root / "test.txt").read_text().split()[0]
    photo = tmp_path / "photo.jpg"
    Image.open(src).convert("RGB").resize((56, 40), Image.BICUBIC).save(photo, quality=95)
    out = tmp_path / "m"
    assert main(["predict", "--run", str(run_dir), "--images", str(photo), "--output", str(out), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["image"] == str(photo) and row["mask"] == str(out / "photo.png")
    with Image.open(out / "photo.png") as m:
        assert m.size == (56, 40)
        got = np.asarray(m)
    # Independently: the image decoded as the run decodes its test images, the model, sigmoid > 0.5, nearest back.
    model, objective, cfg, _ = load_run(run_dir)
    x = normalize(torch.from_numpy(_decode(photo, (64, 64)))[None], cfg.data.normalize)
    with torch.no_grad():
        pred = (torch.sigmoid(objective.predict(model, x))[0, 0] > 0.5).numpy().astype(np.uint8)
    np.testing.assert_array_equal(got, np.asarray(Image.fromarray(pred).resize((56, 40), Image.NEAREST)) * 255)
    assert row["foreground"] == pytest.approx(100 * (got > 0).mean())


def test_segment_predict_errors_are_one_line(run, tmp_path, capsys):
    run_dir, root, _ = run
    image = root / (root / "test.txt").read_text().split()[0]
    assert main(["predict", "--run", str(run_dir), "--images", str(image)]) == 2
    assert "a segment run writes one mask PNG per image; name a folder with --output DIR" in capsys.readouterr().err
    assert main(["predict", "--run", str(run_dir), "--images", str(image), "--output", str(tmp_path / "p.csv")]) == 2
    assert "p.csv" in capsys.readouterr().err
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    shutil.copy(image, tmp_path / "a" / "x.png"), shutil.copy(image, tmp_path / "b" / "x.png")
    args = ["predict", "--run", str(run_dir), "--images", str(tmp_path / "a"), str(tmp_path / "b")]
    assert main([*args, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "share the stem 'x'" in err and str(tmp_path / "a" / "x.png") in err and str(tmp_path / "b" / "x.png") in err
    assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(ConfigError, match="Predictor.masks"):
        list(Predictor.from_run(run_dir).predict([image]))
