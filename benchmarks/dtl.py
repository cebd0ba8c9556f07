"""DTL on ViT-B/16 (random weights, fp32, CPU): training memory against M, shared-trunk multi-task latency over the
19 VTAB-1K task heads, and eval throughput next to other methods (the paper's Figure 4, multi-task claim, Table 6).

Writes benchmarks/results/dtl.{json,md}.

    .venv/bin/python benchmarks/dtl.py [--parts memory multitask throughput]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from _common import load, run_meta, save

import vpeft
from vpeft.config import RunConfig
from vpeft.engine.checkpoint import load_trainable_state, save_trainable
from vpeft.measure import measure
from vpeft.run import build_model

VIT_B = "vit_base_patch16_224"
VTAB_CLASSES = [102, 100, 8, 6, 5, 6, 16, 16, 47, 10, 4, 102, 37, 2, 45, 18, 9, 397, 10]


def part_memory(batch: int) -> dict:
    rows = {}
    for spec in ["full", "lora"] + [f"dtl:first_block={m}" for m in range(1, 13)]:
        print(f"memory {spec} ...", file=sys.stderr, flush=True)
        r = measure(VIT_B, spec, batch_size=batch, num_classes=100, timing=False)
        rows[spec] = {k: r[k] for k in ("trainable_no_head", "saved_activation_bytes", "train_memory_bytes")}
    return {"batch_size": batch, "rows": rows}


def _runs(root: Path) -> list[Path]:
    runs = []
    for i, c in enumerate(VTAB_CLASSES):
        cfg = RunConfig.from_dict({"backbone": {"spec": VIT_B}, "method": "dtl", "data": {"num_classes": c}})
        model, _ = build_model(cfg, c)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=g) * 0.05)
        out = root / f"task{i:02d}"
        out.mkdir()
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
        save_trainable(out / "trainable.safetensors", model)
        runs.append(out)
    return runs


@torch.no_grad()
def part_multitask(batches: list[int], repeats: int) -> dict:
    from safetensors.torch import load_file

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = _runs(Path(tmp))
        mt = vpeft.MultiTask(runs)
        states = [load_file(str(r / "trainable.safetensors")) for r in runs]
        # "Separately": one DTL model per task, as a user would run them; the frozen weights are the same, so one
        # backbone whose side network and head are swapped in per task costs exactly the same compute.
        cfgs = [yaml.safe_load((r / "config.yaml").read_text()) for r in runs]
        models = {}
        for c in sorted(set(VTAB_CLASSES)):
            models[c], _ = build_model(RunConfig.from_dict(cfgs[VTAB_CLASSES.index(c)]), c)
            models[c].eval()
        for batch in batches:
            print(f"multitask batch {batch} ...", file=sys.stderr, flush=True)
            x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
            t_sep, t_mt = [], []
            err = 0.0
            for _rep in range(repeats):
                t0 = time.perf_counter()
                sep = []
                for c, sd in zip(VTAB_CLASSES, states):
                    m = models[c]
                    load_trainable_state(m, None, sd)
                    sep.append(m(x))
                t_sep.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                outs = mt(x)
                t_mt.append(time.perf_counter() - t0)
                err = max(err, max((a - b).abs().max().item() for a, b in zip(outs, sep)))
            out[str(batch)] = {
                "separate_s": min(t_sep),
                "multitask_s": min(t_mt),
                "ratio": min(t_mt) / min(t_sep),
                "max_abs_diff": err,
                "repeats": repeats,
            }
            print(json.dumps(out[str(batch)]), file=sys.stderr)
    return {"tasks": len(VTAB_CLASSES), "first_block": 7, "rows": out}


@torch.no_grad()
def part_throughput(batches: list[int], repeats: int) -> dict:
    specs = ["full", "lora (unmerged)", "lora (merged)", "adaptformer", "dtl", "dtl_plus"]
    rows = {}
    for spec in specs:
        method = spec.split(" ")[0]
        torch.manual_seed(0)
        bb = vpeft.create_backbone(VIT_B, num_classes=100)
        vpeft.apply_method(bb, method)
        model = vpeft.merge(bb) if "merged" in spec and "unmerged" not in spec else bb
        model.eval()
        rows[spec] = {}
        for batch in batches:
            print(f"throughput {spec} batch {batch} ...", file=sys.stderr, flush=True)
            x = torch.randn(batch, 3, 224, 224)
            model(x)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
            rows[spec][str(batch)] = batch / min(times)
    return {"rows": rows, "repeats": repeats}


def render(data: dict) -> str:
    meta = data["meta"]
    lines = [
        f"# DTL on {VIT_B}, {meta['dtype']}, {meta['device']} ({meta['threads']} threads, random weights)",
        "",
        f"Command: `{meta['command']}`.",
        "",
    ]
    if "memory" in data:
        mem = data["memory"]
        rows = mem["rows"]
        full, lora = rows["full"]["saved_activation_bytes"], rows["lora"]["saved_activation_bytes"]
        lines += [
            f"## Training memory against M (batch {mem['batch_size']})",
            "",
            "| method | trainable (no head) | activations MiB | x full | x lora | train memory MiB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for spec, r in rows.items():
            a = r["saved_activation_bytes"]
            lines.append(
                f"| {spec} | {r['trainable_no_head']:,} | {a / 2**20:.1f} | {a / full:.3f} | {a / lora:.3f} "
                f"| {r['train_memory_bytes'] / 2**20:.1f} |"
            )
        lines.append("")
    if "multitask" in data:
        mt = data["multitask"]
        lines += [
            f"## Shared-trunk inference, {mt['tasks']} task models (VTAB-1K class counts), M = 7",
            "",
            "| batch | separately s | shared trunk s | ratio | max abs diff |",
            "|---:|---:|---:|---:|---:|",
        ]
        for b, r in mt["rows"].items():
            lines.append(
                f"| {b} | {r['separate_s']:.2f} | {r['multitask_s']:.2f} | {r['ratio']:.3f} | {r['max_abs_diff']:.1e} |"
            )
        lines.append("")
    if "throughput" in data:
        tp = data["throughput"]
        batches = list(next(iter(tp["rows"].values())))
        lines += [
            f"## Eval throughput, images/s (fastest of {tp['repeats']})",
            "",
            "| method | " + " | ".join(f"batch {b}" for b in batches) + " |",
            "|---|" + "---:|" * len(batches),
        ]
        for spec, r in tp["rows"].items():
            lines.append(f"| {spec} | " + " | ".join(f"{r[b]:.2f}" for b in batches) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["memory", "multitask", "throughput"])
    p.add_argument("--batch-size", type=int, default=2, help="batch for the memory part")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    data = load("dtl")
    data["meta"] = run_meta("dtl.py", argv)
    if "memory" in args.parts:
        data["memory"] = part_memory(args.batch_size)
    if "multitask" in args.parts:
        data["multitask"] = part_multitask([1, 16], args.repeats)
    if "throughput" in args.parts:
        data["throughput"] = part_throughput([1, 4, 16], args.repeats)
    save("dtl", data, render(data).splitlines())
    return 0


if __name__ == "__main__":
    sys.exit(main())
