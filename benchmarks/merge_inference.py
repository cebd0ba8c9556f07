"""Inference time of merged models against the plain backbone, and of the unmerged method, on ViT-B/16.

Times are the fastest of N runs, but on this shared 2-core machine even two identical models differ by up to ~10%
from run to run; the operation and FLOP counts (deterministic) are the exact comparison.

For every mergeable method: build it (random weights, its factors moved off their init), time eval forwards of the
unmerged model, merge, and time the merged model against a plain timm ViT-B/16, interleaving the two so drift on
the machine hits both alike. Writes benchmarks/results/merge_inference.{json,md}.

    .venv/bin/python benchmarks/merge_inference.py [--batch-size 4] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import timm
import torch
from _common import run_meta, save

import vpeft
from vpeft.registry import METHODS

BACKBONE = "vit_base_patch16_224"


@torch.no_grad()
def _ops_and_flops(model, x) -> tuple[int, int]:
    """Deterministic cost: aten operations dispatched and FLOPs of one forward (timing noise does not touch it)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with FlopCounterMode(display=False) as fc, Count():
        model(x)
    return Count.n, fc.get_total_flops()


@torch.no_grad()
def _time(model, x) -> float:
    t0 = time.perf_counter()
    model(x)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    x = torch.randn(args.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    names = [n for n in METHODS.names() if METHODS.get(n).mergeable]
    rows = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        torch.manual_seed(0)
        bb = vpeft.create_backbone(BACKBONE, num_classes=100)
        vpeft.apply_method(bb, name)
        with torch.no_grad():
            for p_ in bb.parameters():
                if p_.requires_grad:
                    p_.add_(torch.randn_like(p_) * 0.01)
        bb.eval()
        _time(bb, x)
        unmerged = [_time(bb, x) for _ in range(max(3, args.repeats // 2))]
        unmerged_cost = _ops_and_flops(bb, x)
        with torch.no_grad():
            expected = bb(x)
        merged = vpeft.merge(bb).eval()
        with torch.no_grad():
            err = (merged(x) - expected).abs().max().item()
        plain = timm.create_model(BACKBONE, num_classes=100).eval()
        _time(plain, x), _time(merged, x)
        t_plain, t_merged = [], []
        for i in range(args.repeats):  # ABBA order: neither model always runs second
            first, second = ((plain, t_plain), (merged, t_merged)) if i % 2 else ((merged, t_merged), (plain, t_plain))
            first[1].append(_time(first[0], x))
            second[1].append(_time(second[0], x))
        ops_plain, flops_plain = _ops_and_flops(plain, x)
        ops_merged, flops_merged = _ops_and_flops(merged, x)
        row = {
            "method": name,
            "ops_plain": ops_plain,
            "ops_merged": ops_merged,
            "flops_plain": flops_plain,
            "flops_merged": flops_merged,
            "ops_unmerged": unmerged_cost[0],
            "flops_unmerged": unmerged_cost[1],
            # minimum: the least-disturbed run of a deterministic workload (medians move by several % here)
            "plain_s": min(t_plain),
            "merged_s": min(t_merged),
            "unmerged_s": min(unmerged),
            "plain_median_s": statistics.median(t_plain),
            "merged_median_s": statistics.median(t_merged),
            "max_abs_diff": err,
        }
        row["merged_over_plain"] = row["merged_s"] / row["plain_s"]
        row["unmerged_over_plain"] = row["unmerged_s"] / row["plain_s"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    meta = run_meta("merge_inference.py", argv, backbone=BACKBONE, batch_size=args.batch_size, repeats=args.repeats)
    lines = [
        f"# Eval forward time, merged vs plain {BACKBONE}, batch {args.batch_size}, fp32, CPU",
        "",
        f"Command: `{meta['command']}`; fastest of {args.repeats} interleaved (ABBA) forwards (unmerged: of "
        f"{max(3, args.repeats // 2)}, run before). `max abs diff` is merged vs unmerged output.",
        "",
        "| method | aten ops merged / plain | FLOPs merged / plain | time merged / plain | aten ops unmerged "
        "| FLOPs unmerged / plain | time unmerged / plain | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['ops_merged']} / {r['ops_plain']} | {r['flops_merged'] / r['flops_plain']:.4f} "
            f"| {r['merged_over_plain']:.3f} | {r['ops_unmerged']} | {r['flops_unmerged'] / r['flops_plain']:.4f} "
            f"| {r['unmerged_over_plain']:.3f} | {r['max_abs_diff']:.1e} |"
        )
    save("merge_inference", {"meta": meta, "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
