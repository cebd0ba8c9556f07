"""Trainable parameters and training memory of the seven Table 5 methods on SAM ViT-B at batch 1, 1024 px.

Writes benchmarks/results/memory_sam_b.json and .md. The GPS paper's Table 5 setting (../shared/design/PROTOCOLS.md
section (c)): sam:vit_b (image encoder, mask decoder, learned no-mask embedding), task segment (BCE + 1 - soft IoU on
one mask at the input size), batch 1, 1024 x 1024, fp32. By default on the meta device: the model, its activations,
gradients and optimizer state have shapes and no data, so the bytes are those of a CPU step (the same operators save
the same tensors) counted in seconds, without a step time; ``--device cpu --timing`` runs real steps (about two
minutes each for full fine-tuning on two shared cores).

    .venv/bin/python benchmarks/memory_sam_b.py [--device meta|cpu] [--timing] [--methods linear gps ...]
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import run_meta, save

import vpeft
from vpeft.measure import measure

#: Label -> (method, selector), as recipe sam_polyp runs them; linear is decoder-only (the mask decoder and
#: no_mask_embed train in every method).
METHODS = {
    "linear": ("linear", None),
    "full": ("full", None),
    "bitfit": ("bitfit", None),
    "adapter": ("adapter", None),
    "ssf": ("ssf", None),
    "lora": ("lora", None),
    "gps": ("linear", "gps:loss=task,norm_bias=outside_blocks"),
}
#: Table 5's parameter column (millions), the paper's rounding (../shared/design/PROTOCOLS.md section (c)).
PAPER_PARAMS_M = {"full": 93.8, "linear": 4.06, "bitfit": 4.16, "adapter": 4.12, "ssf": 4.26, "gps": 4.22}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="sam:vit_b")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="labels (default: all seven)")
    p.add_argument("--device", default="meta", help="meta (default: shapes only, no step time) or cpu")
    p.add_argument("--timing", action="store_true", help="also time training steps (not on meta)")
    p.add_argument("--repeats", type=int, default=1, help="timed steps per method (median)")
    p.add_argument("--warmup", type=int, default=0, help="untimed steps before the timed ones")
    p.add_argument("--name", default="memory_sam_b")
    args = p.parse_args(argv)
    if args.timing and args.device == "meta":
        p.error("--timing needs a real device (--device cpu): the meta device computes nothing")
    torch.set_num_threads(2)
    rows = []
    for label in args.methods or list(METHODS):
        method, selector = METHODS[label]
        print(f"measuring {label} ...", file=sys.stderr, flush=True)
        r = measure(
            args.backbone,
            method,
            selector=selector,
            task="segment",
            batch_size=args.batch_size,
            timing=args.timing,
            device=args.device,
            repeats=args.repeats,
            warmup=args.warmup,
        )
        rows.append({"label": label, **r})
    full = next((r for r in rows if r["label"] == "full"), None)
    size = rows[0]["input_size"]
    meta = run_meta(
        "memory_sam_b.py",
        argv,
        device=args.device,
        backbone=args.backbone,
        batch_size=args.batch_size,
        input_size=size,
        task=rows[0]["task"],
        optimizer="adamw (GPS trains with Adam in recipe sam_polyp: the same two moments per value)",
        vpeft=vpeft.__version__,
    )
    mib = lambda b: f"{b / 2**20:,.1f}"  # noqa: E731
    how = (
        "counted on the meta device (shapes only: the bytes of a CPU step, no step time)"
        if args.device == "meta"
        else f"measured on {meta['device']} ({meta['threads']} threads)"
    )
    lines = [
        f"# Training memory on {args.backbone} ({size[0]} x {size[1]} px), batch {args.batch_size}, fp32, task segment",
        "",
        f"Command: `{meta['command']}` (torch {meta['torch']}), {how}. Random weights; one mask per image, "
        "BCE + (1 - soft IoU) on random 0/1 masks. Trainable counts include the head (mask decoder + no_mask_embed, "
        "4,058,596, trained in every method); activations = bytes autograd saves for backward in one training "
        "forward (parameters excluded, each storage once); optimizer state = AdamW's (two moments per trainable "
        "value and a step per tensor that gets a gradient: the decoder's IoU head and the three unused mask outputs' "
        "hypernetworks, 552,036 values, get none and so no state; GPS's Adam keeps the same). GPS: a structure-only "
        "selection at K = 1 (the same rows and counts as the gradient's); its sparse update keeps full "
        "fine-tuning's activations.",
        "",
        "| method | trainable | Table 5 (M) | activations MiB | params MiB | grads MiB | AdamW state MiB "
        "| train memory MiB | x full | step s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rt = f"{r['train_memory_bytes'] / full['train_memory_bytes']:.3f}" if full else "-"
        step = f"{r['step_seconds']:.1f}" if r["step_seconds"] is not None else "-"
        paper = PAPER_PARAMS_M.get(r["label"], "-")
        lines.append(
            f"| {r['label']} | {r['trainable']:,} | {paper} | {mib(r['saved_activation_bytes'])} "
            f"| {mib(r['param_bytes'])} | {mib(r['grad_bytes'])} | {mib(r['optimizer_state_bytes'])} "
            f"| {mib(r['train_memory_bytes'])} | {rt} | {step} |"
        )
    save(args.name, {"meta": meta, "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
