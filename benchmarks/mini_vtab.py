"""mini-VTAB: every method (alone and with GIST) and iDAT's presets on the shipped CIFAR-10 backbones, 3 seeds.

    python benchmarks/mini_vtab.py                       # every part, 2 runs at a time, 1 thread each
    python benchmarks/mini_vtab.py --parts real          # one part
    python benchmarks/mini_vtab.py --report-only         # rebuild the reports from the sweep folders

Parts (each a ``vpeft bench run`` sweep into ``runs/mini_vtab/<part>``, resumable; the report goes to
``benchmarks/results/mini_vtab/<part>/``):

- ``synth``: ``benchmarks/experiments/mini_vtab.yaml`` on the six generated tasks (generated on first use);
- ``real``: the same on the four real tasks in ``../shared/data/vtab1k`` (not shipped: beside the checkout);
- ``idat-synth``, ``idat-real``: ``benchmarks/experiments/mini_vtab_idat.yaml`` (vit_c10_base student, vit_c10_small
  teacher) on the same tasks;
- ``lr-check``: ``benchmarks/experiments/mini_vtab_lr.yaml``, the methods that did not beat linear probing on the
  real tasks at the linear probe's learning rate (and the linear probe at theirs);
- ``real-tuned``: ``benchmarks/experiments/mini_vtab_tuned.yaml``, every method of ``real`` at half and twice its
  learning rate, reported with ``real``'s runs, the lr chosen per task and seed on val200 (needs ``real`` first).

The protocol is in the experiment files: train800, best epoch on val200, test; one fixed setting per method.
``benchmarks/readme_tables.py`` puts the summary into the README from the committed reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    from _common import OUT, command
except ImportError:  # imported as benchmarks.mini_vtab
    from benchmarks._common import OUT, command

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "benchmarks" / "experiments"
PARTS = {
    "synth": ("mini_vtab.yaml", "synth"),
    "real": ("mini_vtab.yaml", "vtab1k"),
    "idat-synth": ("mini_vtab_idat.yaml", "synth"),
    "idat-real": ("mini_vtab_idat.yaml", "vtab1k"),
    "lr-check": ("mini_vtab_lr.yaml", "vtab1k"),
    "real-tuned": ("mini_vtab_tuned.yaml", "vtab1k"),
}
#: Parts reported together with another part's sweep, the lr chosen on validation (``vpeft report A B --tune val``).
TUNED_WITH = {"real-tuned": "real"}
TITLES = {
    "synth": "mini-VTAB, generated tasks, vit_c10_small",
    "real": "mini-VTAB, real tasks (../shared/data/vtab1k), vit_c10_small",
    "idat-synth": "iDAT, generated tasks, vit_c10_base student + vit_c10_small teacher",
    "idat-real": "iDAT, real tasks, vit_c10_base student + vit_c10_small teacher",
    "lr-check": "Learning-rate check, real tasks, vit_c10_small",
    "real-tuned": "mini-VTAB, real tasks, vit_c10_small, learning rate chosen on val200 (x0.5, x1, x2)",
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    p.add_argument("--shared", default=str(ROOT.parent / "shared" / "data" / "vtab1k"), help="real task folders")
    p.add_argument("--work", default=str(ROOT / "runs" / "mini_vtab"), help="sweep folders")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--seeds", nargs="+", type=int, help="run only these seeds (default: the experiment's)")
    args = p.parse_args(argv)

    from vpeft.bench import LocalExecutor, load_experiment, run_sweep, write_report

    for part in args.parts:
        exp_file, suite = PARTS[part]
        work = Path(args.work) / part
        base = Path(args.work) / TUNED_WITH.get(part, part)
        if not (base / "runs.jsonl").is_file() and part in TUNED_WITH:
            p.error(
                f"part {part} is reported with part {TUNED_WITH[part]}'s runs: run --parts {TUNED_WITH[part]} "
                f"first (no sweep in {base})"
            )
        if not args.report_only:
            data_root = str(Path(args.work) / "synth-data") if suite == "synth" else args.shared
            exp = load_experiment(EXPERIMENTS / exp_file, suite=suite, data_root=data_root, seeds=args.seeds)
            t0 = time.time()
            summary = run_sweep(exp, work, LocalExecutor(jobs=args.jobs, threads=args.threads), progress=False)
            summary["seconds"] = time.time() - t0
            print(
                f"{part}: {summary['done']}/{summary['total']} finished, {len(summary['failed'])} failed, "
                f"{summary['seconds'] / 60:.1f} min"
            )
        out = OUT / "mini_vtab" / part
        if part in TUNED_WITH:
            rep = write_report([Path(args.work) / TUNED_WITH[part], work], out, title=TITLES[part], tune_on="val")
        else:
            rep = write_report(work, out, title=TITLES[part])
        old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
        # A --report-only pass keeps the command that ran the sweep.
        cmd = old.get("command") if args.report_only and old.get("command") else command("mini_vtab.py", argv)
        meta = {
            "command": cmd,
            "experiment": f"benchmarks/experiments/{exp_file}",
            "suite": suite,
            "runs": rep["records"],
            "failures": len(rep["failures"]),
            "device": f"cpu, {args.threads} thread(s) per run, {args.jobs} runs at a time, float32",
        }
        # The data root is part of every run's id (its hash): a resume or a check of the ids needs the same one.
        root = (
            old.get("data_root")
            if args.report_only
            else (None if suite == "synth" else str(Path(args.shared).resolve()))
        )
        if root:
            meta["data_root"] = root
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        print("\n".join(rep["markdown"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
