"""Tasks (issue 16): every registered task trains and records its metrics; regression metrics by hand; selection on the
task's primary metric (higher or lower is better); a task plug-in through an entry point; float targets in lists."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import install_plugin, make_task

from vpeft.bench.report import tune
from vpeft.config import RunConfig, run_identity
from vpeft.data.loader import DeviceData, split_batch
from vpeft.data.vtab import ImageDataset, load_split
from vpeft.engine.trainer import train
from vpeft.errors import ConfigError, DataError
from vpeft.registry import TASKS
from vpeft.tasks.regress import pearson, ranks, regression_metrics, spearman

SMALL = "vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=32,depth=2,num_heads=2"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A classification and a regression task folder, generated (200 training images in val200, 40 test images)."""
    from vpeft.data.synth import generate_task
    from vpeft.data.synth_text import generate_glue

    root = tmp_path_factory.mktemp("tasks")
    rte, stsb = generate_glue(root / "glue")
    return {
        "int": generate_task(root, "shapes", n_test=40),
        "float": generate_task(root, "disc_size", n_test=40),
        ("text", "int"): rte,
        ("text", "float"): stsb,
    }


def _data(data: dict, cfg) -> Path:
    return data[cfg.labels] if cfg.inputs == "image" else data[(cfg.inputs, cfg.labels)]


#: Tasks whose models are another family's (the rest train SMALL): the tiny model of that family, and its extra.
TASK_BACKBONES = {
    "clip_classify": ("clip:tiny", "open_clip"),
    "text_classify": ("hf_text:tiny_bert", "transformers"),
    "text_regress": ("hf_text:tiny_bert", "transformers"),
    "text2text": ("t5:tiny", "transformers"),
    "text2text_regress": ("t5:tiny", "transformers"),
}


def run(root: Path, out: Path, task="classify", **train_opts) -> dict:
    backbone, extra = TASK_BACKBONES.get(task, (SMALL, None))
    if extra is not None:
        pytest.importorskip(extra, reason=f"task {task} trains a {backbone} model, which needs {extra}")
    t = {"epochs": 2, "batch_size": 32, "lr": 1e-3, "device": "cpu", **train_opts}
    split = (
        {}
        if TASKS.get(task.split(":")[0]).inputs == "text"  # a GLUE folder: ATTEMPT's re-split
        else {"train_split": "val200"}
        if t.get("select", "last") == "last"
        else {"train_split": "val200", "val_split": "val200"}
    )
    cfg = RunConfig.from_dict(
        {
            "backbone": {"spec": backbone},
            "method": "full",
            "task": task,
            "data": {"root": str(root), **split},
            "train": t,
        }
    )
    return train(cfg, out, progress=False)


# segment's labels are masks and its model a segmentation model: tests/test_segment_task.py
@pytest.mark.parametrize("name", [n for n in TASKS.names() if TASKS.get(n).labels in ("int", "float")])
def test_every_registered_task_trains_and_records_its_metrics(name, data, tmp_path):
    cfg = TASKS.build(name)
    r = run(_data(data, cfg), tmp_path / "r", task=name)
    on_disk = json.loads((tmp_path / "r" / "result.json").read_text())
    assert on_disk["metrics"] == r["metrics"] and on_disk["primary_metric"] == cfg.primary_metric
    assert cfg.primary_metric in r["metrics"] and all(np.isfinite(v) for v in r["metrics"].values())
    assert r["higher_is_better"] == cfg.higher_is_better and "val_metrics" not in r  # select=last
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(cfg.log_key("train") in e for e in log)
    assert r[cfg.head_key] == cfg.num_outputs(
        RunConfig.from_dict({"data": {"root": str(_data(data, cfg))}, "task": name}).data, ["val200", "test"]
    )


def test_classify_keeps_test_acc_as_its_accuracy(data, tmp_path):
    r = run(data["int"], tmp_path / "r", select="val")
    assert r["primary_metric"] == "accuracy" and r["higher_is_better"] is True
    assert r["test_acc"] == r["metrics"]["accuracy"] == 100.0 * r["test_correct"] / r["test_total"]
    assert r["val_acc"] == r["val_metrics"]["accuracy"] and r["num_classes"] == 4 and r["test_total"] == 40
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert all("train_acc" in e and "val_acc" in e for e in log)


