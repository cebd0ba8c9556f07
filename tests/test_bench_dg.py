"""Sweeps for domain generalisation and few-shot lists: an experiment's ``tasks`` mapping (several tasks on one
folder with their own lists: leave-one-domain-out), ``list_seeds`` (runs repeated over ``data.fewshot_seed``) and
reports that average over seeds and list seeds."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY
from PIL import Image

from vpeft.bench import LocalExecutor, expand, load_experiment, run_sweep, write_report
from vpeft.bench.report import collect
from vpeft.errors import ConfigError

DOMAINS = ("a", "b", "c")


def _domains(root: Path) -> Path:
    """Three tiny domains of 2 classes, ``<d>_train.txt``, ``<d>_val.txt``, ``<d>_test.txt`` each (paths relative to
    ``root``); few-shot training lists ``train_s{seed}.txt`` over domain a's images, one per list seed."""
    rng = np.random.default_rng(0)
    for d in DOMAINS:
        rows = []
        for i in range(12):
            rel = f"{d}/{i % 2}/{i}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / rel)
            rows.append(f"{rel} {i % 2}\n")
        (root / f"{d}_train.txt").write_text("".join(rows[:8]))
        (root / f"{d}_val.txt").write_text("".join(rows[8:]))
        (root / f"{d}_test.txt").write_text("".join(rows))
    a = (root / "a_train.txt").read_text().splitlines(keepends=True)
    for seed in (0, 1):
        (root / f"train_s{seed}.txt").write_text("".join(a[seed * 2 : seed * 2 + 4]))
    (root / "test.txt").write_text((root / "b_test.txt").read_text())
    return root


def _base(root: Path, **extra) -> dict:
    return {
        "name": "dg",
        "suite": "tasks",
        "data_root": str(root),
        "backbone": {"spec": TINY},
        "data": {"format": "lists", "num_classes": 2},
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.01},
        "methods": ["linear"],
        **extra,
    }


def _leave_one_out() -> dict:
    return {
        t: {
            "root": ".",
            "data": {
                "lists": {
                    "train": [f"{d}_train.txt" for d in DOMAINS if d != t],
                    "val": [f"{d}_val.txt" for d in DOMAINS if d != t],
                    "test": f"{t}_test.txt",
                }
            },
        }
        for t in DOMAINS
    }


def test_a_tasks_mapping_gives_each_task_its_own_lists_on_one_folder(tmp_path):
    root = _domains(tmp_path / "data")
    exp = load_experiment(_base(root, tasks=_leave_one_out(), train={"epochs": 1, "select": "val"}))
    runs = expand(exp, tmp_path / "out")
    assert [r.task for r in runs] == list(DOMAINS)
    for r in runs:
        data = r.config["data"]
        assert data["root"] == str(root.resolve())
        assert data["lists"]["test"] == f"{r.task}_test.txt"
        assert sorted(data["lists"]["train"]) == [f"{d}_train.txt" for d in DOMAINS if d != r.task]
    assert len({r.run_id for r in runs}) == 3
    # --tasks picks from the mapping, keeping each task's settings; an unknown name is refused.
    picked = load_experiment(_base(root, tasks=_leave_one_out()), tasks=["c"])
    assert [(r.task, r.config["data"]["lists"]["test"]) for r in expand(picked, tmp_path / "o")] == [
        ("c", "c_test.txt")
    ]
    with pytest.raises(ConfigError, match=r"no task 'z' \(its tasks: a, b, c\)"):
        load_experiment(_base(root, tasks=_leave_one_out()), tasks=["z"])
    with pytest.raises(ConfigError, match=r"tasks.a: unknown key\(s\) lr \(valid: root, backbone, data, train\)"):
        load_experiment(_base(root, tasks={"a": {"lr": 1}}))
    with pytest.raises(ConfigError, match=r"task folder .*nowhere does not exist \(tasks.a.root\)"):
        expand(load_experiment(_base(root, tasks={"a": {"root": "nowhere"}})), tmp_path / "x")


