"""Step time of a method with and without the GIST objective on ViT-B/16 (training step and eval forward).

Writes benchmarks/results/gist_overhead.{json,md}. Both variants are built once and timed in ABBA order; the figure
is the fastest of N runs (this shared machine's run-to-run noise is several %); FLOPs are counted exactly.

    .venv/bin/python benchmarks/gist_overhead.py [--methods adapter_ps lora ssf] [--batch-size 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from _common import run_meta, save
from torch.utils.flop_counter import FlopCounterMode

from vpeft.config import RunConfig
from vpeft.run import build_model


def build(method, objective, batch):
    cfg = RunConfig.from_dict({"backbone": {"spec": "vit_base_patch16_224"}, "method": method, "objective": objective})
    model, obj = build_model(cfg, 100)
    params = [p for m in (model, obj) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    return model, obj, opt


def train_step(model, obj, opt, x, y):
    model.train(), obj.train()
    t0 = time.perf_counter()
    obj(model, x, y)["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


@torch.no_grad()
def eval_step(model, obj, x):
    model.eval(), obj.eval()
    t0 = time.perf_counter()
    obj.predict(model, x)
    return time.perf_counter() - t0


def flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["adapter_ps", "lora", "ssf"])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 224, 224, generator=g)
    y = torch.randint(0, 100, (args.batch_size,), generator=g)
    rows = []
    for method in args.methods:
        print(f"{method} ...", file=sys.stderr, flush=True)
        variants = {"ce": build(method, "ce", args.batch_size), "gist": build(method, "gist", args.batch_size)}
        times = {k: {"train": [], "eval": []} for k in variants}
        for v in variants.values():  # warm-up
            train_step(*v, x, y), eval_step(v[0], v[1], x)
        for i in range(args.repeats):
            order = ["ce", "gist"] if i % 2 == 0 else ["gist", "ce"]
            for k in order:
                times[k]["train"].append(train_step(*variants[k], x, y))
            for k in order:
                times[k]["eval"].append(eval_step(variants[k][0], variants[k][1], x))
        row = {"method": method}
        for k, (model, obj, _opt) in variants.items():
            row[f"{k}_train_s"] = min(times[k]["train"])
            row[f"{k}_eval_s"] = min(times[k]["eval"])
            model.eval(), obj.eval()
            row[f"{k}_eval_flops"] = flops(lambda: obj.predict(model, x))
        row["train_ratio"] = row["gist_train_s"] / row["ce_train_s"]
        row["eval_ratio"] = row["gist_eval_s"] / row["ce_eval_s"]
        row["eval_flops_ratio"] = row["gist_eval_flops"] / row["ce_eval_flops"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    meta = run_meta(
        "gist_overhead.py", argv, backbone="vit_base_patch16_224", batch_size=args.batch_size, repeats=args.repeats
    )
    lines = [
        f"# GIST overhead on ViT-B/16, batch {args.batch_size}, fp32, CPU",
        "",
        f"Command: `{meta['command']}`. Fastest of {args.repeats} ABBA-interleaved runs per variant; eval FLOPs "
        "counted with torch.utils.flop_counter.",
        "",
        "| method | train s (ce) | train s (gist) | train ratio | eval s (ce) | eval s (gist) | eval ratio | eval FLOPs ratio |",  # noqa: E501
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['ce_train_s']:.3f} | {r['gist_train_s']:.3f} | {r['train_ratio']:.3f} "
            f"| {r['ce_eval_s']:.3f} | {r['gist_eval_s']:.3f} | {r['eval_ratio']:.3f} "
            f"| {r['eval_flops_ratio']:.4f} |"
        )
    save("gist_overhead", {"meta": meta, "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
