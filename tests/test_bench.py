"""The benchmark harness: expansion, recipes, local and Ray sweeps, resume after a kill, failures, reports, DDP."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_task
from PIL import Image

from vpeft.bench import LocalExecutor, RayExecutor, expand, load_experiment, load_recipe, run_sweep, write_report
from vpeft.bench.experiment import list_recipes
from vpeft.bench.report import collect, compare, compare_lines, summarise, tune
from vpeft.bench.runner import run_one
from vpeft.data.suites import VTAB_TASKS
from vpeft.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"epochs": 2, "batch_size": 8}
METHODS = ["linear", "bitfit", {"label": "lora4", "method": "lora:rank=4"}]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    make_task(root / "alpha", n_train=24, n_test=12, num_classes=3)
    make_task(root / "beta", n_train=16, n_test=12, num_classes=2)
    return root


def _exp(root: Path, **kw) -> dict:
    exp = {
        "name": "t",
        "suite": "tasks",
        "data_root": str(root),
        "tasks": ["alpha", "beta"],
        "backbone": {"spec": TINY},
        "train": dict(TRAIN),
        "methods": METHODS,
        "seeds": [0, 1],
    }
    exp.update(kw)
    return exp


# --- expansion --------------------------------------------------------------------------------------------------------


def test_expand_counts_ids_and_precedence(tasks, tmp_path):
    exp = load_experiment(
        _exp(
            tasks,
            grid={"train.lr": [0.01, 0.02]},
            methods=["linear", {"label": "b", "method": "bitfit", "train": {"epochs": 3}}],
        )
    )
    runs = expand(exp, tmp_path)
    assert len(runs) == 2 * 2 * 2 * 2  # tasks x methods x grid x seeds
    assert len({r.run_id for r in runs}) == len(runs)
    assert [r.run_id for r in expand(exp, tmp_path)] == [r.run_id for r in runs]  # stable
    b = [r for r in runs if r.label == "b"]
    assert {r.config["train"]["epochs"] for r in b} == {3}  # the entry's section beats the experiment's
    assert {r.config["train"]["lr"] for r in runs} == {0.01, 0.02}
    assert {r.config["train"]["seed"] for r in runs} == {0, 1}
    assert all(Path(r.config["data"]["root"]).is_absolute() for r in runs)
    # Changing a setting changes the id; the id does not depend on the order of entries.
    other = expand(load_experiment(_exp(tasks, methods=["bitfit", "linear"])), tmp_path)
    same = expand(load_experiment(_exp(tasks, methods=["linear", "bitfit"])), tmp_path)
    assert {r.run_id for r in other} == {r.run_id for r in same}


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"methods": ["linear", "linear"]}, "repeated: linear"),
        ({"sweep": 1}, "unknown experiment key 'sweep'"),
        ({"methods": [{"label": "x", "method": "lora", "rank": 4}]}, "unknown key 'rank'"),
        ({"methods": ["nosuch"]}, "nosuch"),
        ({"compare": [["linear", "lora"]]}, "compare entry"),
        ({"grid": {"lr": [1]}}, "dotted key"),
        ({"methods": [{"method": "lora", "grid": {"train.lr": []}}]}, r"methods\[0\] \(lora\): grid entry 'train.lr'"),
        ({"methods": [{"method": "lora", "grid": [0.1]}]}, r"methods\[0\] \(lora\): grid must be a mapping"),
        ({"tasks": ["alpha", "gamma"], "suite": "vtab1k"}, "no vtab1k task folder for gamma"),
        ({"recipe": "nosuch"}, "unknown recipe 'nosuch'"),
        ({"seeds": None}, "seeds must be a whole number or a non-empty list"),
        ({"seeds": [0, 0]}, r"seeds repeat: \[0, 0\]"),
        ({"tasks": ["alpha", "alpha"]}, "tasks repeat"),
        ({"suite": "synth", "tasks": ["shape"]}, "unknown generated task 'shape'"),
    ],
)
def test_experiment_errors_name_the_problem(tasks, tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        expand(load_experiment(_exp(tasks, **bad)), tmp_path)


def test_command_line_values_override_entries_and_grids(tasks, tmp_path):
    exp = load_experiment(
        _exp(
            tasks,
            methods=[
                {"label": "a", "method": "linear", "train": {"lr": 0.5}},
                {"label": "b", "method": "bitfit", "train": {"lr": 0.1}, "grid": {"train.weight_decay": [0.0, 0.1]}},
            ],
            backbone=TINY,
        ),  # a backbone given as a spec string
        train={"lr": 0.003},
        backbone={"checkpoint": str(tmp_path / "w.pth")},
    )
    runs = expand(exp, tmp_path)
    assert {r.config["train"]["lr"] for r in runs} == {0.003}
    assert sorted({r.config["train"]["weight_decay"] for r in runs if r.label == "b"}) == [0.0, 0.1]
    with pytest.raises(ConfigError, match="two entries resolve to the same run"):  # an lr grid collapses under --set
        expand(load_experiment(_exp(tasks, grid={"train.lr": [0.1, 0.2]}), train={"lr": 0.003}), tmp_path)
    assert {r.config["backbone"]["checkpoint"] for r in runs} == {str(tmp_path / "w.pth")}
    assert {r.config["backbone"]["spec"] for r in runs} == {TINY}
    assert all(Path(r.run_dir).is_absolute() for r in expand(exp, Path("rel")))


def test_grid_over_selector_options_and_string_values(tasks, tmp_path):
    exp = load_experiment(
        _exp(
            tasks,
            methods=[
                {
                    "label": "g",
                    "method": "linear",
                    "selector": "gps:k=1",
                    "grid": {"selector.k": [1, 2], "data.normalize": ["imagenet"]},
                }
            ],
            seeds=[0],
        )
    )
    runs = expand(exp, tmp_path)
    assert sorted(r.config["selector"]["k"] for r in runs if r.task == "alpha") == [1, 2]
    assert {r.config["data"]["normalize"] for r in runs} == {"imagenet"}


def test_methods_from_the_command_line_drop_the_files_pairs(tasks, tmp_path):
    exp = load_experiment(_exp(tasks, compare=[["linear", "lora4"]]), methods=["linear", "ssf"])
    assert exp.compare == [] and [m["label"] for m in exp.methods] == ["linear", "ssf"]


def _fake_vtab(root: Path) -> Path:
    for t in VTAB_TASKS:
        (root / t).mkdir(parents=True)
        for f in ("train800val200.txt", "test.txt"):
            (root / t / f).write_text("")
    return root


VTAB_RECIPES = sorted(r for r in list_recipes() if load_recipe(r)["defaults"]["data"].get("format") == "vtab1k")


def test_the_vtab_recipes_are_the_four_papers():
    assert VTAB_RECIPES == ["dtl", "dtl_plus", "gist", "gps"]


@pytest.mark.parametrize("recipe", VTAB_RECIPES)
def test_every_recipe_expands_over_vtab(recipe, tmp_path):
    root = _fake_vtab(tmp_path / "vtab")
    r = load_recipe(recipe)
    assert set(r["tasks"]) == set(VTAB_TASKS)
    runs = expand(load_experiment({"suite": "vtab1k", "data_root": str(root), "recipe": recipe}), tmp_path)
    assert len(runs) == 19 * len(r["methods"])
    for run in runs:
        tc = run.config["train"]
        assert (tc["epochs"], tc["cosine_epochs"], tc["warmup_epochs"]) == (110, 100, 10)  # timm's 100 + 10
        assert tc["lr"] == r["tasks"][run.task]["train"]["lr"]


def test_recipe_command_line_as_the_issue_writes_it(tmp_path, capsys):
    from vpeft.cli import main

    root = _fake_vtab(tmp_path / "vtab")
    ckpt = tmp_path / "ViT-B_16.npz"
    ckpt.touch()  # the plan is checked: a checkpoint must exist (it is not read)
    assert (
        main(
            [
                "bench",
                "run",
                "--suite",
                "vtab1k",
                "--recipe",
                "gist",
                "--data-root",
                str(root),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "o"),
                "--dry-run",
            ]
        )
        == 0
    )
    assert "38 runs: 0 finished" in capsys.readouterr().out  # 19 tasks x the recipe's 2 method entries
    runs = [json.loads(x) for x in (tmp_path / "o" / "runs.jsonl").read_text().splitlines()]
    assert {r["config"]["backbone"]["checkpoint"] for r in runs} == {str(ckpt)}
    assert {r["config"]["backbone"]["spec"] for r in runs} == {"vit_base_patch16_224"}


def test_vtab_report_gives_group_means_and_their_mean():
    recs = [
        {
            "label": "A",
            "task": t,
            "seed": 0,
            "test_acc": a,
            "trainable_params_no_head": 1,
            "train_memory_bytes": 1,
            "memory_batch": 2,
            "train_seconds": 1.0,
        }
        for t, a in (("caltech101", 80.0), ("dtd", 60.0), ("eurosat", 90.0), ("clevr_count", 40.0))
    ]
    s = summarise(recs, ["A"], ["caltech101", "dtd", "eurosat", "clevr_count"])["A"]
    assert s["groups"]["natural"][0] == 70.0 and s["groups"]["specialized"][0] == 90.0
    assert s["mean"][0] == 67.5 and s["mean_of_groups"][0] == pytest.approx((70 + 90 + 40) / 3)


def test_recipe_values_from_methods_md(tmp_path):
    """Spot checks against ../shared/METHODS.md sections 3-5."""
    root = _fake_vtab(tmp_path / "vtab")

    def cfg(recipe, task):
        runs = expand(
            load_experiment({"suite": "vtab1k", "data_root": str(root), "recipe": recipe, "tasks": [task]}), tmp_path
        )
        return runs[0].config

    c = cfg("gist", "caltech101")
    assert (c["train"]["lr"], c["train"]["weight_decay"], c["train"]["drop_path"]) == (1e-3, 5e-2, 0.1)
    assert (c["train"]["batch_size"], c["train"]["select"], c["data"]["normalize"]) == (64, "best-test", "inception")
    assert cfg("gist", "clevr_dist")["train"]["lr"] == 5e-2
    g = cfg("gps", "patch_camelyon")
    assert g["selector"]["k"] == 2 and g["train"]["batch_size"] == 32 and g["train"]["optimizer"] == "adam"
    assert cfg("gps", "dtd")["selector"]["k"] == 1
    assert cfg("dtl_plus", "clevr_count")["method"]["kernel"] == 5
    assert cfg("dtl_plus", "dsprites_loc")["train"]["lr"] == 8e-3
    assert cfg("dtl", "dsprites_loc")["train"]["lr"] == 1e-2 and cfg("dtl", "cifar")["train"]["select"] == "last"
    # The experiment's own settings beat the recipe's.
    runs = expand(
        load_experiment(
            {
                "suite": "vtab1k",
                "data_root": str(root),
                "recipe": "gist",
                "tasks": ["dtd"],
                "train": {"select": "val", "epochs": 20},
            }
        ),
        tmp_path,
    )
    assert runs[0].config["train"]["select"] == "val" and runs[0].config["train"]["epochs"] == 20


# --- sweeps -----------------------------------------------------------------------------------------------------------


def _accs(out: Path) -> dict:
    res = {}
    for p in (out / "runs").glob("*/result.json"):
        b = json.loads((p.parent / "bench.json").read_text())
        res[(b["task"], b["label"], b["seed"])] = json.loads(p.read_text())["test_acc"]
    return res


@pytest.fixture(scope="module")
def local_sweep(tasks, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    # A checkpoint that only fails when read (a missing one fails the whole sweep before its first run: check_plan).
    (out / "none.pth").write_bytes(b"not a checkpoint")
    broken = {"label": "broken", "method": "bitfit", "backbone": {"spec": TINY, "checkpoint": str(out / "none.pth")}}
    exp = load_experiment(_exp(tasks, methods=METHODS + [broken], compare=[["linear", "lora4"]]))
    summary = run_sweep(exp, out, LocalExecutor(jobs=2, threads=1), progress=False)
    assert summary["total"] == 16 and summary["done"] == 12
    assert len(summary["failed"]) == 4 and all("cannot read checkpoint" in f["error"] for f in summary["failed"])
    return out


def test_local_sweep_completes_and_isolates_failures(local_sweep):
    accs = _accs(local_sweep)
    assert len(accs) == 12  # 2 tasks x 3 methods x 2 seeds, despite the 4 failing runs
    failed = list((local_sweep / "runs").glob("*broken*/failed.json"))
    assert len(failed) == 4
    info = json.loads(failed[0].read_text())
    assert "CheckpointError" in info["error"] and "Traceback" in info["traceback"]
    log = next((local_sweep / "runs").glob("alpha__linear__s0*/run.log")).read_text()
    assert "finished: test accuracy" in log  # each run has its own log
    runs = [json.loads(x) for x in (local_sweep / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 16 and len({r["run_id"] for r in runs}) == 16


def test_rerun_skips_finished_and_retries_failed(local_sweep, tasks):
    broken = {
        "label": "broken",
        "method": "bitfit",
        "backbone": {"spec": TINY, "checkpoint": str(local_sweep / "none.pth")},
    }
    exp = load_experiment(_exp(tasks, methods=METHODS + [broken], compare=[["linear", "lora4"]]))
    mtimes = {p: p.stat().st_mtime_ns for p in (local_sweep / "runs").glob("*/result.json")}
    s = run_sweep(exp, local_sweep, LocalExecutor(jobs=1, threads=1), progress=False)
    assert s["ran"] == 0 and len(s["failed"]) == 4
    s = run_sweep(exp, local_sweep, LocalExecutor(jobs=1, threads=1), progress=False, retry_failed=True)
    assert s["ran"] == 4 and len(s["failed"]) == 4
    assert {p: p.stat().st_mtime_ns for p in (local_sweep / "runs").glob("*/result.json")} == mtimes


def test_ray_sweep_gives_the_local_accuracies(local_sweep, tasks, tmp_path):
    pytest.importorskip("ray")
    exp = load_experiment(_exp(tasks))
    summary = run_sweep(exp, tmp_path, RayExecutor(threads=1, num_cpus=2), progress=False)
    assert summary["done"] == 12 and not summary["failed"]
    assert _accs(tmp_path) == _accs(local_sweep)
    # And the trained tensors are the same, not just the accuracies.
    from safetensors.torch import load_file

    for p in (tmp_path / "runs").glob("*/trainable.safetensors"):
        a, b = load_file(str(p)), load_file(str(local_sweep / "runs" / p.parent.name / p.name))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_killed_sweep_resumes_only_the_missing_runs(tasks, tmp_path):
    exp = tmp_path / "exp.yaml"
    import yaml

    exp.write_text(yaml.safe_dump(_exp(tasks, train={"epochs": 6, "batch_size": 4})))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "vpeft",
        "bench",
        "run",
        str(exp),
        "--out",
        str(out),
        "--jobs",
        "1",
        "--threads",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("runs/*/result.json"))) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker, mid-sweep
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert 3 <= len(finished) < 12
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{len(finished)} finished" in res.stdout
    assert res.stdout.count("done    ") == 12 - len(finished)  # only the missing runs ran
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert len(after) == 12 and all(after[k] == v for k, v in finished.items())


def test_worker_that_dies_fails_only_its_run(tasks, tmp_path):
    exp = load_experiment(_exp(tasks, methods=["bitfit"], seeds=[0], train={"epochs": 400, "batch_size": 4}))
    (slow,) = [r for r in expand(exp, tmp_path) if r.task == "alpha"]
    (quick,) = [
        r for r in expand(load_experiment(_exp(tasks, methods=["linear"], seeds=[0])), tmp_path) if r.task == "beta"
    ]
    import multiprocessing as mp

    def kill_worker():
        time.sleep(6)
        for child in mp.active_children():
            os.kill(child.pid, signal.SIGKILL)

    threading.Thread(target=kill_worker, daemon=True).start()
    results = dict(
        (Path(s["run_dir"]).name, st)
        for s, st in LocalExecutor(jobs=1, threads=1).map([slow.to_dict(), quick.to_dict()])
    )
    assert results[Path(slow.run_dir).name]["error"].startswith("worker process died")
    assert results[Path(quick.run_dir).name]["state"] == "done"  # a new worker took over


# --- reports ----------------------------------------------------------------------------------------------------------


def test_report_tables_and_plots(local_sweep, tmp_path):
    rep = write_report(local_sweep, tmp_path / "rep")
    md = (tmp_path / "rep" / "summary.md").read_text()
    for label in ("linear", "bitfit", "lora4"):
        assert f"| `{label}` |" in md
    assert "| method | alpha | beta | mean | params (no head) | train memory |" in md
    assert "Failed runs (4)" in md and "CheckpointError" in md
    assert "`lora4` - `linear`" in (tmp_path / "rep" / "compare.md").read_text()  # from the experiment's compare
    accs = _accs(local_sweep)
    row = rep["summary"]["linear"]
    want = sum((accs[("alpha", "linear", s)] + accs[("beta", "linear", s)]) / 2 for s in (0, 1)) / 2
    assert row["mean"][0] == pytest.approx(want)
    assert row["params"] == 0 and rep["summary"]["bitfit"]["params"] > 0
    for name in ("acc_vs_params.png", "acc_vs_memory.png"):
        with Image.open(tmp_path / "rep" / name) as im:
            assert im.size[0] > 600 and im.size[1] > 400
    rows = (tmp_path / "rep" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 12


def test_summary_and_compare_by_hand():
    recs = [
        {
            "label": lab,
            "task": t,
            "seed": s,
            "test_acc": a,
            "trainable_params_no_head": 10,
            "train_memory_bytes": 1,
            "memory_batch": 2,
            "train_seconds": 1.0,
        }
        for lab, t, s, a in [
            ("A", "x", 0, 50.0),
            ("A", "x", 1, 52.0),
            ("A", "y", 0, 70.0),
            ("A", "y", 1, 74.0),
            ("B", "x", 0, 53.0),
            ("B", "x", 1, 53.0),
            ("B", "y", 0, 69.0),
            ("B", "y", 1, 77.0),
        ]
    ]
    s = summarise(recs, ["A", "B"], ["x", "y"])
    assert s["A"]["tasks"]["x"] == (51.0, 1.0, 2)
    assert s["A"]["mean"] == (61.5, 1.5, 2)  # per-seed means 60 and 63
    c = compare(recs, "A", "B", ["x", "y"])
    assert c["tasks"]["x"] == (2.0, 1.0, 2)  # deltas +3, +1
    assert c["tasks"]["y"] == (1.0, 2.0, 2)  # deltas -1, +3
    assert c["mean"] == (1.5, 0.5, 2)  # per-seed mean deltas +1, +2
    row = compare_lines([c], ["x", "y"])[2]
    assert "| +2.0 ±1.0 | +1.0 ±2.0 | **+1.50 ±0.50** | 2/2 tasks |" in row
    # One seed: no spread shown (a ±0.0 would claim a spread of zero), and no "-0.0".
    one = compare(
        [r for r in recs if r["seed"] == 0] + [{**recs[0], "label": "C", "test_acc": 49.999}], "A", "C", ["x"]
    )
    assert compare_lines([one], ["x"])[2] == "| `C` - `A` | +0.0 | **+0.00** | 0/1 tasks |"


class _Inline:
    """Runs a sweep's runs one after another in this process (no worker start-up: for small test sweeps)."""

    name = "inline"

    def map(self, specs):
        for spec in specs:
            yield spec, run_one(spec)


