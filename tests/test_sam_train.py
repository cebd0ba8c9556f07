"""Segmentation end to end through the trainer: the tiny SAM (``sam:tiny``) on the generated segmentation task with
the ``segment`` task, decoder-only (``linear``), full fine-tuning and GPS with the task's own loss; evaluation from
the run folder alone, resume, and GPS's selection pass reading the training split only."""

import json

import pytest

pytest.importorskip("segment_anything", reason="the SAM family needs the sam extra: pip install 'vpeft[sam]'")

from vpeft.cli import main  # noqa: E402
from vpeft.config import RunConfig  # noqa: E402
from vpeft.data.synth_seg import generate_seg  # noqa: E402
from vpeft.engine.trainer import train  # noqa: E402


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    return generate_seg(tmp_path_factory.mktemp("seg"), n_test=40)


def _cfg(root, method="linear", selector=None, epochs=2, backbone="sam:tiny", **train):
    return RunConfig.from_dict(
        {
            "backbone": {"spec": backbone},
            "method": method,
            "selector": selector,
            "task": "segment",
            "data": {"root": str(root)},
            "train": {"epochs": epochs, "batch_size": 16, "lr": 2e-3, "device": "cpu", **train},
        }
    )


@pytest.mark.parametrize(
    "method,selector", [("linear", None), ("full", None), ("linear", "gps:loss=task,norm_bias=outside_blocks")]
)
def test_sam_trains_evaluates_and_reloads(seg, tmp_path, capsys, method, selector):
    r = train(_cfg(seg, method, selector), tmp_path / "r", progress=False)
    assert r["primary_metric"] == "dice" and r["task"] == seg.name
    for key in ("test_dice", "test_iou", "test_dice_pooled", "test_iou_pooled"):
        assert 0 <= r[key] <= 100
    assert r["test_images"] == 40
    if selector:  # GPS: the gradient pass read the training split only, never the test split
        assert r["selection"]["images"] == len((seg / "train.txt").read_text().splitlines())
        assert r["selection"]["selected"] > 0
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "r")]) == 0
    assert f"recorded dice {r['test_dice']:.4f} (same)" in capsys.readouterr().out


def test_a_killed_segmentation_run_resumes_to_the_uninterrupted_result(seg, tmp_path):
    whole = train(_cfg(seg, epochs=3), tmp_path / "whole", progress=False)

    def kill(epoch, entry):
        if epoch == 2:
            raise Killed()

    with pytest.raises(Killed):
        train(_cfg(seg, epochs=3), tmp_path / "part", progress=False, on_epoch_end=kill)
    part = train(_cfg(seg, epochs=3), tmp_path / "part", resume=True, progress=False)
    assert part["test_dice"] == whole["test_dice"] and part["test_iou_pooled"] == whole["test_iou_pooled"]
    logs = [(tmp_path / d / "log.jsonl").read_text() for d in ("whole", "part")]
    assert [json.loads(x)["loss"] for x in logs[0].splitlines()] == [
        json.loads(x)["loss"] for x in logs[1].splitlines()
    ]


def test_a_gps_sam_run_merges_and_the_merged_model_predicts_the_same_masks(seg, tmp_path, capsys):
    """vpeft merge on a GPS SAM run: the selected weights folded in, the sam family rebuilds the model from the file
    alone, and vpeft predict --merged writes the run's own masks."""
    import torch
    from PIL import Image

    from vpeft.methods.merge import load_merged, read_merged_metadata
    from vpeft.run import load_run

    run = tmp_path / "gps"
    train(_cfg(seg, "linear", "gps:loss=task,norm_bias=outside_blocks", 1, "sam:tiny_synth"), run, progress=False)
    assert main(["merge", "--run", str(run), "--out", str(tmp_path / "m.safetensors")]) == 0
    assert "a plain sam model (tiny_synth) with linear and gps" in capsys.readouterr().out
    assert read_merged_metadata(tmp_path / "m.safetensors")["family"] == "sam"
    merged = load_merged(tmp_path / "m.safetensors")
    model, objective, _, _ = load_run(run)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(merged(x), objective.predict(model.eval(), x), atol=1e-5)
    image = sorted((seg / "images").iterdir())[0]
    for flag, path, out in (("--run", run, "a"), ("--merged", tmp_path / "m.safetensors", "b")):
        assert main(["predict", flag, str(path), "--images", str(image), "--output", str(tmp_path / out)]) == 0
    a, b = (Image.open(tmp_path / d / f"{image.stem}.png") for d in "ab")
    assert list(a.getdata()) == list(b.getdata())
