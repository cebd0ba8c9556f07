"""Pretrain the shipped tiny SAM (``sam:tiny_synth``) on generated segmentation data and write it into the package.

Run from the repository root (about three minutes on 2 CPU cores)::

    python benchmarks/pretrain_sam.py

The model is ``sam:tiny`` (timm's SAM image encoder at 64 px, patch 8, width 32, two blocks, with SAM's mask decoder
at width 32), trained from random weights with full fine-tuning through vpeft's own trainer (task ``segment``: BCE +
(1 - soft IoU), image and mask flipped together) on a generated segmentation set of its own: 3,000 training, 300
validation and 300 test images at 64 px drawn with seed 1818 (the tests and ``vpeft demo --suite seg`` draw theirs
with seed 0 and fewer images, so none of their images is among these). The epoch with the best validation Dice is
kept (``train.select=val``). The whole model, image encoder and mask decoder with the learned no-mask embedding, goes
to ``vpeft/weights/sam_tiny_synth.safetensors`` in the official SAM checkpoint layout (float32;
:func:`vpeft.families.sam.official_checkpoint`), and the recipe, seeds, epochs, time and Dice to
``benchmarks/results/pretrain_sam.{json,md}``. The data and the run folder go to ``runs/pretrain_sam/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

try:
    from _common import command, save
except ImportError:  # imported as benchmarks.pretrain_sam
    from benchmarks._common import command, save

ROOT = Path(__file__).resolve().parent.parent
NAME = "tiny_synth"
#: The generated pretraining set: seed, image size and split sizes (``vpeft.data.synth_seg.generate_seg``).
DATA = {"seed": 1818, "size": 64, "n_train": 3000, "n_val": 300, "n_test": 300}
#: The trainer's settings (``train.*``).
RECIPE = {
    "epochs": 30,
    "batch_size": 32,
    "lr": 2e-3,
    "optimizer": "adamw",
    "weight_decay": 0.05,
    "warmup_epochs": 2,
    "select": "val",
}


def config(data_root: Path, epochs: int, seed: int):
    from vpeft.config import RunConfig

    return RunConfig.from_dict(
        {
            "backbone": {"spec": "sam:tiny"},
            "method": "full",
            "task": "segment",
            "data": {"root": str(data_root)},
            "train": {**RECIPE, "epochs": epochs, "seed": seed, "device": "cpu"},
        }
    )


def pretrain(epochs: int, seed: int, workdir: Path, out: Path) -> dict:
    from safetensors.torch import save_file

    from vpeft.backbones import create_backbone
    from vpeft.data.synth_seg import generate_seg
    from vpeft.engine.trainer import train
    from vpeft.families.sam import SHIPPED, official_checkpoint
    from vpeft.run import load_run

    data_root = workdir / "data"
    suite = data_root / "suite.json"
    splits = {s: DATA[f"n_{s}"] for s in ("train", "val", "test")}
    wanted = {"seed": DATA["seed"], "size": DATA["size"], "splits": splits}
    if not suite.is_file() or {k: json.loads(suite.read_text()).get(k) for k in wanted} != wanted:
        print(f"generating the pretraining set in {data_root} ...", flush=True)
        if data_root.exists():
            shutil.rmtree(data_root)
        generate_seg(data_root, **DATA)
    cfg = config(data_root, epochs, seed)
    t0 = time.time()
    result = train(cfg, workdir / "run", overwrite=True, progress=False)
    wall = time.time() - t0
    model = load_run(workdir / "run")[0].model
    weights = official_checkpoint(model, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        weights,
        str(out),
        metadata={
            "recipe": "benchmarks/pretrain_sam.py",
            "val_dice": f"{result['val_dice']:.4f}",
            "data": json.dumps(DATA),
        },
    )
    out.chmod(0o644)
    # The shipped name loads the file strictly, to the very tensors that were trained.
    shipped = create_backbone(f"sam:{NAME}", 1, checkpoint=out).model.state_dict()
    assert all(torch.equal(shipped[k], v) for k, v in model.state_dict().items()), "shipped weights differ"
    log = [json.loads(line) for line in (workdir / "run" / "log.jsonl").read_text().splitlines()]
    best = max(log, key=lambda e: e["val_dice"])
    return {
        "backbone": f"sam:{NAME}",
        "builds": f"sam:{SHIPPED[NAME].arch}",
        "params": sum(v.numel() for v in model.state_dict().values()),
        "file_params": sum(v.numel() for v in weights.values()),
        "data": DATA,
        "train": {**RECIPE, "epochs": epochs},
        "seed": seed,
        "best_epoch": best["epoch"],
        "val_dice": result["val_dice"],
        "val_dice_last_epoch": log[-1]["val_dice"],
        "test_dice": result["test_dice"],
        "test_iou": result["test_iou"],
        "test_dice_pooled": result["test_dice_pooled"],
        "test_iou_pooled": result["test_iou_pooled"],
        "train_seconds": round(result["train_seconds"], 1),
        "wall_seconds": round(wall, 1),
        "file_bytes": out.stat().st_size,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    p.add_argument("--seed", type=int, default=0, help="the training seed (initialisation, order, flips)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default=str(ROOT / "runs" / "pretrain_sam"))
    p.add_argument("--out", default=None, help="the weights file (default vpeft/weights/sam_tiny_synth.safetensors)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from vpeft.families.sam import SHIPPED

    out = Path(args.out) if args.out else SHIPPED[NAME].file
    r = pretrain(args.epochs, args.seed, Path(args.workdir), out)
    r["device"] = f"cpu, {args.threads} threads, float32"
    r["torch"] = torch.__version__
    r["command"] = command("pretrain_sam.py", argv)
    d = r["data"]
    lines = [
        "| backbone | builds | params | data (generated) | epochs (best) | seed | seconds | val Dice | test Dice / IoU "
        "| pooled Dice / IoU | file |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| `{r['backbone']}` | `{r['builds']}` | {r['params']:,} | seed {d['seed']}, {d['size']} px, "
        f"{d['n_train']:,} / {d['n_val']} / {d['n_test']} | {r['train']['epochs']} ({r['best_epoch']}) | {r['seed']} "
        f"| {r['train_seconds']} | {r['val_dice']:.2f} | {r['test_dice']:.2f} / {r['test_iou']:.2f} | "
        f"{r['test_dice_pooled']:.2f} / {r['test_iou_pooled']:.2f} | {r['file_bytes'] / 2**10:.0f} KiB |",
        "",
        "Full fine-tuning of `sam:tiny` from random weights with vpeft's trainer (task `segment`: BCE + "
        "(1 - soft IoU), flips), on its own generated set (train / val / test images), the best validation epoch "
        "kept; Dice and IoU per image (%) on that set's validation and test splits. The file holds the whole model "
        "(image encoder, mask decoder, no-mask embedding; the prompt encoder's unused point, box and mask-input "
        "embeddings as segment-anything initialises them) in the official SAM checkpoint layout, float32.",
        "",
        f"Trainer settings: {r['train']}. Device: {r['device']}, torch {r['torch']}.",
        f"Command: `{r['command']}`",
    ]
    save("pretrain_sam", r, lines)


if __name__ == "__main__":
    main()
