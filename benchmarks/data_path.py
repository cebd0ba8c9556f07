"""Does the trainer's data path cost anything? Its epoch time against a lean loop over the same model and optimizer
with the data already in tensors (no augmentation, no logging, no checks), side by side in one process.

Both train the same tiny ViT for the same number of steps per epoch; the trainer's epoch time is read from its
``log.jsonl`` (``select: last``, so no evaluation inside the epoch), the first epoch of each left out (warm-up and the
memory probe). ``vtab1k``: direct resize, no augmentation (goal: at most 1.10x the lean loop). ``fgvc``: the trainer
also draws a random-resized crop + flip per image (batched, on the training device); the lean loop reads the same
number of ready-made images, so the ratio includes the augmentation.

Writes benchmarks/results/data_path.{json,md}.

    .venv/bin/python benchmarks/data_path.py [--device cuda] [--epochs 4] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import run_meta, save

from vpeft.config import RunConfig
from vpeft.data.sources import load as load_split_for
from vpeft.data.synth import generate_task
from vpeft.data.vtab import normalize
from vpeft.engine.optim import build_optimizer, param_groups, trainable_named_parameters
from vpeft.engine.trainer import train
from vpeft.run import amp_context, build_model

SPEC = "vit_tiny_patch16_224:img_size=32,patch_size=4,embed_dim=64,depth=4,num_heads=4"


def fgvc_copy(src: Path, dst: Path) -> Path:
    """The same images as an fgvc-layout folder (``train.json`` etc. mapping paths to labels)."""
    dst.mkdir(parents=True, exist_ok=True)
    for split, name in (("train800", "train"), ("val200", "val"), ("test", "test")):
        entries = {}
        for line in (src / f"{split}.txt").read_text().splitlines():
            path, label = line.rsplit(" ", 1)
            entries[str(src / path)] = int(label)
        (dst / f"{name}.json").write_text(json.dumps(entries))
    return dst


def lean_loop(cfg: RunConfig, images: torch.Tensor, labels: torch.Tensor, epochs: int, device, amp: str) -> list:
    """The same model, optimizer and batches with everything already on the device: per-epoch seconds."""
    model, objective = build_model(cfg, int(labels.max()) + 1)
    model.to(device), objective.to(device)
    model.train(), objective.train()
    opt = build_optimizer(param_groups(trainable_named_parameters(model, objective), cfg.train), cfg.train)
    images, labels = images.to(device), labels.to(device)
    bs, times = cfg.train.batch_size, []
    for epoch in range(epochs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch)).to(device)
        for i in range(0, len(labels), bs):
            idx = order[i : i + bs]
            with amp_context(device, amp):
                x, y = images.index_select(0, idx), labels.index_select(0, idx)
                loss = objective(model, normalize(x, cfg.data.normalize), y)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def compare(
    root: Path, fmt: str, spec: str, method: str, epochs: int, batch: int, device, amp: str, out: Path, rounds: int = 2
) -> dict:
    """Trainer and lean loop in turn (``rounds`` times each, ABBA order), the median epoch of each, the first epoch
    of every run left out."""
    train_cfg = {"epochs": epochs, "batch_size": batch, "lr": 1e-3, "device": str(device), "amp": amp}
    cfg = RunConfig.from_dict(
        {"backbone": {"spec": spec}, "method": method, "data": {"root": str(root), "format": fmt}, "train": train_cfg}
    )
    trainer, lean, ds = [], [], None
    for i in range(2 * rounds):
        if (i % 4) in (0, 3):  # trainer, lean, lean, trainer, ...
            run = out / f"{fmt}-{method}-{i}"
            r = train(cfg, run, progress=False)
            trainer += [json.loads(x)["seconds"] for x in (run / "log.jsonl").read_text().splitlines()][1:]
            if ds is None:
                size = tuple(r["protocol"]["img_size"])
                ds = load_split_for(cfg.data, r["protocol"]["train_split"], size, r["num_classes"], training=False)
        else:
            lean += lean_loop(cfg, ds.images, ds.labels, epochs, device, amp)[1:]
    t, lo = statistics.median(trainer), statistics.median(lean)
    return {
        "format": fmt,
        "method": method,
        "images": len(ds),
        "augment": r["protocol"]["augment"],
        "trainer_epoch_s": t,
        "lean_epoch_s": lo,
        "ratio": t / lo,
        "throughput_ratio": lo / t,
        "data_on_device": r["data_on_device"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", default="linear,full")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="one small run per format, results not written")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    epochs = 2 if args.smoke else args.epochs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        task = generate_task(tmp / "data", "count", n_test=50 if args.smoke else 200)
        roots = {"vtab1k": task, "fgvc": fgvc_copy(task, tmp / "data" / "count-fgvc")}
        for fmt, root in roots.items():
            for method in args.methods.split(",")[: 1 if args.smoke else None]:
                rows.append(compare(root, fmt, SPEC, method, epochs, args.batch_size, device, args.amp, tmp / "runs"))
                print(json.dumps(rows[-1]))
    if args.smoke:
        return 0
    data = {
        "meta": run_meta(
            "data_path.py",
            model=SPEC,
            batch_size=args.batch_size,
            epochs=args.epochs,
            dtype="float32" if args.amp == "none" else args.amp,
            device=str(device),
        ),
        "rows": rows,
    }
    lines = [
        f"# The trainer's data path against a lean loop ({data['meta']['device']}, batch {args.batch_size}, "
        f"{data['meta']['dtype']})",
        "",
        f"Command: `{data['meta']['command']}`. Median epoch time over epochs 2-{args.epochs} of each; the lean "
        "loop trains the same model and optimizer on the same number of images already in device tensors (no "
        "augmentation). Ratio = trainer / lean (goal on vtab1k: at most 1.10).",
        "",
        "| format | method | augmentation | images | trainer epoch s | lean epoch s | ratio |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['format']} | {r['method']} | {r['augment']} | {r['images']} | {r['trainer_epoch_s']:.3f} "
            f"| {r['lean_epoch_s']:.3f} | {r['ratio']:.3f} |"
        )
    save("data_path", data, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
