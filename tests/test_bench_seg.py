"""A segmentation sweep end to end (issue 18): ``vpeft bench run --suite seg`` over generated segfolder task folders
with sam:tiny, two methods, one epoch; each run's status carries its task's primary metric (Dice), not an accuracy;
``vpeft report`` writes the Dice table and the Dice and IoU section (per image and pooled), each cell the run's own
value from its result.json."""

import json
from pathlib import Path

import pytest

from vpeft.bench import LocalExecutor, load_experiment, run_sweep, write_report
from vpeft.bench.report import seg_lines
from vpeft.bench.runner import run_one
from vpeft.cli import main
from vpeft.data.synth_seg import generate_seg

SAM_EXTRA = "the SAM family needs the sam extra: pip install 'vpeft[sam]'"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    pytest.importorskip("segment_anything", reason=SAM_EXTRA)
    root = tmp_path_factory.mktemp("seg")
    generate_seg(root / "shapes", n_test=20)
    out = tmp_path_factory.mktemp("sweep")
    argv = ["bench", "run", "--suite", "seg", "--data-root", str(root), "--backbone", "sam:tiny"]
    argv += ["--method", "linear", "--method", "full", "--epochs", "1", "--out", str(out), "--no-progress"]
    argv += ["--set", "train.batch_size=16", "--set", "train.lr=0.002", "--threads", "1"]
    assert main(argv) == 0
    return root, out


def _results(out: Path) -> dict:
    return {
        json.loads((p.parent / "bench.json").read_text())["label"]: json.loads(p.read_text())
        for p in out.rglob("result.json")
    }


def test_a_seg_sweep_trains_segment_runs(sweep):
    _, out = sweep
    res = _results(out)
    assert sorted(res) == ["full", "linear"]
    for r in res.values():
        assert r["primary_metric"] == "dice" and r["task"] == "shapes" and r["test_images"] == 20


def test_the_report_has_dice_and_iou_tables(sweep, tmp_path):
    _, out = sweep
    res = _results(out)
    rep = write_report(out, tmp_path / "report")
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "Test dice (Dice per image, %)" in text and "## Dice and IoU" in text
    section = text.split("## Dice and IoU")[1].splitlines()
    head = next(line for line in section if line.startswith("| method |"))
    assert head == "| method | Dice per image | IoU per image | Dice pooled | IoU pooled |"
    for label, r in res.items():
        row = next(line for line in section if line.startswith(f"| `{label}` | "))
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert cells == [f"{r['metrics'][m]:.1f}" for m in ("dice", "iou", "dice_pooled", "iou_pooled")]
    # the main table scores by the primary metric, one decimal as accuracy
    assert rep["summary"]["linear"]["tasks"]["shapes"][0] == res["linear"]["metrics"]["dice"]


def test_a_finished_runs_status_names_its_metric(sweep, tmp_path):
    root, _ = sweep
    exp = load_experiment(
        {"suite": "seg", "data_root": str(root), "backbone": {"spec": "sam:tiny"}, "methods": ["linear"]},
        train={"epochs": 1, "batch_size": 16},
    )
    summary = run_sweep(exp, tmp_path, LocalExecutor(jobs=1, threads=1), progress=False)
    assert summary["done"] == 1 and not summary["failed"]
    spec = json.loads((tmp_path / "runs.jsonl").read_text().splitlines()[0])
    status = run_one(spec)  # a finished run: trained again from its folder's state, the same result
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    assert status["state"] == "done" and status["metric"] == "dice" and "test_acc" not in status
    assert status["value"] == result["metrics"]["dice"]


def test_several_tasks_get_a_table_per_metric_with_the_mean_per_seed():
    counts = {"trainable_params_no_head": 0, "train_memory_bytes": 1, "memory_batch": 1, "train_seconds": 1.0}

    def rec(label, task, seed, dice, iou):  # no pooled values: those tables are left out
        return {"label": label, "task": task, "seed": seed, "test_dice": dice, "test_iou": iou, **counts}

    records = [
        rec("a", "t1", 0, 80.0, 60.0),
        rec("a", "t2", 0, 60.0, 40.0),
        rec("a", "t1", 1, 90.0, 70.0),
        rec("a", "t2", 1, 70.0, 50.0),
        {"label": "b", "task": "t1", "seed": 0, "test_acc": 50.0, **counts},  # a classification run: not in the section
    ]
    lines = seg_lines(records, ["a", "b"], ["t1", "t2"])
    dice = lines.index("Dice per image:")
    assert lines[dice + 2 : dice + 5] == [
        "| method | t1 | t2 | mean |",
        "|---|---:|---:|---:|",
        "| `a` | 85.0 ±5.0 | 65.0 ±5.0 | 75.0 ±5.0 |",  # per seed: (80 + 60) / 2 = 70, (90 + 70) / 2 = 80
    ]
    iou = lines.index("IoU per image:")
    assert lines[iou + 4] == "| `a` | 65.0 ±5.0 | 45.0 ±5.0 | 55.0 ±5.0 |"
    assert "Dice pooled:" not in lines and not any("`b`" in x for x in lines)
    assert seg_lines(records[4:], ["b"], ["t1"]) == []
