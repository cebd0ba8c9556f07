"""GLUE with all-MiniLM-L6-v2: six methods x four tasks x 3 seeds, under ATTEMPT's re-split and GLUE's split (issue 20).

    python benchmarks/glue_minilm.py                                  # the sweeps (resumable), then the reports
    python benchmarks/glue_minilm.py --seeds 0 --max-train 64 --epochs 1 --work runs/glue_try --out /tmp/glue_try
    python benchmarks/glue_minilm.py --report-only                    # rebuild the reports from the sweep folders

``benchmarks/experiments/glue_minilm.yaml`` holds the protocol (methods, the training subsample, epochs, learning
rates; the last epoch is tested). The two splits differ in their test sets: ATTEMPT's re-split (``split_rule
attempt``) tests the small tasks (RTE, MRPC, STS-B) on one half of dev, GLUE's split on the whole dev set; their
training rows are the same (train.tsv in file order, the same seeded subsample), checked here example by example, so
one run per task, method and seed is trained and its model tested on both (``vpeft.run.evaluate_task`` on the GLUE
split's test set, written to ``<work>/glue_split/<run>.json``). Where the training rows differ (SST-2: ATTEMPT holds
1,000 training rows out), the GLUE split gets runs of its own (the sweep ``<work>/glue``). Runs go seed by seed, so a
sweep stopped early holds whole seeds. Reports: ``benchmarks/results/glue_minilm/`` (``summary.md``: both splits side
by side; ``attempt/`` and ``glue/``: vpeft's reports of the sweeps; ``meta.json``: command, data root, seconds,
device). The data is not shipped: ``../shared/data/glue`` (the official TSVs, see its PROVENANCE.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

try:
    from _common import OUT, command
except ImportError:  # imported as benchmarks.glue_minilm
    from benchmarks._common import OUT, command

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "benchmarks" / "experiments" / "glue_minilm.yaml"
#: Each task's reported metric (percent; correlations x 100): GLUE's first for it.
METRICS = {"RTE": "accuracy", "MRPC": "f1", "STS-B": "pearson", "SST-2": "accuracy"}


def experiment(split: str, data: str, seeds, tasks, methods=None, max_train=None, epochs=None, backbone=None):
    from vpeft.bench import load_experiment

    data_over = {"split_rule": split, **({"max_train": max_train} if max_train else {})}
    exp = load_experiment(
        EXPERIMENT,
        data_root=data,
        seeds=seeds,
        tasks=list(tasks),
        data=data_over,
        train={"epochs": epochs} if epochs else None,
        backbone={"spec": backbone} if backbone else None,
    )
    if methods:
        unknown = [m for m in methods if m not in [e["label"] for e in exp.methods]]
        if unknown:
            raise SystemExit(f"no method {unknown[0]!r} (labels: {', '.join(e['label'] for e in exp.methods)})")
        exp.methods = [e for e in exp.methods if e["label"] in methods]
        exp.compare = [c for c in exp.compare if all(x in methods for x in c)]
    return exp


def same_training_rows(data: str, task: str, max_train: int | None) -> bool:
    """Whether ATTEMPT's re-split and GLUE's split train on the same examples, in the same order."""
    from vpeft.data.entries import layout

    glue = layout("glue")
    rows = {
        rule: [(e.texts, e.label) for e in glue.examples(Path(data) / task, "train", rule, 42, None, max_train)]
        for rule in ("attempt", "glue")
    }
    return rows["attempt"] == rows["glue"]


def test_on_glue_split(run_dir: Path) -> dict:
    """The metrics of an ATTEMPT-split run's model on GLUE's test split (the whole dev set)."""
    from vpeft.data.sources import load_text
    from vpeft.run import evaluate_task, load_run

    model, objective, cfg, num_classes = load_run(run_dir)
    dc = dataclasses.replace(cfg.data, split_rule="glue")
    tokens = cfg.task.text_encoder(model, dc)
    ds = load_text(dc, "test", num_classes if cfg.task.labels == "int" else None, dc.root, cfg.task.labels, tokens)
    metric = evaluate_task(model, objective, ds, cfg.task.build(), cfg.train.eval_batch_size or 64)
    return {"metrics": metric.compute(), "test_total": len(ds), "trained_as": str(run_dir)}


def score(metrics: dict, task: str) -> float | None:
    """A test score on the task's metric, in percent (correlations are fractions: x 100)."""
    metric = METRICS.get(task, "accuracy")
    value = metrics.get(metric)
    if value is None:
        return None
    return float(value) * (100.0 if metric in ("pearson", "spearman") else 1.0)


