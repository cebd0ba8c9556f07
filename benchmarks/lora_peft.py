"""Training step time of vpeft's LoRA against Hugging Face PEFT's LoRA, side by side on the same timm ViT.

Variants (rank 8, alpha = rank: scale 1, no dropout; the head trains in all three):

* ``vpeft q,v``: ``lora:targets=[q,v]``, vpeft's default: separate updates added into the q and v slices of the
  fused qkv output (294,912 LoRA parameters on ViT-B/16);
* ``vpeft qkv``: ``lora:targets=[qkv]``, one update of the fused qkv (294,912);
* ``peft qkv``: ``peft.get_peft_model(model, LoraConfig(r=8, target_modules=["qkv"]))`` on the plain timm model
  (294,912), the reference the issue compares with.

The three models share their frozen weights; before timing, their logits at initialisation (zero B) are checked to
be equal. Each repeat runs one AdamW step of every variant, in an order that rotates from repeat to repeat (so
drifting machine load hits all alike); the figure is the median. Writes benchmarks/results/lora_peft.{json,md}.

    .venv/bin/python benchmarks/lora_peft.py [--batch-size 8] [--repeats 20] [--device cuda --amp bf16]
    .venv/bin/python benchmarks/lora_peft.py --smoke --out /tmp/lora_peft   # tiny ViT, 1 repeat, seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import OUT, run_meta, save

VIT_B = "vit_base_patch16_224"
TINY = "vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=32,depth=2,num_heads=2"
AMP = {"none": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(spec: str, rank: int, num_classes: int, device) -> dict:
    """``{label: (model, optimizer)}`` for the three variants, with the same frozen weights."""
    import peft
    import timm

    from vpeft import apply_method, create_backbone
    from vpeft.config import parse_spec

    out = {}
    for label, targets in (("vpeft q,v", ["q", "v"]), ("vpeft qkv", ["qkv"])):
        torch.manual_seed(0)
        bb = create_backbone(spec, num_classes=num_classes)
        apply_method(bb, {"name": "lora", "rank": rank, "targets": targets})
        out[label] = bb
    name, kwargs = parse_spec(spec)
    plain = timm.create_model(name, num_classes=num_classes, **kwargs)
    plain.load_state_dict(out["vpeft q,v"].model.state_dict())
    model = peft.get_peft_model(
        plain, peft.LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=["qkv"])
    )
    for p in model.base_model.model.get_classifier().parameters():
        p.requires_grad_(True)
    out["peft qkv"] = model
    return {
        k: (m.to(device), torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4))
        for k, m in out.items()
    }


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def step(model, opt, x, y, amp, device) -> float:
    """One training step; seconds, synchronised before and after on CUDA."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=AMP[amp], enabled=amp != "none"):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default=VIT_B, help="timm spec (default: ViT-B/16, random weights)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=sorted(AMP), default="none")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--smoke", action="store_true", help="the tiny ViT, 1 warm-up step and 1 repeat (needs --out)")
    p.add_argument("--out", type=Path, help="folder for lora_peft.{json,md} (default: benchmarks/results)")
    args = p.parse_args(argv)
    if args.smoke and args.out is None:
        p.error("--smoke writes to --out, not to benchmarks/results")
    spec = TINY if args.smoke else args.backbone
    repeats, warmup = (1, 1) if args.smoke else (args.repeats, args.warmup)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = build(spec, args.rank, 100, device)
    size = variants["vpeft q,v"][0].input_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, *size, generator=g).to(device)
    y = torch.randint(0, 100, (args.batch_size,), generator=g).to(device)
    with torch.no_grad():  # zero B: all three are the plain model, so they share weights and compute the same
        logits = {k: m.eval()(x) for k, (m, _) in variants.items()}
    ref = logits["vpeft q,v"]
    for k, v in logits.items():
        torch.testing.assert_close(v, ref, rtol=1e-4, atol=1e-4, msg=f"{k} differs from vpeft q,v at init")
    labels = list(variants)
    for model, _ in variants.values():
        model.train()
    for _ in range(warmup):
        for k in labels:
            step(*variants[k], x, y, args.amp, device)
    times = {k: [] for k in labels}
    for i in range(repeats):
        print(f"repeat {i + 1}/{repeats}", file=sys.stderr, flush=True)
        for k in labels[i % len(labels) :] + labels[: i % len(labels)]:
            times[k].append(step(*variants[k], x, y, args.amp, device))
    base = statistics.median(times["peft qkv"])
    rows = [
        {
            "variant": k,
            "trainable": trainable(variants[k][0]),
            "median_ms": 1e3 * statistics.median(t),
            "min_ms": 1e3 * min(t),
            "ratio_to_peft": statistics.median(t) / base,
            "times_ms": [1e3 * s for s in t],
        }
        for k, t in times.items()
    ]
    meta = run_meta(
        "lora_peft.py",
        argv,
        dtype=AMP[args.amp],
        device=device,
        backbone=spec,
        batch_size=args.batch_size,
        rank=args.rank,
        repeats=repeats,
        warmup=warmup,
        smoke=args.smoke,
        peft=__import__("peft").__version__,
    )
    lines = [
        f"# vpeft LoRA against HF PEFT LoRA: training step time ({spec}, batch {args.batch_size}, rank {args.rank})",
        "",
        f"{meta['device']}, {meta['threads']} threads, {meta['dtype']}, torch {meta['torch']}, peft {meta['peft']}; "
        f"median of {repeats} interleaved AdamW steps after {warmup} warm-up steps. Trainable counts include the "
        "head.",
        "",
        "| variant | trainable | median (ms) | min (ms) | / peft qkv |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['variant']} | {r['trainable']:,} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
            f"{r['ratio_to_peft']:.3f} |"
            for r in rows
        ),
        "",
        f"Reproduce: `{meta['command']}`",
    ]
    save("lora_peft", {"meta": meta, "rows": rows}, lines, out=args.out or OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