def test_tune_keeps_the_best_validation_point_by_hand():
    def rec(grid, task, seed, val, test):
        return {
            "label": f"m ({grid})",
            "base_label": "m",
            "grid": grid,
            "task": task,
            "seed": seed,
            "val_acc": val,
            "test_acc": test,
            "run_dir": f"{task}{seed}{grid}",
        }

    recs = [
        rec("lr=0.1", "x", 0, 60.0, 50.0),
        rec("lr=0.01", "x", 0, 70.0, 40.0),  # val picks 0.01 (test is lower)
        rec("lr=0.1", "x", 1, 80.0, 55.0),
        rec("lr=0.01", "x", 1, 80.0, 65.0),  # a tie: the first grid point
        rec("lr=0.1", "y", 0, 10.0, 20.0),
        rec("lr=0.01", "y", 0, 30.0, 35.0),
        {"label": "linear", "task": "x", "seed": 0, "val_acc": None, "test_acc": 30.0, "run_dir": "l"},
    ]
    kept, chosen = tune(recs)
    got = {(r["label"], r["task"], r["seed"]): (r["grid"] if "grid" in r else None, r["test_acc"]) for r in kept}
    assert got == {
        ("m", "x", 0): ("lr=0.01", 40.0),
        ("m", "x", 1): ("lr=0.1", 55.0),
        ("m", "y", 0): ("lr=0.01", 35.0),
        ("linear", "x", 0): (None, 30.0),
    }
    assert chosen == {"m": {"lr=0.01": 2, "lr=0.1": 1}}
    recs[0]["val_acc"] = None
    with pytest.raises(ConfigError, match="cannot select on val_acc: run x0lr=0.1 has none"):
        tune(recs)