def _plan(work: Path) -> list[dict]:
    """The runs of a sweep folder, every seed's (each run's ``bench.json``: label, task, seed, run_dir); the sweep's
    ``runs.jsonl`` holds the last call's seeds only."""
    found = sorted((work / "runs").glob("*/bench.json")) if (work / "runs").is_dir() else []
    return [{**json.loads(p.read_text()), "run_dir": str(p.parent)} for p in found]


def _result(work: Path, spec: dict) -> dict | None:
    path = Path(spec["run_dir"]) / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


def collect(work: Path) -> tuple[dict, dict]:
    """``{split: {label: {task: [score per seed]}}}`` and ``{label: trainable on RTE}``."""
    cells: dict = {"attempt": {}, "glue": {}}
    params: dict = {}
    for spec in _plan(work / "attempt"):
        r = _result(work / "attempt", spec)
        if r is None:
            continue
        label, task = spec["label"], spec["task"]
        cells["attempt"].setdefault(label, {}).setdefault(task, []).append(score(r["metrics"], task))
        if task == "RTE":
            params[label] = r["trainable_params"]
        cross = work / "glue_split" / f"{Path(spec['run_dir']).name}.json"
        if cross.is_file():
            m = json.loads(cross.read_text())["metrics"]
            cells["glue"].setdefault(label, {}).setdefault(task, []).append(score(m, task))
    for spec in _plan(work / "glue"):
        r = _result(work / "glue", spec)
        if r is not None:
            cells["glue"].setdefault(spec["label"], {}).setdefault(spec["task"], []).append(
                score(r["metrics"], spec["task"])
            )
    return cells, params