def test_regress_learns_the_generated_target(data, tmp_path, capsys):
    r = run(data["float"], tmp_path / "r", task="regress", epochs=3)
    assert r["num_outputs"] == 1 and "test_acc" not in r and "num_classes" not in r
    assert set(r["metrics"]) == {"pearson", "spearman", "mae", "mse"}
    assert r["metrics"]["pearson"] > 0.5, r["metrics"]  # the disc's radius is plain to see
    from vpeft.cli import main

    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "r"), "--json"]) == 0  # the rebuilt model scores the same
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(r["metrics"])


@pytest.mark.parametrize("primary", ["pearson", "mae"])
def test_select_val_picks_the_best_epoch_by_the_primary_metric(primary, data, tmp_path):
    r = run(data["float"], tmp_path / "r", task=f"regress:primary={primary}", epochs=3, select="val", lr=3e-3)
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    scores = [e[f"val_{primary}"] for e in log]
    best = (max if primary == "pearson" else min)(scores)
    assert r["selected_epoch"] == scores.index(best) + 1 and r["val_metrics"][primary] == best
    assert r["primary_metric"] == primary and r["higher_is_better"] == (primary == "pearson")
    assert len(set(scores)) == 3  # the epochs differ, so the choice means something


# ---- regression metrics by hand -------------------------------------------------------------------------------------
def test_regression_metrics_by_hand():
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 5.0, 4.0])
    # means 2.5 and 3.75: sum of products 3.5, sums of squares 5 and 4.75
    assert pearson(x, y) == pytest.approx(3.5 / np.sqrt(5 * 4.75))
    # ranks of y with the tie of the two 4s: 1, 2.5, 4, 2.5
    assert ranks(y).tolist() == [1.0, 2.5, 4.0, 2.5] and ranks([3, 3, 3]).tolist() == [2.0, 2.0, 2.0]
    assert spearman(x, y) == pytest.approx(3.0 / np.sqrt(5 * 4.5))  # = 2 / sqrt(10)
    m = regression_metrics(x, y)
    assert m["mae"] == pytest.approx(1.25) and m["mse"] == pytest.approx(2.25)  # errors 1, 2, 2, 0
    assert pearson(x, np.full(4, 7.0)) == 0.0  # a constant prediction: no correlation to measure


def test_regression_metrics_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 50).astype(float), rng.normal(size=50)  # many ties in x
    y[:10] = y[10:20]
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert ranks(x).tolist() == stats.rankdata(x).tolist()


def test_the_regression_metric_state_gathers_the_batches():
    task = TASKS.build("regress").build()
    metric = task.metric()
    preds, targets = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 4.0, 5.0, 4.0])
    for i in (0, 3):  # batches of 3 and 1
        metric.update(preds[i : i + 3, None], {"label": targets[i : i + 3]})
    assert metric.compute() == pytest.approx(regression_metrics(preds.numpy(), targets.numpy()))


# ---- the plug-in contract -------------------------------------------------------------------------------------------
TOY_TASK = '''
from dataclasses import dataclass

import torch.nn.functional as F

from vpeft.registry import TASKS
from vpeft.tasks import Metric, Task, TaskConfig


class ErrorRate(Metric):
    def __init__(self):
        self.wrong, self.total = 0, 0

    def update(self, outputs, batch):
        self.wrong = self.wrong + (outputs.argmax(-1) != batch["label"]).sum()
        self.total += len(batch["label"])

    def sync(self, dist):
        self.wrong = int(self.wrong)

    def compute(self):
        return {"error": int(self.wrong) / max(self.total, 1)}


@TASKS.register("toy_error")
@dataclass(kw_only=True)
class ToyConfig(TaskConfig):
    """Toy task plug-in: four classes, scored by the error rate (lower is better)."""

    outputs = 4

    @property
    def primary_metric(self):
        return "error"

    @property
    def higher_is_better(self):
        return False

    def build(self, normalize="inception", augment="none", size=None):
        return ToyTask(self, normalize, augment, size)


class ToyTask(Task):
    def loss(self, outputs, batch):
        return F.cross_entropy(outputs, batch["label"])

    def predict(self, outputs):
        return outputs.argmax(-1)

    def metric(self):
        return ErrorRate()
'''