def test_report_tunes_a_grid_on_validation(tasks, tmp_path, capsys):
    """An entry's own lr grid, plus a second sweep at another lr, reported once per method with --tune val."""
    from vpeft.cli import main

    exp = load_experiment(
        _exp(
            tasks,
            methods=["linear", {"label": "bitfit", "method": "bitfit", "grid": {"train.lr": [1e-4, 0.05]}}],
            seeds=[0],
            train={**TRAIN, "select": "val"},
            compare=[["linear", "bitfit"]],
        )
    )
    assert [(r.label, r.grid) for r in expand(exp, tmp_path)][:3] == [
        ("linear", {}),
        ("bitfit", {"train.lr": 1e-4}),
        ("bitfit", {"train.lr": 0.05}),
    ]
    run_sweep(exp, tmp_path / "sw", _Inline(), progress=False)
    other = load_experiment(_exp(tasks, methods=["bitfit"], seeds=[0], train={**TRAIN, "select": "val", "lr": 0.01}))
    run_sweep(other, tmp_path / "sw2", _Inline(), progress=False)

    assert main(["report", str(tmp_path / "sw"), "--out", str(tmp_path / "plain")]) == 0
    plain = (tmp_path / "plain" / "summary.md").read_text()
    assert "| `bitfit (lr=0.0001)` |" in plain and "| `bitfit (lr=0.05)` |" in plain
    assert not (tmp_path / "plain" / "compare.md").exists()  # the experiment's pair needs the tuned label

    sweeps = [str(tmp_path / "sw"), str(tmp_path / "sw2")]
    assert main(["report", *sweeps, "--out", str(tmp_path / "tuned"), "--tune", "val"]) == 0
    md = (tmp_path / "tuned" / "summary.md").read_text()
    assert "| `bitfit` |" in md and "bitfit (lr" not in md.split("## Chosen")[0]
    assert "## Chosen on validation" in md and "`bitfit` - `linear`" in (tmp_path / "tuned" / "compare.md").read_text()
    recs = collect(tmp_path / "sw") + collect(tmp_path / "sw2")
    row = next(line for line in md.splitlines() if line.startswith("| `bitfit` |")).split(" | ")
    for i, task in enumerate(["alpha", "beta"]):
        best = max((r for r in recs if r["task"] == task and r["method"] == "bitfit"), key=lambda r: r["val_acc"])
        assert row[1 + i] == f"{best['test_acc']:.1f}"
    assert len((tmp_path / "tuned" / "results.csv").read_text().splitlines()) == 1 + 8  # every run, not only the kept
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "sw"), "--out", str(tmp_path / "t2"), "--tune", "test"])
    assert "invalid choice: 'test'" in capsys.readouterr().err


