"""``vpeft bench ...`` and ``vpeft report``: the harness's command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ..rundir import RunDir
from ..spec import apply_overrides
from .experiment import SUITE_FORMATS, list_recipes, load_experiment
from .report import write_report
from .runner import LocalExecutor, RayExecutor, run_state, run_sweep

BENCH_EPILOG = """examples:
  vpeft bench run benchmarks/experiments/mini_vtab.yaml --suite synth --out results/synth --jobs 2
  vpeft bench run --suite vtab1k --recipe gist --data-root data/vtab-1k --checkpoint ViT-B_16.npz --out results/gist
  vpeft bench run --suite synth --method linear --method lora --preset idat-ps-kl --seeds 0 1 2 --out results/s
  vpeft bench run exp.yaml --out results/x --jobs 4 --gpus-per-run 2     # 8 GPUs: GPUs 0,1 / 2,3 / 4,5 / 6,7
  vpeft bench run exp.yaml --out results/x --executor ray --ray-address auto --gpus-per-run 1
  vpeft bench status results/x
  vpeft bench run --suite fewshot --data-root data/dg --method linear --list-seeds 0 1 2 --set data.shot=4 --out res/fs
  vpeft bench run --suite seg --data-root data/seg --backbone sam:tiny --method linear --method full --out res/seg
  vpeft bench recipes
  vpeft report results/x --compare adapter adapter+gist
