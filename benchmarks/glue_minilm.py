"""GLUE with all-MiniLM-L6-v2: six methods x four tasks x 3 seeds, under ATTEMPT's re-split and GLUE's split (issue 20).

    python benchmarks/glue_minilm.py                                  # both splits (resumable), then the reports
    python benchmarks/glue_minilm.py --splits glue --seeds 0 --max-train 64 --epochs 1 --work runs/glue_try  # a try
    python benchmarks/glue_minilm.py --report-only                    # rebuild the reports from the sweep folders

``benchmarks/experiments/glue_minilm.yaml`` holds the protocol (methods, the training subsample, epochs, learning
rates). ``--splits attempt`` is ATTEMPT's re-split (select the epoch on the validation half of dev, test on the other
half; SST-2: 1,000 held-out training rows validate, dev tests); ``--splits glue`` is GLUE's own (train, test on the
whole dev set, the last epoch: GLUE gives no validation split, and choosing on dev would be choosing on the test).
The runs go seed by seed through both splits, so a sweep stopped early holds whole seeds. Sweeps go to
``runs/glue_minilm/<split>``, reports to ``benchmarks/results/glue_minilm/<split>/`` and the two side by side to
``benchmarks/results/glue_minilm/summary.md`` (with ``meta.json``: command, data root, seconds, device).
The data is not shipped: ``../shared/data/glue`` (the official TSVs, see its PROVENANCE.md).
"""

from __future__ import annotations

import argparse
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
SPLITS = {
    "attempt": {"data": {"split_rule": "attempt"}, "train": {"select": "val"}},
    "glue": {"data": {"split_rule": "glue"}, "train": {"select": "last"}},
}
#: Each task's reported metric (percent): GLUE's first for it.
METRICS = {"RTE": "accuracy", "MRPC": "f1", "STS-B": "pearson", "SST-2": "accuracy"}


def experiment(split: str, data: str, seeds, methods=None, max_train=None, epochs=None):
    from vpeft.bench import load_experiment

    setting = SPLITS[split]
    data_over = dict(setting["data"], **({"max_train": max_train} if max_train else {}))
    train_over = dict(setting["train"], **({"epochs": epochs} if epochs else {}))
    exp = load_experiment(EXPERIMENT, data_root=data, seeds=seeds, data=data_over, train=train_over)
    if methods:
        unknown = [m for m in methods if m not in [e["label"] for e in exp.methods]]
        if unknown:
            raise SystemExit(f"no method {unknown[0]!r} (labels: {', '.join(e['label'] for e in exp.methods)})")
        exp.methods = [e for e in exp.methods if e["label"] in methods]
        exp.compare = [c for c in exp.compare if all(x in methods for x in c)]
    return exp


def score(result: dict, task: str) -> float | None:
    """A finished run's test score on its task's metric (percent; STS-B: Pearson x 100)."""
    metric = METRICS.get(task, "accuracy")
    value = (result.get("metrics") or {}).get(metric)
    if value is None:
        return None
    return float(value) * (100.0 if metric in ("pearson", "spearman") else 1.0)  # correlations are fractions


def summary_table(work: Path, splits: list[str]) -> tuple[list[str], dict]:
    """Methods x tasks (mean +- std over seeds) for each split, and the trainable parameters."""
    lines, data = [], {}
    for split in splits:
        plan = work / split / "runs.jsonl"
        if not plan.is_file():
            continue
        specs = [json.loads(line) for line in plan.read_text().splitlines() if line.strip()]
        cells: dict = {}
        params: dict = {}
        for s in specs:
            res = Path(s["run_dir"])
            res = work / split / "runs" / res.name / "result.json"
            if not res.is_file():
                continue
            r = json.loads(res.read_text())
            v = score(r, s["task"])
            if v is not None:
                cells.setdefault(s["label"], {}).setdefault(s["task"], []).append(v)
            params.setdefault(s["label"], {})[s["task"]] = r.get("trainable_params")
        tasks = list(METRICS)
        lines += [
            f"### split: {split}",
            "",
            "| method | trainable (RTE) | " + " | ".join(f"{t} ({METRICS[t]})" for t in tasks) + " | mean |",
            "|---|---:|" + "---:|" * (len(tasks) + 1),
        ]
        for label, per in cells.items():
            row, means = [], []
            for t in tasks:
                vals = per.get(t, [])
                if vals:
                    m = statistics.mean(vals)
                    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                    row.append(f"{m:.1f} ± {sd:.1f} (n={len(vals)})")
                    means.append(m)
                else:
                    row.append("–")
            mean = f"{statistics.mean(means):.1f}" if len(means) == len(tasks) else "–"
            n = params.get(label, {}).get("RTE")
            lines.append(f"| {label} | {n:,} | " if n else f"| {label} | – | ")
            lines[-1] += " | ".join(row) + f" | {mean} |"
        lines.append("")
        data[split] = cells
    return lines, data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "glue"), help="folder of GLUE task folders")
    p.add_argument("--work", default=str(ROOT / "runs" / "glue_minilm"), help="sweep folder (one per split inside)")
    p.add_argument("--out", default=str(OUT / "glue_minilm"), help="report folder")
    p.add_argument("--splits", nargs="+", choices=list(SPLITS), default=list(SPLITS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", help="only these method labels (default: the experiment's six)")
    p.add_argument("--max-train", type=int, help="training pairs per task (default: the experiment's)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the experiment's)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)

    from vpeft.bench import LocalExecutor, run_sweep, write_report

    work, out = Path(args.work), Path(args.out)
    old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    seconds = old.get("seconds") or 0.0
    if not args.report_only:
        missing = [t for t in METRICS if not (Path(args.data) / t / "train.tsv").is_file()]
        if missing:
            p.error(f"no GLUE data in {args.data} (missing {', '.join(missing)}/train.tsv): give --data")
        t0 = time.time()
        for seed in args.seeds:  # seed-major through both splits: a stopped sweep holds whole seeds
            for split in args.splits:
                exp = experiment(split, args.data, [seed], args.methods, args.max_train, args.epochs)
                s = run_sweep(exp, work / split, LocalExecutor(jobs=args.jobs, threads=args.threads), progress=False)
                print(f"seed {seed}, split {split}: {s['done']}/{s['total']} finished, {len(s['failed'])} failed")
        seconds = time.time() - t0
    reports = {}
    for split in args.splits:
        if (work / split / "runs.jsonl").is_file():
            reports[split] = write_report(work / split, out / split, title=f"GLUE, all-MiniLM-L6-v2, split {split}")
    lines, cells = summary_table(work, args.splits)
    head = [
        "# GLUE with all-MiniLM-L6-v2 (issue 20)",
        "",
        "Test score in percent (RTE, SST-2: accuracy; MRPC: F1 of the paraphrase class; STS-B: Pearson x 100), mean ± "
        "standard deviation over seeds; trainable parameters with the head on RTE (2 classes). Setting: "
        "benchmarks/experiments/glue_minilm.yaml.",
        "",
    ]
    (out / "summary.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(head + lines))
    meta = {
        "command": old.get("command") if args.report_only and old.get("command") else command("glue_minilm.py", argv),
        "experiment": "benchmarks/experiments/glue_minilm.yaml",
        "splits": args.splits,
        "cells": cells,
        "seconds": seconds,
        "device": f"cpu, {args.threads} thread(s) per run, {args.jobs} run(s) at a time, float32",
        "data_root": old.get("data_root") if args.report_only else str(Path(args.data).resolve()),
        "failures": {k: len(v["failures"]) for k, v in reports.items()},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print("\n".join(head + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
