"""Pretrain the demo backbones (small ViTs) on CIFAR-10 and write them into the package.

Run from the repository root (about 40 minutes on 2 CPU cores)::

    python benchmarks/pretrain_c10.py --data ../shared/data/cifar10

Each model is a plain timm ViT (``vit_tiny_patch16_224`` with new sizes), trained from scratch on the 50k training
images with random crops (4 px reflect padding) and horizontal flips, label smoothing 0.1, AdamW and a per-step cosine
schedule with one warm-up epoch. Inputs use the inception normalisation (mean = std = 0.5) that vpeft's data pipeline
uses by default. The weights go to ``vpeft/weights/<name>.safetensors`` (float16, without the CIFAR head) and the
recipe, seed, time and CIFAR-10 test accuracy to ``benchmarks/results/pretrain_c10.{json,md}``.

A killed run resumes from ``runs/pretrain_c10/<name>/state.pt`` at the last finished epoch.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

try:
    from _common import command, load, save
except ImportError:  # imported as benchmarks.pretrain_c10
    from benchmarks._common import command, load, save

ROOT = Path(__file__).resolve().parent.parent

RECIPE = {
    "batch_size": 128,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup_epochs": 1,
    "label_smoothing": 0.1,
    "crop_padding": 4,
    "flip": True,
    "normalize": "inception",
}


def decode(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 npz of joined JPEG bytes (see shared/data/PROVENANCE.md) to uint8 [N, 3, 32, 32] and labels."""
    from PIL import Image

    z = np.load(path)
    jpeg, off, labels = z["jpeg"], z["offsets"], z["labels"]
    images = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(jpeg[off[i] : off[i + 1]].tobytes())).convert("RGB"))
            for i in range(len(labels))
        ]
    )
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels).long()


def augment(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop with reflect padding and horizontal flip, on a uint8 batch."""
    b, _, h, w = x.shape
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip.view(b, 1, 1, 1), out.flip(3), out)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - 0.5) / 0.5


@torch.no_grad()
def accuracy(model, images, labels, batch=500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        correct += (model(normalize(images[i : i + batch])).argmax(1) == labels[i : i + batch]).sum().item()
    return correct / len(labels)


def pretrain(name: str, epochs: int, train, test, seed: int, workdir: Path) -> dict:
    from tqdm import tqdm

    from vpeft.zoo import ZOO, timm_model

    torch.manual_seed(seed)
    model = timm_model(name, num_classes=10)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n and "token" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n and "token" not in n)
    ]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": RECIPE["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=RECIPE["lr"],
    )
    images, labels = train
    bs = RECIPE["batch_size"]
    steps_per_epoch = len(labels) // bs
    total, warm = epochs * steps_per_epoch, RECIPE["warmup_epochs"] * steps_per_epoch
    state_path = workdir / name / "state.pt"
    start, elapsed = 0, 0.0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, elapsed = state["epoch"], state["elapsed"]
        print(f"{name}: resuming after epoch {start}")
    for epoch in range(start, epochs):
        t0 = time.time()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(labels), generator=gen)
        model.train()
        bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch + 1}/{epochs}", leave=False)
        for s in bar:
            step = epoch * steps_per_epoch + s
            lr = RECIPE["lr"] * (
                step / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
            )
            for g in opt.param_groups:
                g["lr"] = lr
            idx = order[s * bs : (s + 1) * bs]
            x = normalize(augment(images[idx], gen, RECIPE["crop_padding"]))
            loss = F.cross_entropy(model(x), labels[idx], label_smoothing=RECIPE["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        elapsed += time.time() - t0
        acc = accuracy(model, *test)
        print(
            f"{name} epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, test accuracy {acc:.4f}, {elapsed / 60:.1f} min"  # noqa: E501
        )
        state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "elapsed": elapsed}, tmp)
        tmp.replace(state_path)
    acc = accuracy(model, *test)
    from safetensors.torch import save_file

    # Shipped in float16 (half the bytes; loading casts back to float32, features change by < 1e-3 relative).
    weights = {k: v.half().contiguous() for k, v in model.state_dict().items() if not k.startswith("head.")}
    out = ROOT / "vpeft" / "weights" / f"{name}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        weights, str(out), metadata={"recipe": "benchmarks/pretrain_c10.py", "cifar10_test_accuracy": f"{acc:.4f}"}
    )
    out.chmod(0o644)
    model.load_state_dict(
        {k: (v if k.startswith("head.") else v.half().float()) for k, v in model.state_dict().items()}
    )
    shipped_acc = accuracy(model, *test)  # with the float16-rounded weights that ship
    return {
        "arch": ZOO[name].arch,
        "kwargs": ZOO[name].kwargs,
        "params_without_head": sum(v.numel() for v in weights.values()),
        "epochs": epochs,
        "seed": seed,
        "train_minutes": round(elapsed / 60, 1),
        "cifar10_test_accuracy": acc,
        "cifar10_test_accuracy_float16": shipped_acc,
        "file_bytes": out.stat().st_size,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"), help="folder with train.npz / test.npz"
    )
    p.add_argument("--models", nargs="+", default=["vit_c10_small", "vit_c10_base"])
    p.add_argument("--epochs", nargs="+", type=int, default=[20, 15], help="one per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default=str(ROOT / "runs" / "pretrain_c10"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    t0 = time.time()
    train, test = decode(data / "train.npz"), decode(data / "test.npz")
    print(f"decoded {len(train[1])} + {len(test[1])} images in {time.time() - t0:.0f} s")
    result = load("pretrain_c10")
    result.setdefault("models", {})
    for name in args.models:  # rewritten below as each finishes
        result["models"].pop(name, None)
    result["recipe"] = RECIPE
    result["device"] = f"cpu, {args.threads} threads, float32"
    for name, epochs in zip(args.models, args.epochs):
        result["models"][name] = pretrain(name, epochs, train, test, args.seed, Path(args.workdir))
        result["command"] = command("pretrain_c10.py", argv)
        lines = [
            "| backbone | timm architecture | params (no head) | epochs | seed | minutes | CIFAR-10 test acc "
            "(float16 as shipped) | file |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for n, r in result["models"].items():
            kw = ",".join(f"{k}={v}" for k, v in r["kwargs"].items())
            lines.append(
                f"| `{n}` | `{r['arch']}:{kw}` | {r['params_without_head']:,} | {r['epochs']} | {r['seed']} | "
                f"{r['train_minutes']} | {100 * r['cifar10_test_accuracy']:.2f}% "
                f"({100 * r['cifar10_test_accuracy_float16']:.2f}%) | {r['file_bytes'] / 2**20:.1f} MiB |"
            )
        lines += ["", f"Recipe: {RECIPE}. Device: {result['device']}.", f"Command: `{result['command']}`"]
        save("pretrain_c10", result, lines)


if __name__ == "__main__":
    main()