def table(cells: dict, params: dict, split: str) -> list[str]:
    tasks = list(METRICS)
    lines = [
        "| method | trainable (RTE) | " + " | ".join(f"{t} ({METRICS[t]})" for t in tasks) + " | mean |",
        "|---|---:|" + "---:|" * (len(tasks) + 1),
    ]
    import yaml

    order = [e["label"] if isinstance(e, dict) else e for e in yaml.safe_load(EXPERIMENT.read_text())["methods"]]
    for label, per in sorted(cells[split].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99):
        row, means = [], []
        for t in tasks:
            vals = [v for v in per.get(t, []) if v is not None]
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                row.append(f"{statistics.mean(vals):.1f} ± {sd:.1f}" + ("" if len(vals) == 3 else f" (n={len(vals)})"))
                means.append(statistics.mean(vals))
            else:
                row.append("–")
        mean = f"{statistics.mean(means):.1f}" if len(means) == len(tasks) else "–"
        n = params.get(label)
        lines.append(f"| {label} | {f'{n:,}' if n is not None else '–'} | " + " | ".join(row) + f" | {mean} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "glue"), help="folder of GLUE task folders")
    p.add_argument("--work", default=str(ROOT / "runs" / "glue_minilm"), help="sweep folder")
    p.add_argument("--out", default=str(OUT / "glue_minilm"), help="report folder")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", help="only these method labels (default: the experiment's six)")
    p.add_argument("--tasks", nargs="+", choices=list(METRICS), default=list(METRICS), help="GLUE task folders")
    p.add_argument("--backbone", help="backbone spec (default: the experiment's hf_text:minilm)")
    p.add_argument("--max-train", type=int, help="training pairs per task (default: the experiment's)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the experiment's)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)

    from vpeft.bench import LocalExecutor, run_sweep, write_report

    work, out = Path(args.work), Path(args.out)

    def exp_of(split: str, data: str, seeds, tasks):
        return experiment(split, data, seeds, tasks, args.methods, args.max_train, args.epochs, args.backbone)

    old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    seconds = old.get("seconds") or 0.0
    shared = old.get("same_training_rows", {})
    if not args.report_only:
        missing = [t for t in args.tasks if not (Path(args.data) / t / "train.tsv").is_file()]
        if missing:
            p.error(f"no GLUE data in {args.data} (missing {', '.join(missing)}/train.tsv): give --data")
        max_train = args.max_train or experiment("attempt", args.data, [0], args.tasks).base["data"]["max_train"]
        shared = {t: same_training_rows(args.data, t, max_train) for t in args.tasks}
        own = [t for t, same in shared.items() if not same]  # the GLUE split trains these itself
        print(f"same training rows under both splits: {', '.join(t for t, s in shared.items() if s)}; "
              f"GLUE-split runs of their own: {', '.join(own) or 'none'}", flush=True)  # fmt: skip
        t0 = time.time()
        for seed in args.seeds:  # seed-major: a stopped sweep holds whole seeds
            exp = exp_of("attempt", args.data, [seed], args.tasks)
            s = run_sweep(exp, work / "attempt", LocalExecutor(jobs=args.jobs, threads=args.threads), progress=False)
            print(f"seed {seed}, ATTEMPT's split: {s['done']}/{s['total']} finished, {len(s['failed'])} failed")
            for spec in _plan(work / "attempt"):
                run = Path(spec["run_dir"])
                target = work / "glue_split" / f"{run.name}.json"
                if spec["task"] in shared and shared[spec["task"]] and (run / "result.json").is_file():
                    if not target.is_file():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_text(json.dumps(test_on_glue_split(run), indent=1) + "\n")
            if own:
                exp = exp_of("glue", args.data, [seed], own)
                s = run_sweep(exp, work / "glue", LocalExecutor(jobs=args.jobs, threads=args.threads), progress=False)
                print(f"seed {seed}, GLUE's split ({', '.join(own)}): {s['done']}/{s['total']} finished")
        seconds += time.time() - t0
    # The sweeps ran a seed at a time, each writing its own plan: write the whole plan, so the reports read every seed.
    from vpeft.bench.runner import plan

    data_root = args.data if not args.report_only else old.get("data_root", args.data)
    own = [t for t, same in shared.items() if not same]
    for split, tasks in (("attempt", [t for t in args.tasks if t in shared]), ("glue", own)):
        if tasks and (work / split / "runs").is_dir():
            exp = exp_of(split, data_root, args.seeds, tasks)
            plan(exp, work / split)
    reports = {}
    for split in ("attempt", "glue"):
        if _plan(work / split):
            reports[split] = write_report(work / split, out / split, title=f"GLUE, all-MiniLM-L6-v2, split {split}")
    cells, params = collect(work)
    lines = [
        "# GLUE with all-MiniLM-L6-v2 (issue 20)",
        "",
        "Test score in percent (RTE, SST-2: accuracy; MRPC: F1 of the paraphrase class; STS-B: Pearson x 100), mean ± "
        "standard deviation over 3 seeds; trainable parameters with the head on RTE (2 classes). Setting: "
        "benchmarks/experiments/glue_minilm.yaml (256 training pairs per task, 3 epochs, the last one tested, mean "
        "pooling, max length 128). Where both splits train on the same rows (RTE, MRPC, STS-B) one model per run is "
        "tested on both test sets; SST-2 is trained under each split.",
        "",
        "## ATTEMPT's re-split (test: one half of dev; SST-2: dev)",
        "",
        *table(cells, params, "attempt"),
        "",
        "## GLUE's split (test: the whole dev set)",
        "",
        *table(cells, params, "glue"),
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(lines))
    meta = {
        "command": old.get("command") if args.report_only and old.get("command") else command("glue_minilm.py", argv),
        "experiment": "benchmarks/experiments/glue_minilm.yaml",
        "same_training_rows": shared,
        "cells": cells,
        "seconds": seconds,
        "device": f"cpu, {args.threads} thread(s) per run, {args.jobs} run(s) at a time, float32",
        "data_root": old.get("data_root") if args.report_only else str(Path(args.data).resolve()),
        "failures": {k: len(v["failures"]) for k, v in reports.items()},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