"""


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def add_parsers(sub) -> None:
    b = sub.add_parser(
        "bench",
        help="run a sweep of tasks x methods x seeds (local or Ray), resumable",
        description="Benchmark sweeps. An experiment (YAML file and/or options) expands into runs, "
        "identified by the hash of their resolved config: finished runs are never redone, killed ones "
        "resume, failed ones are recorded and skipped (--retry-failed reruns them).",
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bs = b.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    r = bs.add_parser(
        "run", help="run (or resume) a sweep", epilog=BENCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    r.add_argument("experiment", nargs="?", help="experiment YAML (see docs/benchmarks.md); options below override it")
    r.add_argument("--out", required=True, help="sweep folder (runs/, experiment.yaml, runs.jsonl, sweep.json)")
    r.add_argument(
        "--suite",
        choices=list(SUITE_FORMATS),
        help="layout of the task folders under --data-root (seg: segfolder folders, task segment)",
    )
    r.add_argument("--data-root", help="folder holding the task folders (synth: generated there if missing)")
    r.add_argument("--tasks", nargs="+", help="task folder names (a subset, or paths with --suite tasks)")
    r.add_argument("--recipe", help="per-task settings: a shipped recipe (vpeft bench recipes) or a YAML file")
    r.add_argument("--method", action="append", help="method spec; repeat for several (replaces the file's list)")
    r.add_argument(
        "--preset",
        action="append",
        help="a named preset as a method entry (e.g. idat-ps-kl); with --method, these replace the file's list",
    )
    r.add_argument("--seeds", nargs="+", type=int)
    r.add_argument(
        "--list-seeds",
        nargs="+",
        type=int,
        help="few-shot list seeds (data.fewshot_seed): every run repeated over them; reports average over them",
    )
    r.add_argument("--backbone", help="backbone spec for every run")
    r.add_argument("--task", help="task spec for every run, e.g. segment:loss=bce_dice (replaces the recipe's)")
    r.add_argument("--checkpoint", help="backbone weights for every run")
    r.add_argument("--select", choices=["last", "val", "best-test"], help="model-selection rule for every run")
    r.add_argument("--epochs", type=int)
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override for every run, e.g. --set train.batch_size=64",
    )
    r.add_argument("--executor", choices=["local", "ray"], default="local")
    r.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        help="local: runs at a time (default 1), each in its own worker with its own GPU(s)",
    )
    r.add_argument("--threads", type=_positive, help="torch threads per run (default: all cores / jobs)")
    r.add_argument("--fresh-process", action="store_true", help="local: a new process for every run")
    r.add_argument("--ray-address", help="ray: address of a running cluster (default: start a local instance)")
    r.add_argument("--ray-cpus", type=int, help="ray: CPUs of the local instance (default: all)")
    r.add_argument(
        "--gpus-per-run",
        type=float,
        help="local: GPUs each worker sees, round robin over the visible GPUs through CUDA_VISIBLE_DEVICES "
        "(a whole number, default 1; 0 hides them; more jobs than GPUs share, with a warning); ray: GPUs "
        "each run asks for (default 0)",
    )
    r.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and stop (a new folder gets runs.jsonl to read; an existing plan is never replaced)",
    )
    r.add_argument("--report", action="store_true", help="write the report (vpeft report) when the sweep ends")
    r.add_argument("--no-progress", action="store_true")

    s = bs.add_parser("status", help="what a sweep folder holds: finished, partial, failed and new runs")
    s.add_argument("out", help="sweep folder")
    s.add_argument("--failed", action="store_true", help="print each failure's error")

    bs.add_parser(
        "recipes", help="list the shipped recipes (papers' per-task settings: VTAB-1K, domain generalisation, few-shot)"
    )

    rp = sub.add_parser(
        "report",
        help="tables (markdown, CSV) and plots from a folder of finished runs",
        description="Collect every result.json under RESULTS (a sweep folder or any tree of runs) "
        "into per-task tables with group means, the mean over tasks, trainable parameters and "
        "training memory; plot accuracy against parameters and against memory; compare pairs of "
        "methods per task, paired by seed.",
    )
    rp.add_argument(
        "results",
        nargs="+",
        help="sweep folder or any folder of run directories (or a report's results.jsonl); several "
        "are reported together (e.g. a sweep and a grid around it, with --tune val)",
    )
    rp.add_argument("--out", help="report folder (default: the first RESULTS/report)")
    rp.add_argument(
        "--compare",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        help="report B - A per task (method labels); repeatable",
    )
    rp.add_argument("--title", help="heading of the tables and plots (default: the folder's name)")
    rp.add_argument(
        "--tune",
        choices=["val"],
        help="report each method run at several grid points once, at the point with the best "
        "validation accuracy per task and seed (the runs must be trained with select=val)",
    )


def _experiment(args):
    base: dict = {"backbone": {}, "train": {}, "data": {}}
    if args.backbone:
        base["backbone"]["spec"] = args.backbone
    if args.checkpoint:
        base["backbone"]["checkpoint"] = args.checkpoint
    if args.select:
        base["train"]["select"] = args.select
    if args.epochs:
        base["train"]["epochs"] = args.epochs

    base = apply_overrides(base, args.set)
    methods = None
    if args.method or args.preset:
        methods = list(args.method or []) + [{"preset": p} for p in args.preset or []]
    cli = {
        "suite": args.suite,
        "data_root": args.data_root,
        "tasks": args.tasks,
        "recipe": args.recipe,
        "task": args.task,
        "seeds": args.seeds,
        "list_seeds": args.list_seeds,
        "methods": methods,
        **{k: v for k, v in base.items() if v},
    }
    if args.suite == "synth" and not args.data_root and not args.experiment:
        cli["data_root"] = str(Path(args.out) / "data")
    exp = load_experiment(args.experiment or {"name": Path(args.out).name}, **cli)
    if exp.suite == "synth" and not exp.data_root:
        exp.data_root = str(Path(args.out) / "data")
    return exp


def cmd_bench(args) -> int:
    if args.bench_command == "recipes":
        recipes = list_recipes()
        width = max(map(len, recipes), default=0)
        for name, about in recipes.items():
            print(f"{name:{width}s}  {about}")
        return 0
    if args.bench_command == "status":
        runs = Path(args.out) / "runs.jsonl"
        if not runs.is_file():
            raise ConfigError(f"{args.out} is not a sweep folder (no runs.jsonl)")
        specs = [json.loads(line) for line in runs.read_text().splitlines() if line.strip()]
        for s in specs:  # where the folder is now (it may have been moved since the plan was written)
            s["run_dir"] = str(Path(args.out) / "runs" / Path(s["run_dir"]).name)
        states = [(s, run_state(s["run_dir"])) for s in specs]
        for k in ("done", "partial", "pending", "failed"):
            print(f"{k:8s} {sum(st == k for _, st in states)}")
        if args.failed:
            for s, st in states:
                if st == "failed":
                    err = (RunDir(s["run_dir"]).read_failure() or {}).get("error", "?")
                    print(f"{Path(s['run_dir']).name}: {err}")
        return 0
    exp = _experiment(args)
    import os

    if args.executor == "ray":
        executor = RayExecutor(
            address=args.ray_address, threads=args.threads or 1, gpus=args.gpus_per_run or 0, num_cpus=args.ray_cpus
        )
    else:
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        executor = LocalExecutor(
            jobs=args.jobs, threads=threads, fresh=args.fresh_process, gpus_per_run=args.gpus_per_run
        )
    summary = run_sweep(
        exp, args.out, executor, retry_failed=args.retry_failed, progress=not args.no_progress, dry_run=args.dry_run
    )
    if not args.dry_run:
        print(
            f"{summary['done']}/{summary['total']} runs finished, {len(summary['failed'])} failed"
            + (f" (vpeft bench status {args.out} --failed)" if summary["failed"] else "")
        )
    if args.report and summary["done"]:
        rep = write_report(args.out)
        print(f"report: {rep['out']}")
    return 1 if summary["failed"] else 0


def cmd_report(args) -> int:
    rep = write_report(
        args.results, args.out, pairs=[tuple(p) for p in args.compare or []], title=args.title, tune_on=args.tune
    )
    print("\n".join(rep["markdown"]))
    print(
        f"\nwritten: {rep['out']}/summary.md, summary.csv, results.csv"
        + (", compare.md" if rep["comparisons"] else "")
        + "".join(f", {Path(p).name}" for p in rep["plots"])
    )
    return 0
