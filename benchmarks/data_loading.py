"""Is data loading the bottleneck of a tiny-model epoch? Decoding once (cached in memory afterwards), then one epoch's
batching + normalisation (+ augmentation for the augmented layouts), against one training epoch of the tiny ViT.

Writes benchmarks/results/data_loading.{json,md}.

    .venv/bin/python benchmarks/data_loading.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import command, save

from vpeft.config import RunConfig
from vpeft.data import vtab
from vpeft.data.augment import augment as augment_images
from vpeft.data.loader import DeviceData
from vpeft.data.synth import generate_task
from vpeft.engine.trainer import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "vtab1k"
SPEC = "vit_tiny_patch16_224:img_size=32,patch_size=4,embed_dim=64,depth=4,num_heads=4"


def measure(root: Path, augment: str) -> dict:
    vtab._CACHE.clear()
    t0 = time.perf_counter()
    ds = vtab.load_split(root, "train800val200", (37, 37) if augment != "none" else (32, 32))
    decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    data, gen = DeviceData(ds, torch.device("cpu")), torch.Generator().manual_seed(0)
    for x, _, _ in data.batches(32, torch.randperm(len(ds), generator=gen)):
        if augment != "none":
            x = augment_images(x, (32, 32), augment, gen)
        vtab.normalize(x, "inception")
    epoch_data = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig.from_dict(
            {
                "backbone": {"spec": SPEC},
                "method": "full",
                "data": {"root": str(root)},
                "train": {"epochs": 1, "batch_size": 32},
            }
        )
        r = train(cfg, Path(tmp) / "r", progress=False)
    return {
        "images": len(ds),
        "augment": augment,
        "decode_once_s": decode,
        "data_per_epoch_s": epoch_data,
        "train_epoch_s": r["train_seconds"],
        "data_share_of_epoch": epoch_data / r["train_seconds"],
    }


def main() -> int:
    torch.set_num_threads(2)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_task(tmp, "count")
        rows["synthetic count (PNG 32 px)"] = measure(root, "none")
        rows["synthetic count, crop_flip_randaug"] = measure(root, "crop_flip_randaug")
        if (SHARED / "caltech101").is_dir():
            rows["caltech101 (JPEG <=128 px, shared/data)"] = measure(SHARED / "caltech101", "none")
    data = {
        "meta": {
            "model": SPEC,
            "batch_size": 32,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "command": command("data_loading.py", []),
        },
        "rows": rows,
    }
    lines = [
        "# Data loading against a tiny-model training epoch (1,000 images, batch 32, CPU)",
        "",
        "Command: `python benchmarks/data_loading.py`. Decoding happens once per process (images stay in memory "
        "as uint8); the per-epoch cost is batching, normalising and, for the augmented layouts, augmenting.",
        "",
        "| data | decode once s | data per epoch s | training epoch s | data share of the epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, r in rows.items():
        lines.append(
            f"| {k} | {r['decode_once_s']:.2f} | {r['data_per_epoch_s']:.3f} | {r['train_epoch_s']:.2f} "
            f"| {r['data_share_of_epoch'] * 100:.1f}% |"
        )
    save("data_loading", data, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