def test_bench_cli_status_report_and_recipes(local_sweep, tmp_path, capsys):
    from vpeft.cli import main

    assert main(["bench", "status", str(local_sweep)]) == 0
    out = capsys.readouterr().out
    assert "done     12" in out and "failed   4" in out
    assert main(["report", str(local_sweep), "--out", str(tmp_path / "r"), "--compare", "linear", "bitfit"]) == 0
    assert "`bitfit` - `linear`" in (tmp_path / "r" / "compare.md").read_text()
    assert main(["report", str(local_sweep), "--out", str(tmp_path / "r2"), "--compare", "linear", "nosuch"]) == 2
    assert not (tmp_path / "r2").exists()  # checked before anything is written
    assert main(["bench", "recipes"]) == 0
    assert "gist" in capsys.readouterr().out
    assert (
        main(
            [
                "bench",
                "run",
                "--suite",
                "tasks",
                "--tasks",
                str(tmp_path / "missing"),
                "--method",
                "linear",
                "--out",
                str(tmp_path / "o"),
                "--dry-run",
            ]
        )
        == 2
    )
    # A dry run plans without writing the plan (a smaller one would hide finished runs from reports).
    assert (
        main(
            [
                "bench",
                "run",
                "--suite",
                "tasks",
                "--data-root",
                str(local_sweep.parent),
                "--tasks",
                "x",
                "--method",
                "linear",
                "--out",
                str(tmp_path / "dry"),
                "--dry-run",
            ]
        )
        == 2
    )  # no such task folder
    before = (local_sweep / "runs.jsonl").read_text()
    exp = load_experiment(
        _exp(Path(json.loads(before.splitlines()[0])["config"]["data"]["root"]).parent, methods=["linear"])
    )
    run_sweep(exp, local_sweep, _Inline(), dry_run=True, progress=False)
    assert (local_sweep / "runs.jsonl").read_text() == before
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["bench", "run", "--suite", "synth", "--method", "linear", "--out", str(tmp_path / "j"), "--jobs", "0"])
    assert "--jobs: expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_moved_sweep_status_and_report_from_its_results_file(local_sweep, tmp_path, capsys):
    import shutil

    from vpeft.cli import main

    moved = tmp_path / "moved"
    shutil.copytree(local_sweep, moved)
    done = next(p.parent for p in (moved / "runs").glob("*/result.json"))
    (done / "failed.json").write_text(json.dumps({"error": "worker died after writing its result"}))
    capsys.readouterr()
    assert main(["bench", "status", str(moved)]) == 0
    out = capsys.readouterr().out
    assert "done     12" in out and "failed   4" in out
    stale = moved / "runs" / "alpha__edited-away__s0__00000000"  # a failed run of an earlier plan
    stale.mkdir()
    (stale / "failed.json").write_text(json.dumps({"error": "an entry since removed from the experiment"}))
    rep = write_report(moved)
    assert len(rep["failures"]) == 4  # neither the finished run with a stray failed.json nor the stale one
    assert "more than one run" not in (moved / "report" / "summary.md").read_text()
    twice = write_report([moved, local_sweep], tmp_path / "twice")  # the same runs in two folders look like repeats
    assert "**Note:** 12 method/task/seed combinations have more than one run" in "\n".join(twice["markdown"])
    assert "training memory measured at batch 8, float32, cpu." in (moved / "report" / "summary.md").read_text()
    # Rebuilt from the report's own results.jsonl, into the same folder by default.
    (moved / "report" / "summary.md").unlink()
    assert main(["report", str(moved / "report" / "results.jsonl")]) == 0
    assert (moved / "report" / "summary.md").is_file()


