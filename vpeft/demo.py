"""``vpeft demo``: the embedded default job.

Generates a small synthetic task, fine-tunes a tiny ViT on it with several methods, and prints what the papers
report: top-1 accuracy, trainable parameters, training memory and time. Needs no download and no data on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import RunConfig
from .data.synth import generate_task

DEMO_BACKBONE = "vit_tiny_patch16_224:img_size=32,patch_size=4,embed_dim=64,depth=4,num_heads=4"
DEMO_TASK = "count"
DEMO_METHODS = ["linear", "bitfit", "full"]


def run_demo(out: str | Path = "runs/demo", epochs: int | None = None, seed: int = 0, progress: bool = True) -> list:
    from .engine.trainer import train

    out = Path(out)
    task_dir = out / "data" / DEMO_TASK
    if not (task_dir / "test.txt").is_file():
        print(f"generating the synthetic task '{DEMO_TASK}' in {task_dir} ...", flush=True)
        generate_task(out / "data", DEMO_TASK, seed=seed)
    rows = []
    for method in DEMO_METHODS:
        print(f"training {method} ...", flush=True)
        cfg = RunConfig.from_dict(
            {
                "backbone": {"spec": DEMO_BACKBONE},
                "method": method,
                "data": {"root": str(task_dir)},
                "train": {"epochs": epochs or 12, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 1, "seed": seed},
            }
        )
        result = train(cfg, out / "runs" / method, resume=True, progress=progress)
        rows.append(result)
    header = f"{'method':<10} {'test acc':>9} {'trainable':>10} {'train mem (MiB)':>16} {'time (s)':>9}"
    print()
    print(f"task '{DEMO_TASK}' ({rows[0]['num_classes']} classes, chance {100 / rows[0]['num_classes']:.0f}%), "
          f"backbone {DEMO_BACKBONE} (random init: the pretrained demo backbone is not shipped yet)")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['method']:<10} {r['test_acc']:>8.2f}% {r['trainable_params']:>10,} "
              f"{r['memory']['train_memory_bytes'] / 2**20:>16.2f} {r['train_seconds']:>9.1f}")
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nrun directories and summary.json in {out}/")
    return rows
