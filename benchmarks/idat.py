"""iDAT on ViT-B/16 + ViT-S/16 (random weights, fp32, CPU): step time and training memory against the student alone;
and a joint run on a generated task with tiny models, recorded beside the student alone.

Writes benchmarks/results/idat.{json,md}.

    .venv/bin/python benchmarks/idat.py [--parts step tiny] [--repeats 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import load, run_meta, save

from vpeft.config import RunConfig
from vpeft.data.synth import generate_task
from vpeft.engine.trainer import train
from vpeft.measure import measure
from vpeft.run import build_model

STUDENT_TINY = "vit_tiny_patch16_224:img_size=32,patch_size=4,embed_dim=64,depth=4,num_heads=4"
TEACHER_TINY = "vit_tiny_patch16_224:img_size=32,patch_size=4,embed_dim=32,depth=2,num_heads=2"


def part_step(batch: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, 224, 224, generator=g), torch.randint(0, 100, (batch,), generator=g)
    variants = {}
    for name, objective in (("student alone", "ce"), ("idat", "idat")):
        cfg = RunConfig.from_dict(
            {"backbone": {"spec": "vit_base_patch16_224"}, "method": "adapter:dim=4", "objective": objective}
        )
        model, obj = build_model(cfg, 100)
        params = [p for m in (model, obj) for p in m.parameters() if p.requires_grad]
        variants[name] = (model.train(), obj.train(), torch.optim.AdamW(params, lr=1e-4))

    def step(model, obj, opt):
        t0 = time.perf_counter()
        obj(model, x, y)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times = {k: [] for k in variants}
    for v in variants.values():
        step(*v)
    for i in range(repeats):
        for k in list(variants) if i % 2 == 0 else list(variants)[::-1]:
            times[k].append(step(*variants[k]))
    mem = measure("vit_base_patch16_224", "adapter:dim=4", "idat", batch_size=batch, num_classes=100, timing=False)
    return {
        "batch_size": batch,
        "repeats": repeats,
        "student_s": min(times["student alone"]),
        "idat_s": min(times["idat"]),
        "ratio": min(times["idat"]) / min(times["student alone"]),
        "memory": {
            k: {
                m: mem[k][m] if k != "together" else mem[m]
                for m in ("trainable", "trainable_no_head", "saved_activation_bytes", "train_memory_bytes")
            }
            for k in ("student", "teacher", "together")
        },
    }


def part_tiny(seeds: list[int], epochs: int) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        generate_task(tmp, "count", seed=0)
        for seed in seeds:
            for name, objective in (
                ("student alone", "ce"),
                ("idat (mse)", {"name": "idat", "teacher": TEACHER_TINY, "loss": "mse"}),
                ("idat (kl)", {"name": "idat", "teacher": TEACHER_TINY, "loss": "kl"}),
            ):
                print(f"tiny {name} seed {seed} ...", file=sys.stderr, flush=True)
                cfg = RunConfig.from_dict(
                    {
                        "backbone": {"spec": STUDENT_TINY},
                        "method": "full",
                        "objective": objective,
                        "data": {"root": f"{tmp}/count"},
                        "train": {"epochs": epochs, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 1, "seed": seed},
                    }
                )
                r = train(cfg, Path(tmp) / f"{name}-{seed}".replace(" ", "_"), progress=False)
                rows.append(
                    {
                        "variant": name,
                        "seed": seed,
                        "student_test_acc": r["test_acc"],
                        "teacher_train_acc_last_epoch": r.get("teacher", {}).get("train_acc_last_epoch"),
                        "train_seconds": r["train_seconds"],
                    }
                )
    return {
        "task": "count (generated, 4 classes)",
        "student": STUDENT_TINY,
        "teacher": TEACHER_TINY,
        "method": "full (both models)",
        "epochs": epochs,
        "rows": rows,
    }


def render(data: dict) -> str:
    meta = data["meta"]
    lines = [
        f"# iDAT ({meta['dtype']}, {meta['device']}, {meta['threads']} threads, random weights)",
        "",
        f"Command: `{meta['command']}`.",
        "",
    ]
    if "step" in data:
        s = data["step"]
        lines += [
            f"## ViT-B/16 student + ViT-S/16 teacher, adapter:dim=4, batch {s['batch_size']}",
            "",
            f"Training step (forward + backward + AdamW step, fastest of {s['repeats']} ABBA runs): student alone "
            f"{s['student_s']:.2f} s, iDAT {s['idat_s']:.2f} s, ratio **{s['ratio']:.3f}**.",
            "",
            "| model | trainable | trainable (no head) | activations MiB | train memory MiB |",
            "|---|---:|---:|---:|---:|",
        ]
        for k, m in s["memory"].items():
            lines.append(
                f"| {k} | {m['trainable']:,} | {m['trainable_no_head']:,} | "
                f"{m['saved_activation_bytes'] / 2**20:.1f} | {m['train_memory_bytes'] / 2**20:.1f} |"
            )
        st, tg = s["memory"]["student"], s["memory"]["together"]
        lines += [
            "",
            f"Training-memory overhead of the teacher: {(tg['train_memory_bytes'] / st['train_memory_bytes'] - 1) * 100:.1f}% "  # noqa: E501
            f"(activations {(tg['saved_activation_bytes'] / st['saved_activation_bytes'] - 1) * 100:.1f}%).",
            "",
        ]
    if "tiny" in data:
        t = data["tiny"]
        lines += [
            f"## Joint training on a generated task: {t['task']}, {t['method']}, {t['epochs']} epochs",
            "",
            f"Student `{t['student']}`, teacher `{t['teacher']}`; random initial weights.",
            "",
            "| variant | seed | student test acc % | teacher train acc % (last epoch) | train s |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in t["rows"]:
            ta = "-" if r["teacher_train_acc_last_epoch"] is None else f"{r['teacher_train_acc_last_epoch']:.1f}"
            lines.append(
                f"| {r['variant']} | {r['seed']} | {r['student_test_acc']:.2f} | {ta} | {r['train_seconds']:.1f} |"
            )
        means = {}
        for r in t["rows"]:
            means.setdefault(r["variant"], []).append(r["student_test_acc"])
        lines += ["", "Means over seeds: " + ", ".join(f"{k} {sum(v) / len(v):.2f}%" for k, v in means.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["step", "tiny"])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=12)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    data = load("idat")
    data["meta"] = run_meta("idat.py", argv)
    if "step" in args.parts:
        data["step"] = part_step(args.batch_size, args.repeats)
    if "tiny" in args.parts:
        data["tiny"] = part_tiny(args.seeds, args.epochs)
    save("idat", data, render(data).splitlines())
    return 0


if __name__ == "__main__":
    sys.exit(main())
