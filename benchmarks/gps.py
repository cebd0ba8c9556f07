"""GPS on ViT-B/16 (random weights, fp32, CPU): training memory of sparse GPS against full fine-tuning (what the
official dense-masked code costs), and the selection pass's time and memory.

Writes benchmarks/results/gps.{json,md}.

    .venv/bin/python benchmarks/gps.py [--batch-size 2] [--images 16]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from _common import run_meta, save

import vpeft
from vpeft.data.vtab import ImageDataset
from vpeft.measure import SavedTensorProbe, measure
from vpeft.selectors.gps import GPSConfig, weight_sites


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--images", type=int, default=16, help="images in the selection pass")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    rows = {}
    for name, method, selector in (
        ("full (= the official dense-masked GPS)", "full", None),
        ("gps:k=1 (vpeft, sparse)", "linear", "gps:k=1"),
        ("gps:k=2 (vpeft, sparse)", "linear", "gps:k=2"),
    ):
        print(name, file=sys.stderr, flush=True)
        rows[name] = measure(
            "vit_base_patch16_224", method, batch_size=args.batch_size, num_classes=100, selector=selector
        )
    # Selection pass: time for N images (two views each) and the activation memory of one batch.
    torch.manual_seed(0)
    bb = vpeft.create_backbone("vit_base_patch16_224", num_classes=100)
    vpeft.apply_method(bb, "linear")
    g = torch.Generator().manual_seed(0)
    ds = ImageDataset(
        torch.randint(0, 256, (args.images, 3, 224, 224), dtype=torch.uint8, generator=g),
        torch.arange(args.images) % 4,
        "random",
    )
    cfg = GPSConfig(k=1)
    t0 = time.perf_counter()
    scores = cfg.scores(bb, ds, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    one = ImageDataset(ds.images[: args.batch_size], ds.labels[: args.batch_size], "random")
    with SavedTensorProbe(bb) as probe:
        # one batch with the backward inside the probe's lifetime: what the pass keeps for backward
        cfg.scores(bb, one, batch_size=args.batch_size)
    grad_bytes = sum(m.weight.numel() * 4 for m in weight_sites(bb).values())
    selection = {
        "images": args.images,
        "views_per_image": 2,
        "batch_size": args.batch_size,
        "seconds": seconds,
        "seconds_per_image": seconds / args.images,
        "saved_activation_bytes_per_batch": probe.bytes,
        "gradient_bytes": grad_bytes,
        "selected": sum(len(v) for v in cfg.select(bb, scores).values()),
    }
    meta = run_meta("gps.py", argv, backbone="vit_base_patch16_224", batch_size=args.batch_size)
    data = {"meta": meta, "rows": rows, "selection": selection}
    full = next(iter(rows.values()))
    mib = lambda b: f"{b / 2**20:,.1f}"  # noqa: E731
    lines = [
        f"# GPS on ViT-B/16, batch {args.batch_size}, fp32, CPU (random weights)",
        "",
        f"Command: `{meta['command']}`. The official code trains GPS as full fine-tuning with masked gradients, "
        "so its memory is the `full` row.",
        "",
        "| variant | trainable (no head) | activations MiB | grads MiB | optimizer state MiB | x full | train memory MiB | x full | step s |",  # noqa: E501
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['trainable_no_head']:,} | {mib(r['saved_activation_bytes'])} | {mib(r['grad_bytes'])} "
            f"| {mib(r['optimizer_state_bytes'])} | {r['optimizer_state_bytes'] / full['optimizer_state_bytes']:.4f} "
            f"| {mib(r['train_memory_bytes'])} | {r['train_memory_bytes'] / full['train_memory_bytes']:.3f} "
            f"| {r['step_seconds']:.2f} |"
        )
    s = selection
    lines += [
        "",
        f"Selection pass (supcon, two views per image, batch {s['batch_size']}): {s['seconds']:.1f} s for "
        f"{s['images']} images ({s['seconds_per_image']:.2f} s per image; a VTAB-1K pass of 1,000 images would take "
        f"about {s['seconds_per_image'] * 1000 / 60:.0f} min here). It keeps {mib(s['saved_activation_bytes_per_batch'])} MiB "  # noqa: E501
        f"of activations per batch and {mib(s['gradient_bytes'])} MiB of gradients for every candidate weight, "
        f"but no optimizer state; {s['selected']:,} entries selected.",
    ]
    save("gps", data, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
