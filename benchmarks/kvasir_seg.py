"""Kvasir-SEG polyp segmentation: seven methods on the shipped tiny SAM, 3 seeds, on real data (issue 18).

    python benchmarks/kvasir_seg.py                                  # the sweep (resumable), then the report
    python benchmarks/kvasir_seg.py --epochs 2 --seeds 0 --methods gps --work runs/kvasir_try   # a short run
    python benchmarks/kvasir_seg.py --report-only                    # rebuild the report from the sweep folder

``benchmarks/experiments/kvasir_seg.yaml`` holds the protocol: recipe ``sam_polyp`` (the GPS paper's SAM setting:
decoder-only, full, BitFit, adapter, SSF, LoRA and GPS with the task's loss; batch 1, lr 2e-4, cosine to 1e-7, flip
only) on the tiny SAM at its own input size, trained on ``train.txt`` (800 images), the epoch chosen on ``val.txt``
(80) by Dice, tested on ``test.txt`` (120). The data is not shipped; it lies beside the checkout
(``../shared/data/seg/kvasir_seg``, see its PROVENANCE.md). The sweep goes to ``runs/kvasir_seg`` and the report to
``benchmarks/results/kvasir_seg/`` (with ``meta.json``: command, data root, seconds, device) with a figure of the
first six test images' predicted masks, one column per method (``masks.png``, ``vpeft.seg_figure.mask_grid``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    from _common import OUT, command
except ImportError:  # imported as benchmarks.kvasir_seg
    from benchmarks._common import OUT, command

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "benchmarks" / "experiments" / "kvasir_seg.yaml"
BACKBONE = "sam:tiny_synth"


def backbone_problem(spec: str) -> str | None:
    """Why backbone ``spec`` cannot be built here (an unknown name, shipped weights missing), or None."""
    from vpeft.backbones import split_backbone_spec
    from vpeft.errors import VpeftError
    from vpeft.registry import FAMILIES

    try:
        family, name, kwargs = split_backbone_spec(spec)
        fam = FAMILIES.get(family)()
        fam.resolve(name, dict(kwargs))
        fam.weights(name)
    except VpeftError as e:
        return str(e).splitlines()[0]
    return None


def mask_figure(work: Path, out: Path, data: str, seed: int | None, title: str, images: int = 6) -> Path | None:
    """``masks.png`` in ``out``: the first ``images`` test images, their masks and each method's predicted masks (its
    run of ``seed``, default the lowest finished), by ``vpeft.seg_figure.mask_grid``; None, with a printed note,
    where this vpeft has no such function or no run has finished."""
    try:
        from vpeft.seg_figure import mask_grid, split_pairs
    except ImportError:
        print("note: no mask figure: vpeft.seg_figure.mask_grid is not in this vpeft")
        return None
    plan = [json.loads(line) for line in (work / "runs.jsonl").read_text().splitlines() if line.strip()]
    done = [s for s in plan if (work / "runs" / Path(s["run_dir"]).name / "result.json").is_file()]
    if not done:
        return None
    seed = min(s["seed"] for s in done) if seed is None else seed
    runs = {s["label"]: work / "runs" / Path(s["run_dir"]).name for s in done if s["seed"] == seed}
    return mask_grid(runs, split_pairs(data, "test", n=images), out / "masks.png", title=f"{title}, seed {seed}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", default=str(ROOT.parent / "shared" / "data" / "seg" / "kvasir_seg"), help="the Kvasir-SEG folder"
    )
    p.add_argument("--backbone", default=BACKBONE, help=f"backbone spec (default {BACKBONE}, the shipped tiny SAM)")
    p.add_argument("--work", default=str(ROOT / "runs" / "kvasir_seg"), help="sweep folder")
    p.add_argument("--out", default=str(OUT / "kvasir_seg"), help="report folder")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", nargs="+", type=int, help="run only these seeds (default: the experiment's 0 1 2)")
    p.add_argument("--methods", nargs="+", help="run only these method labels (default: the recipe's seven)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the recipe's 20; the cosine spans them)")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)

    from vpeft.bench import LocalExecutor, load_experiment, run_sweep, write_report

    work, out = Path(args.work), Path(args.out)
    old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    seconds = old.get("seconds")
    if not args.report_only:
        if not all(Path(args.data, f).exists() for f in ("images", "masks", "train.txt", "val.txt", "test.txt")):
            p.error(f"no Kvasir-SEG data in {args.data} (expected images/, masks/ and train/val/test.txt): give --data")
        problem = backbone_problem(args.backbone)
        if problem:
            p.error(
                f"backbone {args.backbone} is not available here: {problem}. Train or install it first, or give "
                "another with --backbone (e.g. sam:tiny, random weights)"
            )
        exp = load_experiment(
            EXPERIMENT,
            data_root=args.data,
            seeds=args.seeds,
            backbone={"spec": args.backbone},
            train={"epochs": args.epochs} if args.epochs else None,
        )
        if args.methods:
            unknown = [m for m in args.methods if m not in [e["label"] for e in exp.methods]]
            if unknown:
                p.error(f"no method {unknown[0]!r} (labels: {', '.join(e['label'] for e in exp.methods)})")
            exp.methods = [e for e in exp.methods if e["label"] in args.methods]
            exp.compare = [c for c in exp.compare if all(x in args.methods for x in c)]
        t0 = time.time()
        summary = run_sweep(exp, work, LocalExecutor(jobs=args.jobs, threads=args.threads), progress=False)
        seconds = time.time() - t0
        print(f"{summary['done']}/{summary['total']} finished, {len(summary['failed'])} failed, {seconds / 60:.1f} min")
    backbone = old.get("backbone", BACKBONE) if args.report_only else args.backbone
    title = f"Kvasir-SEG polyp segmentation, {backbone}"
    rep = write_report(work, out, title=title)
    meta = {
        "command": old.get("command") if args.report_only and old.get("command") else command("kvasir_seg.py", argv),
        "experiment": "benchmarks/experiments/kvasir_seg.yaml",
        "backbone": backbone,
        "runs": rep["records"],
        "failures": len(rep["failures"]),
        "seconds": seconds,
        "device": f"cpu, {args.threads} thread(s) per run, {args.jobs} runs at a time, float32",
        # The data root is part of every run's id (its hash): a resume or a check of the ids needs the same one.
        "data_root": old.get("data_root") if args.report_only else str(Path(args.data).resolve()),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    figure = mask_figure(work, out, meta["data_root"], min(args.seeds) if args.seeds else None, title)
    print("\n".join(rep["markdown"]))
    if figure:
        print(f"mask figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