# --- data-parallel training -------------------------------------------------------------------------------------------


def test_ddp_two_processes_match_one(tmp_path):
    from safetensors.torch import load_file

    # 38 + 19 = 57 training images: the last global batch of 8 holds one, so the second process's share is empty.
    task = make_task(tmp_path / "task", n_train=38, n_test=12, num_classes=3)
    args = [
        "train",
        "--data",
        str(task),
        "--backbone",
        TINY,
        "--method",
        "lora",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--out",
        "{out}",
        "--no-progress",
        "train.device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = [sys.executable, "-m", "vpeft", *[a.replace("{out}", str(tmp_path / "one")) for a in args]]
    two = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "vpeft",
        *[a.replace("{out}", str(tmp_path / "two")) for a in args],
    ]
    for cmd in (one, two):
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
        assert res.returncode == 0, res.stderr[-2000:]
    r1, r2 = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "two"))
    assert r2["distributed"] == {"world_size": 2, "backend": "gloo", "batch_per_process": 4}
    assert r1["test_acc"] == r2["test_acc"]
    a, b = (load_file(str(tmp_path / d / "trainable.safetensors")) for d in ("one", "two"))
    assert a.keys() == b.keys()
    for k in a:  # same global batch, same gradient: equal up to float summation order
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    l1, l2 = ([json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("one", "two"))
    assert [e["train_acc"] for e in l1] == [e["train_acc"] for e in l2]
    assert all(abs(x["loss"] - y["loss"]) < 1e-5 for x, y in zip(l1, l2))


def test_report_names_a_corrupt_result_file(tmp_path):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "result.json").write_text("{bad")
    with pytest.raises(ConfigError, match=r"result.json: not a readable JSON file"):
        write_report(tmp_path)
    assert (run / "result.json").read_text() == "{bad"  # nothing touched
    bad = tmp_path / "r" / "results.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"label": "a"}\n{bad\n')
    with pytest.raises(ConfigError, match=r"results.jsonl:2: not a JSON record"):
        write_report(bad)
    assert bad.read_text() == '{"label": "a"}\n{bad\n'  # the report it would rebuild is untouched
    with pytest.raises(ConfigError, match="is a file: give a results folder"):
        write_report(run / "result.json")
