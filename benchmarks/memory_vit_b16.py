"""Trainable parameters and training memory of every registered method on ViT-B/16 (random weights).

Writes benchmarks/results/memory_vit_b16.json and .md. Ratios are against `full`, measured in the same run.

    .venv/bin/python benchmarks/memory_vit_b16.py [--batch-size 2] [--methods linear bitfit ...] [--no-timing]
"""

from __future__ import annotations

import argparse
import platform
import sys

import torch
from _common import command, save

import vpeft
from vpeft.measure import measure
from vpeft.registry import METHODS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="vit_base_patch16_224")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--methods", nargs="+", help="method specs (default: every registered method, defaults)")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--name", default="memory_vit_b16")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    specs = args.methods or METHODS.names()
    rows = []
    for spec in specs:
        print(f"measuring {spec} ...", file=sys.stderr, flush=True)
        rows.append(
            measure(
                args.backbone, spec, batch_size=args.batch_size, num_classes=args.num_classes, timing=not args.no_timing
            )
        )
    full = next((r for r in rows if r["method"] == "full"), None)
    meta = {
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "num_classes": args.num_classes,
        "dtype": "float32",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "vpeft": vpeft.__version__,
        "machine": platform.machine(),
        "command": command("memory_vit_b16.py", argv),
    }
    mib = lambda b: f"{b / 2**20:,.1f}"  # noqa: E731
    lines = [
        f"# Training memory on {args.backbone}, batch {args.batch_size}, fp32, CPU (random weights)",
        "",
        f"Command: `{meta['command']}` (torch {meta['torch']}, {meta['threads']} threads). "
        "Activations = bytes autograd saves for backward in one training forward (parameters and their views "
        "excluded, each storage once); optimizer state = what AdamW allocates.",
        "",
        "| method | trainable (no head) | activations MiB | x full | params MiB | grads MiB | AdamW state MiB "
        "| train memory MiB | x full | step s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ra = f"{r['saved_activation_bytes'] / full['saved_activation_bytes']:.3f}" if full else "-"
        rt = f"{r['train_memory_bytes'] / full['train_memory_bytes']:.3f}" if full else "-"
        step = f"{r['step_seconds']:.2f}" if r["step_seconds"] is not None else "-"
        lines.append(
            f"| {r['method']} | {r['trainable_no_head']:,} | {mib(r['saved_activation_bytes'])} | {ra} "
            f"| {mib(r['param_bytes'])} | {mib(r['grad_bytes'])} | {mib(r['optimizer_state_bytes'])} "
            f"| {mib(r['train_memory_bytes'])} | {rt} | {step} |"
        )
    save(args.name, {"meta": meta, "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