def test_list_seeds_repeat_runs_and_the_report_averages_over_them(tmp_path):
    root = _domains(tmp_path / "data")
    tasks = {"fs": {"root": ".", "data": {"lists": {"train": "train_s{seed}.txt", "test": "test.txt"}}}}
    exp = load_experiment(_base(root, tasks=tasks, list_seeds=[0, 1]))
    runs = expand(exp, tmp_path / "out")
    assert [(r.seed, r.list_seed, r.config["data"]["fewshot_seed"]) for r in runs] == [(0, 0, 0), (0, 1, 1)]
    assert [Path(r.run_dir).name.split("__")[2] for r in runs] == ["s0_l0", "s0_l1"]
    with pytest.raises(ConfigError, match="list_seeds repeat"):
        load_experiment(_base(root, tasks=tasks, list_seeds=[1, 1]))
    summary = run_sweep(exp, tmp_path / "out", LocalExecutor(jobs=1, threads=1), progress=False)
    assert summary["done"] == 2
    results = {}
    for p in (tmp_path / "out" / "runs").glob("*/result.json"):
        bench = json.loads((p.parent / "bench.json").read_text())
        r = json.loads(p.read_text())
        results[bench["list_seed"]] = r
    # Each run trained on its own list: list seed 1's list is lines 3-6 of domain a's training list.
    saved = yaml.safe_load(next((tmp_path / "out" / "runs").glob("*_l1__*/config.yaml")).read_text())
    assert saved["data"]["fewshot_seed"] == 1
    records = collect(tmp_path / "out")
    assert sorted(r["list_seed"] for r in records) == [0, 1]
    rep = write_report(tmp_path / "out", tmp_path / "rep")
    text = "\n".join(rep["markdown"])
    assert "seeds [0], list seeds [0, 1]" in text and "mean over seeds and list seeds" in text
    mean = (results[0]["test_acc"] + results[1]["test_acc"]) / 2
    row = next(line for line in text.splitlines() if line.startswith("| `linear`"))
    assert f"{mean:.1f}" in row  # the two list seeds are two repetitions of one method and task, not one run twice
    assert "more than one run" not in text


def test_the_committed_pacs_runs_are_found_again():
    """benchmarks/pacs_dg.py's sweep: the experiment expands to the 84 committed runs, ids and all (a code change that
    moved a run's identity would orphan them); needs ../shared/data/dg/pacs."""
    import copy

    from vpeft.bench.experiment import run_hash

    root = Path(__file__).resolve().parents[1]
    data = root.parent / "shared" / "data" / "dg" / "pacs"
    if not data.is_dir():
        pytest.skip("no ../shared/data/dg/pacs (real data beside the checkout)")
    out = root / "benchmarks" / "results" / "pacs_dg"
    runs = expand(load_experiment(root / "benchmarks" / "experiments" / "pacs_dg.yaml", data_root=str(data)), "x")
    recorded = json.loads((out / "meta.json").read_text())["data_root"]  # a run id hashes the absolute data root
    found = set()
    for r in runs:
        cfg = copy.deepcopy(r.config)
        cfg["data"]["root"] = recorded
        found.add(Path(r.run_dir).name.rsplit("__", 1)[0] + "__" + run_hash(cfg)[:8])
    names = {Path(json.loads(x)["run_dir"]).name for x in (out / "results.jsonl").read_text().splitlines() if x}
    assert len(runs) == 84 and found == names


def test_list_seeds_on_data_that_reads_no_list_seed_are_refused(tmp_path):
    root = _domains(tmp_path / "data")
    tasks = {"fs": {"root": ".", "data": {"lists": {"train": "a_train.txt", "test": "test.txt"}}}}
    with pytest.raises(ConfigError, match=r"list_seeds vary data.fewshot_seed, which data format 'lists' does not"):
        expand(load_experiment(_base(root, tasks=tasks, list_seeds=[0, 1])), tmp_path / "out")
