"""PACS leave-one-domain-out: seven methods on the shipped vit_c10_base, 3 seeds, on real data.

    python benchmarks/pacs_dg.py                   # the sweep (resumable), then the report
    python benchmarks/pacs_dg.py --report-only     # rebuild the report from the sweep folder

``benchmarks/experiments/pacs_dg.yaml`` holds the protocol: for each of PACS's four domains, train on the other
three domains' training lists, pick the epoch on their validation lists, test on the whole held-out domain (a
``tasks`` mapping: one task per held-out domain, all reading ``../shared/data/dg/pacs`` with their own lists). The
data is not shipped; it lies beside the checkout (``../shared/data/dg/pacs``, see its PROVENANCE.md). The sweep goes
to ``runs/pacs_dg`` and the report to ``benchmarks/results/pacs_dg/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    from _common import OUT, command
except ImportError:  # imported as benchmarks.pacs_dg
    from benchmarks._common import OUT, command

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "benchmarks" / "experiments" / "pacs_dg.yaml"
TITLE = "PACS leave-one-domain-out, vit_c10_base (32 px), 3 seeds"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dg" / "pacs"), help="the PACS folder")
    p.add_argument("--work", default=str(ROOT / "runs" / "pacs_dg"), help="sweep folder")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", nargs="+", type=int, help="run only these seeds (default: the experiment's)")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)

    from vpeft.bench import LocalExecutor, load_experiment, run_sweep, write_report

    work, out = Path(args.work), OUT / "pacs_dg"
    old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    seconds = old.get("seconds")
    if not args.report_only:
        if not Path(args.data, "classes.txt").is_file():
            p.error(f"no PACS data in {args.data} (expected classes.txt and the domain lists): give --data")
        exp = load_experiment(EXPERIMENT, data_root=args.data, seeds=args.seeds)
        t0 = time.time()
        summary = run_sweep(exp, work, LocalExecutor(jobs=args.jobs, threads=args.threads), progress=False)
        seconds = time.time() - t0
        print(f"{summary['done']}/{summary['total']} finished, {len(summary['failed'])} failed, {seconds / 60:.1f} min")
    rep = write_report(work, out, title=TITLE)
    meta = {
        "command": old.get("command") if args.report_only and old.get("command") else command("pacs_dg.py", argv),
        "experiment": "benchmarks/experiments/pacs_dg.yaml",
        "runs": rep["records"],
        "failures": len(rep["failures"]),
        "seconds": seconds,
        "device": f"cpu, {args.threads} thread(s) per run, {args.jobs} runs at a time, float32",
        # The data root is part of every run's id (its hash): a resume or a check of the ids needs the same one.
        "data_root": old.get("data_root") if args.report_only else str(Path(args.data).resolve()),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print("\n".join(rep["markdown"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