def test_a_task_plugin_joins_through_an_entry_point_and_trains(data, tmp_path, monkeypatch, capsys):
    install_plugin(
        monkeypatch, tmp_path / "plugin", {"toy_vpeft_task": TOY_TASK}, TASKS, "[vpeft.tasks]\ntoy = toy_vpeft_task\n"
    )
    assert "toy_error" in TASKS.names()
    from vpeft.cli import main

    assert main(["list", "tasks"]) == 0
    assert "toy_error: Toy task plug-in" in capsys.readouterr().out
    r = run(data["int"], tmp_path / "r", task="toy_error", select="val", epochs=2)
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert r["primary_metric"] == "error" and r["higher_is_better"] is False and r["num_outputs"] == 4
    assert r["val_metrics"]["error"] == min(e["val_error"] for e in log) and 0 <= r["metrics"]["error"] <= 1
    assert r["objective"] == "ce"  # the default objective of a task that names none


# ---- config: the task section, its identity, its pairings -----------------------------------------------------------
def test_the_default_task_leaves_every_run_identity_as_it_was(small_task):
    cfg = RunConfig.from_dict({"data": {"root": str(small_task)}})
    resolved = cfg.to_dict()
    assert resolved["task"] == {"name": "classify"} and cfg.objective.name == "ce"
    old = {k: v for k, v in resolved.items() if k != "task"}  # a config written before tasks
    assert run_identity(resolved) == run_identity(old) and "task" not in run_identity(resolved)
    regress = RunConfig.from_dict({"task": "regress", "data": {"root": str(small_task)}}).to_dict()
    assert run_identity(regress)["task"] == {"name": "regress", "primary": "pearson"}
    assert regress["objective"] == {"name": "mse"}  # the task's default objective
    assert RunConfig.from_dict(regress).to_dict() == regress


def test_objectives_and_formats_a_task_does_not_take_fail_clearly():
    with pytest.raises(ConfigError, match="objective 'ce' does not train task 'regress': it trains with 'mse', 'gist'"):
        RunConfig.from_dict({"task": "regress", "objective": "ce"})
    with pytest.raises(ConfigError, match="objective 'mse' does not train task 'classify': .* serves 'regress'"):
        RunConfig.from_dict({"objective": "mse"})
    with pytest.raises(ConfigError, match="task 'regress' reads float labels, which data format 'folder' does not"):
        RunConfig.from_dict({"task": "regress", "data": {"format": "folder"}})
    with pytest.raises(ConfigError, match="unknown task 'regres'.*'regress'"):
        RunConfig.from_dict({"task": "regres"})
    with pytest.raises(ConfigError, match="'primary'"):
        RunConfig.from_dict({"task": "regress:primary=r2"})


def test_num_classes_is_refused_for_a_fixed_head(tmp_path):
    cfg = RunConfig.from_dict({"task": "regress", "data": {"root": str(tmp_path), "num_classes": 3}})
    with pytest.raises(ConfigError, match="'num_classes' is for classification"):
        cfg.task.num_outputs(cfg.data, ["train"])


# ---- data: float targets, batches as mappings ----------------------------------------------------------------------
def test_float_targets_are_read_and_a_bad_one_names_file_and_line(tmp_path):
    root = make_task(tmp_path / "t", n_train=6, n_test=4)
    lines = (root / "test.txt").read_text().splitlines()
    (root / "test.txt").write_text("\n".join(f"{ln.split()[0]} {0.25 * i - 0.5}" for i, ln in enumerate(lines)))
    ds = load_split(root, "test", (16, 16), labels="float")
    assert ds.labels.dtype == torch.float32 and ds.labels.tolist() == [-0.5, -0.25, 0.0, 0.25]
    # the same file read for classification fails on the first non-integer, as before
    with pytest.raises(DataError, match=r"test.txt:1: label '-0.5' is not an integer"):
        load_split(root, "test", (16, 16))
    bad = lines[:2] + [f"{lines[2].split()[0]} abc"]
    (root / "test.txt").write_text("\n".join(f"{ln.split()[0]} 1.5" for ln in bad[:2]) + "\n" + bad[2] + "\n")
    with pytest.raises(DataError, match=r"test.txt:3: target 'abc' is not a number"):
        load_split(root, "test", (16, 16), labels="float")
    (root / "test.txt").write_text(f"{lines[0].split()[0]} nan\n")
    with pytest.raises(DataError, match=r"test.txt:1: target 'nan' is not a finite number"):
        load_split(root, "test", (16, 16), labels="float")


