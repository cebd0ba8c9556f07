"""``vpeft demo``: the embedded default job.

Generates a small synthetic task and fine-tunes the shipped CIFAR-10-pretrained ViT (``vit_c10_base``, see
``vpeft.zoo``) on it with one method of each kind the four papers build on, then prints what the papers report:
top-1 accuracy, trainable parameters, training memory and time, and writes a plot of accuracy against training
memory. Needs no download and no data on disk. Runs are kept: a rerun reuses finished ones (same config, same hash).
"""

from __future__ import annotations

import json
from pathlib import Path

from .bench.experiment import run_hash
from .bench.report import plot
from .config import RunConfig
from .data.synth import generate_task
from .engine.trainer import train

DEMO_BACKBONE = "vit_c10_base"
DEMO_TEACHER = "vit_c10_small"
DEMO_TASK = "shapes"
# (label, method, objective, selector, train overrides)
DEMO_RUNS = [
    ("linear", "linear", "ce", None, {"lr": 1e-2}),
    ("adapter_ps", "adapter_ps:dim=8", "ce", None, {}),
    ("adapter_ps+gist", "adapter_ps:dim=8", "gist", None, {}),
    ("lora", "lora:rank=4", "ce", None, {}),
    ("dtl_plus", "dtl_plus:kernel=3", "ce", None, {}),
    ("gps", "linear", "ce", "gps:k=1", {"optimizer": "adam", "weight_decay": 0.0, "lr": 2e-3}),
    ("idat-ps-kl", "adapter_ps:dim=4,scale=0.1", {"name": "idat", "loss": "kl", "teacher": DEMO_TEACHER}, None, {}),
]


def demo_config(task_dir: Path, method, objective, selector, train: dict, epochs: int, seed: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "backbone": {"spec": DEMO_BACKBONE},
            "method": method,
            "objective": objective,
            "selector": selector,
            "data": {"root": str(task_dir)},
            "train": {
                "epochs": epochs,
                "batch_size": 32,
                "lr": 5e-3,
                "warmup_epochs": 1,
                "weight_decay": 1e-4,
                "seed": seed,
                **train,
            },
        }
    )


def run_demo(
    out: str | Path = "runs/demo",
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    task: str = DEMO_TASK,
) -> list:
    out = Path(out)
    data = out / ("data" if seed == 0 else f"data-seed{seed}")  # the seed also draws the task's images
    task_dir = data / task
    if not (task_dir / "test.txt").is_file():
        print(f"generating the synthetic task '{task}' in {task_dir} ...", flush=True)
        generate_task(data, task, seed=seed)
    rows = []
    for i, (label, method, objective, selector, overrides) in enumerate(DEMO_RUNS, 1):
        cfg = demo_config(task_dir, method, objective, selector, overrides, epochs or 8, seed)
        run_dir = out / "runs" / f"{label}-{run_hash(cfg.to_dict())[:8]}"
        print(f"[{i}/{len(DEMO_RUNS)}] {label} -> {run_dir}", flush=True)
        result = train(cfg, run_dir, resume=True, progress=progress)
        result["label"] = label
        rows.append(result)
    header = f"{'method':<16} {'test acc':>9} {'trainable':>10} {'train mem (MiB)':>16} {'time (s)':>9}"
    print()
    print(
        f"task '{task}' ({rows[0]['num_classes']} classes, chance {100 / rows[0]['num_classes']:.0f}%), backbone "
        f"{DEMO_BACKBONE} (CIFAR-10 pretrained, shipped with vpeft), {epochs or 8} epochs, seed {seed}; "
        "trainable counts include the head; memory = params + grads + optimizer state + saved activations at "
        "batch 32"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['label']:<16} {r['test_acc']:>8.2f}% {r['trainable_params']:>10,} "
            f"{r['memory']['train_memory_bytes'] / 2**20:>16.2f} {r['train_seconds']:>9.1f}"
        )
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    summary = {
        r["label"]: {
            "mean": (r["test_acc"], 0.0, 1),
            "params": r["trainable_params_no_head"],
            "memory": r["memory"]["train_memory_bytes"],
        }
        for r in rows
    }
    png = plot(summary, out / "demo.png", "memory", f"vpeft demo: '{task}', {DEMO_BACKBONE}")
    print(f"\nrun directories, summary.json and {png.name} (accuracy vs training memory) in {out}/")
    return rows