def test_a_csv_split_reads_float_targets(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "test.csv").write_text("path,label\na.png,0.75\na.png,x\n")
    with pytest.raises(DataError, match=r"test.csv:3: target 'x' is not a number"):
        load_split(tmp_path, "test", (8, 8), fmt="csv", labels="float")
    with pytest.raises(DataError, match="data format 'folder' has no float labels"):
        load_split(tmp_path, "test", (8, 8), fmt="folder", labels="float")


def test_batches_are_mappings_of_the_tuple_batches():
    g = torch.Generator().manual_seed(0)
    ds = ImageDataset(torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8, generator=g), torch.rand(7), "mem")
    data = DeviceData(ds, torch.device("cpu"))
    order = torch.randperm(7, generator=g)
    for (batch, n), (x, y, m) in zip(data.mappings(3, order), data.batches(3, order), strict=True):
        assert set(batch) == {"image", "label"} and n == m
        assert torch.equal(batch["image"], x) and torch.equal(batch["label"], y)
    parts = list(split_batch({"image": torch.arange(5), "label": torch.arange(5) * 2}, 2))
    assert [p["label"].tolist() for p in parts] == [[0, 2], [4, 6], [8]]


# ---- reports --------------------------------------------------------------------------------------------------------
def test_tune_follows_the_direction_of_the_primary_metric():
    def rec(grid, val, test, **kw):
        return {
            "label": f"m ({grid})",
            "base_label": "m",
            "grid": grid,
            "task": "x",
            "seed": 0,
            "run_dir": grid,
            "primary_metric": "mae",
            "higher_is_better": False,
            "val_mae": val,
            "test_mae": test,
            **kw,
        }

    kept, chosen = tune([rec("lr=0.1", 0.3, 0.5), rec("lr=0.01", 0.2, 0.6), rec("lr=1", 0.2, 0.1)])
    assert [(r["grid"], r["test_mae"]) for r in kept] == [("lr=0.01", 0.6)]  # lowest val, the first of equals
    with pytest.raises(ConfigError, match="cannot select on val_mae"):
        tune([rec("a", None, 0.5), rec("b", 0.1, 0.5)])


# ---- the task reaches every door: the CLI, sweeps, and selectors that cannot serve it -------------------------------
def test_vpeft_train_takes_a_task(data, tmp_path, capsys):
    from conftest import TINY

    from vpeft.cli import main

    argv = [
        "train",
        "--data",
        str(data["float"]),
        "--backbone",
        TINY,
        "--method",
        "bitfit",
        "--task",
        "regress:primary=mae",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "r"),
        "--no-progress",
        "data.train_split=val200",
    ]
    assert main(argv) == 0
    r = json.loads((tmp_path / "r" / "result.json").read_text())
    assert r["primary_metric"] == "mae" and r["higher_is_better"] is False and r["objective"] == "mse"


def test_a_sweep_names_its_task_and_an_entry_its_own(data, tmp_path):
    from vpeft.bench.experiment import expand, load_experiment

    exp = load_experiment(
        {
            "suite": "tasks",
            "tasks": [str(data["float"])],
            "task": "regress",
            "methods": ["linear", {"label": "mae", "method": "bitfit", "task": "regress:primary=mae"}],
        }
    )
    runs = {r.label: r.config["task"] for r in expand(exp, tmp_path)}
    assert runs == {"linear": {"name": "regress", "primary": "pearson"}, "mae": {"name": "regress", "primary": "mae"}}


def test_gps_by_gradient_refuses_real_valued_targets():
    with pytest.raises(
        ConfigError,
        match=r"selector .gps. with loss .supcon. .* task .regress. has real-valued targets \(use loss=task",
    ):
        RunConfig.from_dict({"task": "regress", "selector": "gps"})
    RunConfig.from_dict({"task": "regress", "selector": "gps:criterion=magnitude"})  # needs no loss: fine
