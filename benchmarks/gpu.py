"""vpeft on one GPU: ViT-B/16 (random weights, 224 px), batch 32, bf16, generated data, no network, under 8 minutes.

Parts, each in its own try/except (a failure is printed and recorded, and the other parts still run; a time budget
skips what would overrun it):

* ``methods``: per method (and GIST, iDAT, GPS, DTL, DTL+), with :func:`vpeft.measure.measure`: peak training memory
  (``torch.cuda.max_memory_allocated`` over the measured, warm-up and timed AdamW steps, after a reset) and its ratio
  to full fine-tuning, beside the DTL paper's ratios; training images/s; eval-mode inference images/s at batch 1, 4
  and 16, beside the DTL paper's RTX 3090 figures. The saved-tensor probe's activations and autocast weight copies
  are recorded too.
* ``data_path``: the trainer's throughput against a lean loop over the same model with the data already in device
  tensors (``benchmarks/data_path.py``'s comparison) on a generated task in the vtab1k and fgvc layouts. Goal: at
  least 0.9x on vtab1k and 0.8x on fgvc (which also augments).
* ``fp16_scaler``: two steps of DTL through the trainer with ``train.amp=fp16`` (GradScaler), as its recipe sets.
* ``gps``: GPS's selection pass and training through the trainer (``train.amp=fp16``, as its recipe).
* ``lora_peft``: vpeft's LoRA (q,v) against HF PEFT's LoRA on the fused qkv, step time (``benchmarks/lora_peft.py``).
* ``nccl``: a one-process NCCL group and every collective of ``vpeft/engine/distributed.py`` on it.
* ``sam``: SAM ViT-B (random weights, 1024 px, batch 1, task segment) per Table 5 method (decoder-only, full, BitFit,
  adapter, SSF, LoRA, GPS), with :func:`vpeft.measure.measure`: step time and peak memory (``--smoke``: ``sam:tiny``).
  Needs segment-anything (the sam extra); skipped without it.
* ``text``: T5-base (length 256, ATTEMPT's) and BERT-base (length 128), random weights and token ids, batch 32, per
  GIST Table 3 method (full, ATTEMPT's adapters, adapters + GIST, LoRA, BitFit): step time and peak memory
  (``--smoke``: ``t5:tiny``, ``hf_text:tiny_bert``). Needs transformers (the text extra); skipped without it.

Writes benchmarks/results/gpu.{json,md}. ``--smoke`` runs every part but ``nccl`` (skipped: no CUDA) on the CPU with
the tiny ViT in about a minute, writing to ``--out``.

    python benchmarks/gpu.py                          # on a machine with a CUDA GPU (vpeft not installed:
                                                      # PYTHONPATH=. python3 benchmarks/gpu.py)
    python benchmarks/gpu.py --smoke --out /tmp/gpu   # the same parts on the CPU, tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from _common import OUT, run_meta, save
from memory_sam_b import METHODS as SAM_ROWS  # label -> (method, selector), as recipe sam_polyp

VIT_B = "vit_base_patch16_224"
TINY = "vit_tiny_patch16_224:img_size=32,patch_size=8,embed_dim=32,depth=2,num_heads=2"
#: (label, method, objective, selector); the iDAT teacher is set in main (ViT-S/16, or the tiny ViT in --smoke).
ROWS = (
    ("full", "full", "ce", None),
    ("linear", "linear", "ce", None),
    ("bitfit", "bitfit", "ce", None),
    ("adapter", "adapter", "ce", None),
    ("adaptformer", "adaptformer", "ce", None),
    ("lora", "lora", "ce", None),
    ("vpt_deep", "vpt_deep", "ce", None),
    ("ssf", "ssf", "ce", None),
    ("fact_tt", "fact_tt", "ce", None),
    ("gist (adapter_ps:dim=4)", "adapter_ps:dim=4", "gist", None),
    ("idat (adapter:dim=4)", "adapter:dim=4", "idat", None),
    ("gps (k=1)", "linear", "ce", "gps:k=1"),
    ("dtl", "dtl", "ce", None),
    ("dtl_plus", "dtl_plus", "ce", None),
)
#: DTL paper (arXiv 2312.07856): training memory of ViT-B/16 in GB; their ratio to full fine-tuning is what compares.
PAPER_MEMORY_GB = {
    "full": 4.7,
    "lora": 3.0,
    "adaptformer": 2.8,
    "bitfit": 2.9,
    "ssf": 4.9,
    "fact_tt": 3.9,
    "vpt_deep": 4.2,
    "dtl": 1.6,
    "dtl_plus": 1.7,
}
#: The same paper's inference images/s on an RTX 3090 at batch 1, 4, 16.
PAPER_INFERENCE = {
    "full": (161, 636, 952),
    "dtl": (131, 528, 892),
    "dtl_plus": (120, 469, 877),
    "adaptformer": (108, 436, 876),
}
INFERENCE_BATCHES = (1, 4, 16)
GOALS = {"vtab1k": 0.9, "fgvc": 0.8}


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_part(name: str, fn, deadline: float) -> dict:
    """``fn()``'s record with ``status`` ok, or failed with the error (printed), or skipped past the deadline."""
    if time.perf_counter() > deadline:
        print(f"[{name}] skipped: time budget spent", file=sys.stderr, flush=True)
        return {"status": "skipped", "reason": "time budget spent"}
    print(f"[{name}] ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        out = {"status": "ok", **fn()}
    except Exception as e:  # noqa: BLE001 - every part is reported, none stops the others
        traceback.print_exc()
        print(f"[{name}] FAILED: {_error(e)}", file=sys.stderr, flush=True)
        out = {"status": "failed", "error": _error(e)}
    out["seconds"] = time.perf_counter() - t0
    print(f"[{name}] {out['status']} in {out['seconds']:.1f} s", file=sys.stderr, flush=True)
    return out


def methods_part(
    spec: str, teacher: str, batch: int, device, amp: str, warmup: int, repeats: int, deadline: float
) -> dict:
    from vpeft.measure import measure

    rows, failed = {}, []
    for label, method, objective, selector in ROWS:
        if time.perf_counter() > deadline:
            rows[label] = {"status": "skipped", "reason": "time budget spent"}
            continue
        obj = {"name": "idat", "teacher": teacher} if objective == "idat" else objective
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
        try:
            r = measure(
                spec,
                method,
                obj,
                batch_size=batch,
                num_classes=100,
                device=str(device),
                amp=amp,
                warmup=warmup,
                repeats=repeats,
                selector=selector,
                inference=True,
                inference_batch_sizes=INFERENCE_BATCHES,
            )
            rows[label] = {
                "status": "ok",
                "method": r["method"],
                "objective": r["objective"],
                "selector": r.get("selector"),
                "trainable_no_head": r["trainable_no_head"],
                "cuda_peak_bytes": r.get("cuda_max_memory_allocated"),
                "cuda_allocated_before_bytes": before,
                **{
                    k: r.get(k)
                    for k in (
                        "train_memory_bytes",
                        "saved_activation_bytes",
                        "autocast_weight_bytes",
                        "param_bytes",
                        "grad_bytes",
                        "optimizer_state_bytes",
                        "step_seconds",
                    )
                },
                "train_images_per_second": batch / r["step_seconds"],
                "inference": {
                    str(i["batch_size"]): {
                        "latency_seconds": i["latency_seconds"],
                        "images_per_second": i["images_per_second"],
                    }
                    for i in r["inference"]
                },
            }
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            rows[label] = {"status": "failed", "error": _error(e)}
            failed.append(label)
        print(f"  {label}: {rows[label]['status']}", file=sys.stderr, flush=True)
        _free(device)
    # Peak memory on CUDA; on the CPU the probe's exact accounting stands in for it.
    key = "cuda_peak_bytes" if device.type == "cuda" else "train_memory_bytes"
    full = rows.get("full", {}).get(key)
    for r in rows.values():
        if r["status"] == "ok":
            r["memory_basis"] = key
            r["ratio_to_full"] = r[key] / full if full else None
    if failed:
        return {"status": "failed", "error": f"methods failed: {', '.join(failed)}", "rows": rows}
    return {"rows": rows}


def _measured(part: str, runs: list[tuple[str, dict]], device, deadline: float) -> tuple[dict, list[str]]:
    """:func:`vpeft.measure.measure` per ``(label, its keyword arguments)``: step time and peak memory of each row
    (a failure is recorded and the next row runs; rows past the deadline are skipped), and the failed labels."""
    from vpeft.measure import measure

    rows, failed = {}, []
    for label, kwargs in runs:
        if time.perf_counter() > deadline:
            rows[label] = {"status": "skipped", "reason": "time budget spent"}
            continue
        try:
            r = measure(device=str(device), **kwargs)
            rows[label] = {
                "status": "ok",
                "backbone": kwargs["backbone"],
                "trainable": r["trainable"],
                "step_seconds": r["step_seconds"],
                "train_memory_bytes": r["train_memory_bytes"],
                "cuda_peak_bytes": r.get("cuda_max_memory_allocated"),
            }
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            rows[label] = {"status": "failed", "error": _error(e)}
            failed.append(label)
        print(f"  {part} {label}: {rows[label]['status']}", file=sys.stderr, flush=True)
        _free(device)
    return rows, failed


def _step_table(title: str, first: str, rows: dict) -> list[str]:
    """A markdown table of :func:`_measured`'s rows."""
    lines = ["", title, "", f"| {first} | trainable | step s | train memory MiB (probe) | peak allocated MiB |"]
    lines.append("|---|---:|---:|---:|---:|")
    for label, r in rows.items():
        if r["status"] == "ok":
            peak = _mib(r["cuda_peak_bytes"]) if r["cuda_peak_bytes"] else "-"
            lines.append(
                f"| {label} | {r['trainable']:,} | {r['step_seconds']:.3f} | {_mib(r['train_memory_bytes'])} | {peak} |"
            )
    return lines


def sam_part(smoke: bool, device, amp: str, warmup: int, repeats: int, deadline: float) -> dict:
    try:
        import segment_anything  # noqa: F401
    except ImportError:
        return {"status": "skipped", "reason": "segment-anything is not installed (pip install 'vpeft[sam]')"}
    spec = "sam:tiny" if smoke else "sam:vit_b"
    common = {"backbone": spec, "task": "segment", "batch_size": 1, "amp": amp, "warmup": warmup, "repeats": repeats}
    runs = [(label, {**common, "method": m, "selector": sel}) for label, (m, sel) in SAM_ROWS.items()]
    rows, failed = _measured("sam", runs, device, deadline)
    out = {"backbone": spec, "rows": rows}
    if failed:
        return {"status": "failed", "error": f"sam methods failed: {', '.join(failed)}", **out}
    return out


#: ATTEMPT's adapters (1,855,104 trainable on T5-base), as recipe attempt_glue.
ATTEMPT_ADAPTER = "adapter:position=sublayers,dim=24,act=gelu_new,init=default,train_norms=true"
#: (label, model: t5 or bert, method, objective): the GIST paper's Table 3 rows on T5-base, and BERT-base beside them.
TEXT_ROWS = (
    ("t5 full", "t5", "full", "lm"),
    ("t5 adapter (ATTEMPT)", "t5", ATTEMPT_ADAPTER, "lm"),
    ("t5 adapter+gist", "t5", ATTEMPT_ADAPTER, "gist:cls_loss=lm"),
    ("t5 lora", "t5", "lora", "lm"),
    ("t5 bitfit", "t5", "bitfit", "lm"),
    ("bert full", "bert", "full", "ce"),
    ("bert adapter", "bert", "adapter:position=sublayers,dim=24", "ce"),
    ("bert adapter+gist", "bert", "adapter:position=sublayers,dim=24", "gist"),
    ("bert lora", "bert", "lora", "ce"),
    ("bert bitfit", "bert", "bitfit", "ce"),
)


def text_part(smoke: bool, batch: int, device, amp: str, warmup: int, repeats: int, deadline: float) -> dict:
    """T5-base at ATTEMPT's length 256 and BERT-base at 128 (random weights, random token ids with no padding, so
    every position computes), per Table 3 method: step time and peak memory. Needs transformers (the text extra)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return {"status": "skipped", "reason": "transformers is not installed (pip install 'vpeft[text]')"}
    specs = (
        {"t5": "t5:tiny:max_length=32", "bert": "hf_text:tiny_bert:max_length=32"}
        if smoke
        else {"t5": "t5:base:max_length=256", "bert": "hf_text:bert_base:max_length=128"}
    )
    common = {"batch_size": batch, "num_classes": 2, "amp": amp, "warmup": warmup, "repeats": repeats}
    runs = [
        (label, {**common, "backbone": specs[model], "method": method, "objective": objective})
        for label, model, method, objective in TEXT_ROWS
    ]
    rows, failed = _measured("text", runs, device, deadline)
    out = {"backbones": specs, "batch_size": batch, "rows": rows}
    if failed:
        return {"status": "failed", "error": f"text methods failed: {', '.join(failed)}", **out}
    return out


def _need(task: Path | None) -> Path:
    if task is None:
        raise RuntimeError("no data: the data part failed")
    return task


def _small_split(task: Path, n: int) -> str:
    """A training list of the task's first ``n`` images (two steps at batch n/2)."""
    lines = (task / "train800.txt").read_text().splitlines()[:n]
    (task / f"train{n}.txt").write_text("\n".join(lines) + "\n")
    return f"train{n}"


def _train_cfg(spec: str, task: Path, split: str, batch: int, device, amp: str, **kw):
    from vpeft.config import RunConfig

    return RunConfig.from_dict(
        {
            "backbone": {"spec": spec},
            "data": {"root": str(task), "train_split": split},
            "train": {"epochs": 1, "batch_size": batch, "lr": 1e-3, "device": str(device), "amp": amp},
            **kw,
        }
    )


def _run_record(r: dict, out: Path) -> dict:
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return {
        "loss": [e["loss"] for e in log],
        "test_acc": r["test_acc"],
        "memory": r["memory"],
        "train_seconds": r["train_seconds"],
    }


def fp16_part(spec: str, task: Path | None, batch: int, device, amp: str, runs: Path) -> dict:
    import math

    from vpeft.engine.trainer import train

    split = _small_split(_need(task), 2 * batch)
    cfg = _train_cfg(spec, task, split, batch, device, amp, method="dtl")
    rec = _run_record(train(cfg, runs / "fp16-dtl", progress=False), runs / "fp16-dtl")
    if not all(math.isfinite(v) for v in rec["loss"]):
        raise RuntimeError(f"loss not finite: {rec['loss']}")
    if amp == "fp16" and rec["memory"].get("dtype") != "float16":
        raise RuntimeError(f"train.amp=fp16 trained in {rec['memory'].get('dtype')}")
    return {"method": "dtl", "steps": 2, "amp": amp, **rec}


def gps_part(spec: str, task: Path | None, batch: int, device, amp: str, runs: Path) -> dict:
    from vpeft.engine.trainer import train

    split = _small_split(_need(task), 2 * batch)
    cfg = _train_cfg(spec, task, split, batch, device, amp, method="linear", selector="gps")
    r = train(cfg, runs / "gps", progress=False)
    return {
        "method": "linear",
        "selector": "gps",
        "amp": amp,
        "selection": r.get("selection"),
        "trainable_params_no_head": r["trainable_params_no_head"],
        **_run_record(r, runs / "gps"),
    }


def data_path_part(
    spec: str, task: Path | None, root: Path, methods: tuple[str, ...], epochs: int, batch: int, device, amp: str
) -> dict:
    from data_path import compare, fgvc_copy

    roots = {"vtab1k": _need(task), "fgvc": fgvc_copy(task, root / f"{task.name}-fgvc")}
    rows = []
    for fmt, r in roots.items():
        for method in methods:
            row = compare(r, fmt, spec, method, epochs, batch, device, amp, root / "runs-data-path")
            row.update(
                trainer_images_per_second=row["images"] / row["trainer_epoch_s"],
                lean_images_per_second=row["images"] / row["lean_epoch_s"],
                goal=GOALS[fmt],
                meets_goal=row["throughput_ratio"] >= GOALS[fmt],
            )
            rows.append(row)
            print(f"  {fmt} {method}: {row['throughput_ratio']:.3f}x the lean loop", file=sys.stderr, flush=True)
            _free(device)
    return {"epochs": epochs, "rows": rows}


def lora_peft_part(smoke: bool, batch: int, device, amp: str, out: Path) -> dict:
    """``benchmarks/lora_peft.py`` on this device: vpeft's LoRA q,v (added into the slices) against HF PEFT's LoRA on
    the fused qkv, step time side by side."""
    import lora_peft

    args = ["--smoke"] if smoke else ["--batch-size", str(batch), "--repeats", "20"]
    if lora_peft.main([*args, "--device", str(device), "--amp", amp, "--out", str(out)]) != 0:
        raise RuntimeError("lora_peft.py failed")
    rows = json.loads((out / "lora_peft.json").read_text())["rows"]
    return {"rows": [{k: r[k] for k in ("variant", "trainable", "median_ms", "min_ms", "ratio_to_peft")} for r in rows]}


def nccl_part(device) -> dict:
    import torch.distributed as dist

    if device.type != "cuda":
        return {"status": "skipped", "reason": "no CUDA"}
    if not dist.is_nccl_available():
        raise RuntimeError("this torch has no NCCL")
    torch.cuda.set_device(device)
    return collectives(device, "nccl")


def collectives(device, backend: str) -> dict:
    """A one-process group of ``backend``: every collective of :class:`vpeft.engine.distributed.Dist` (enabled by
    force, since a world of one is a no-op there) must run on it and return the one process's values."""
    import torch.distributed as dist

    from vpeft.engine.distributed import Dist

    dist.init_process_group(backend, store=dist.HashStore(), world_size=1, rank=0)
    try:
        forced = type("ForcedDist", (Dist,), {"enabled": property(lambda self: True)})
        kw = {"device": device} if "device" in {f.name for f in dataclasses.fields(Dist)} else {}
        d = forced(rank=0, world=1, local_rank=device.index or 0, **kw)
        checks = {}
        d.barrier()
        checks["barrier"] = True
        checks["sum_floats"] = d.sum_floats([1.5, 2.0, 3.0]) == [1.5, 2.0, 3.0]
        a = torch.nn.Parameter(torch.randn(5, device=device))
        b = torch.nn.Parameter(torch.randn(3, device=device))
        a.grad = torch.ones(5, device=device)
        d.sum_grads_([a, b])
        checks["sum_grads_"] = bool(torch.equal(a.grad, torch.ones_like(a)))
        checks["sum_grads_ (no gradient: zeros)"] = bool(torch.equal(b.grad, torch.zeros_like(b)))
        t = torch.randn(4, device=device)
        ref = t.clone()
        d.broadcast_([t])
        checks["broadcast_"] = bool(torch.equal(t, ref))
        if hasattr(d, "sum_tensor_"):
            for where in (device, torch.device("cpu")):
                t = torch.arange(4.0, device=where)
                checks[f"sum_tensor_ ({where.type})"] = bool(torch.equal(d.sum_tensor_(t).cpu(), torch.arange(4.0)))
        if hasattr(d, "gather_shards"):
            t = torch.arange(6, device=device).view(3, 2)
            checks["gather_shards"] = bool(torch.equal(d.gather_shards(t, 3).cpu(), t.cpu()))
        wrong = [k for k, ok in checks.items() if not ok]
        if wrong:
            raise AssertionError(f"wrong results from {', '.join(wrong)}")
        return {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "checks": sorted(checks)}
    finally:
        dist.destroy_process_group()


def _mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f}" if b >= 10 * 2**20 else f"{b / 2**20:.3f}"


def markdown(data: dict) -> list[str]:
    meta, parts = data["meta"], data["parts"]
    lines = [
        f"# vpeft on one GPU: {meta['backbone']}, batch {meta['batch_size']}, {meta['dtype']}, {meta['device']}",
        "",
        f"torch {meta['torch']}; command: `{meta['command']}`; {data['total_seconds']:.0f} s in all.",
        "",
    ]
    for name, p in parts.items():
        if p["status"] != "ok":
            lines.append(f"- **{name}: {p['status']}**: {p.get('error') or p.get('reason')}")
    m = parts["methods"]
    rows = m.get("rows") or {}
    if rows:
        basis = (
            "peak CUDA memory allocated"
            if data["meta"]["device"].startswith("cuda")
            else "probe's training memory (no CUDA)"
        )
        lines += [
            "",
            "## Methods",
            "",
            f"Memory: {basis} over the measured, warm-up and timed training steps (AdamW, random weights); "
            "its ratio to full fine-tuning beside the DTL paper's (its GB / full's 4.7 GB). Activations and "
            "autocast weight copies: what autograd saves for backward (the exact probe). Inference: eval "
            "mode, inference mode, same autocast, median latency; the paper's figures are an RTX 3090's.",
            "",
            "| method | trainable (no head) | memory MiB | ratio to full | paper ratio | activations MiB "
            "| weight copies MiB | train img/s | inference img/s b1 / b4 / b16 | paper 3090 b1 / b4 / b16 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, r in rows.items():
            if r["status"] != "ok":
                lines.append(f"| {label} | {r['status']}: {r.get('error') or r.get('reason')} |" + " |" * 8)
                continue
            paper = f"{PAPER_MEMORY_GB[label] / PAPER_MEMORY_GB['full']:.3f}" if label in PAPER_MEMORY_GB else "-"
            inf = " / ".join(f"{r['inference'][str(b)]['images_per_second']:,.0f}" for b in INFERENCE_BATCHES)
            pinf = " / ".join(map(str, PAPER_INFERENCE[label])) if label in PAPER_INFERENCE else "-"
            ratio = f"{r['ratio_to_full']:.3f}" if r["ratio_to_full"] is not None else "-"
            lines.append(
                f"| {label} | {r['trainable_no_head']:,} | {_mib(r[r['memory_basis']])} | {ratio} "
                f"| {paper} | {_mib(r['saved_activation_bytes'])} "
                f"| {_mib(r['autocast_weight_bytes'])} | {r['train_images_per_second']:,.0f} | {inf} | {pinf} |"
            )
    d = parts["data_path"]
    if d.get("rows"):
        lines += [
            "",
            "## Data path",
            "",
            f"The trainer against a lean loop over the same model and optimizer with the data already in "
            f"device tensors (`benchmarks/data_path.py`'s comparison), median epoch of epochs 2-{d['epochs']}. "
            "fgvc: the trainer also draws a random-resized crop + flip per image; the lean loop does not.",
            "",
            "| format | method | images | trainer img/s | lean img/s | trainer / lean throughput | goal |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in d["rows"]:
            lines.append(
                f"| {r['format']} | {r['method']} | {r['images']} | {r['trainer_images_per_second']:,.0f} "
                f"| {r['lean_images_per_second']:,.0f} | {r['throughput_ratio']:.3f} "
                f"| >= {r['goal']} {'(met)' if r['meets_goal'] else '(NOT met)'} |"
            )
    lp = parts.get("lora_peft", {})
    if lp.get("rows"):
        lines += [
            "",
            "## LoRA against HF PEFT",
            "",
            "Training step time, rank 8, `benchmarks/lora_peft.py`: vpeft's q,v updates added into the slices of "
            "the fused qkv output, its single update of the fused qkv, and PEFT's LoRA on the fused qkv.",
            "",
            "| variant | trainable | median ms | min ms | / peft qkv |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['variant']} | {r['trainable']:,} | {r['median_ms']:.2f} | {r['min_ms']:.2f} "
            f"| {r['ratio_to_peft']:.3f} |"
            for r in lp["rows"]
        ]
    lines += ["", "## Trainer runs and collectives", ""]
    for name in ("fp16_scaler", "gps"):
        p = parts[name]
        if p["status"] == "ok":
            mem = p["memory"]
            peak = mem.get("cuda_max_memory_allocated") or mem.get("cuda_peak_allocated")
            sel = (
                f", selection {p['selection']['seconds']:.1f} s, {p['selection']['selected']:,} selected"
                if p.get("selection")
                else ""
            )
            peak = f"; peak {_mib(peak)} MiB allocated" if peak else ""
            lines.append(
                f"- {name}: {p['method']}, train.amp={p['amp']} (trained in {mem.get('dtype')}), losses "
                f"{', '.join(f'{v:.4f}' for v in p['loss'])}{sel}{peak}."
            )
    if parts["nccl"]["status"] == "ok":
        lines.append(f"- nccl: world {parts['nccl']['world_size']}, {', '.join(parts['nccl']['checks'])}: right.")
    sam = parts.get("sam", {})
    if sam.get("status") == "ok":
        lines += _step_table(f"## SAM ({sam['backbone']}), batch 1, task segment", "method", sam["rows"])
    text = parts.get("text", {})
    if text.get("status") == "ok":
        title = f"## Text ({text['backbones']['t5']}, {text['backbones']['bert']}), batch {text['batch_size']}"
        lines += _step_table(title, "model and method", text["rows"])
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="the tiny ViT on the CPU, tiny data (needs --out)")
    p.add_argument("--out", type=Path, help="folder for gpu.{json,md} (default: benchmarks/results)")
    p.add_argument("--device", help="default: cuda (cpu with --smoke)")
    p.add_argument("--batch-size", type=int, help="default: 32 (8 with --smoke)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="bf16")
    p.add_argument("--budget", type=float, default=420.0, help="seconds; parts that would start later are skipped")
    args = p.parse_args(argv)
    if args.smoke and args.out is None:
        p.error("--smoke writes to --out, not to benchmarks/results")
    t0 = time.perf_counter()
    deadline = t0 + args.budget
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    spec, teacher = (TINY, TINY) if args.smoke else (VIT_B, "vit_small_patch16_224")
    batch = args.batch_size or (8 if args.smoke else 32)
    warmup, repeats = (1, 2) if args.smoke else (3, 10)
    # The trainer autocasts on CUDA only: on the CPU its runs are fp32 (each run records its dtype).
    train_amp = args.amp if device.type == "cuda" else "none"
    meta = run_meta(
        "gpu.py",
        argv,
        dtype={"none": "float32", "bf16": "bfloat16", "fp16": "float16"}[args.amp],
        device=device,
        backbone=spec,
        batch_size=batch,
        img_size=32 if args.smoke else 224,
        smoke=args.smoke,
        budget_seconds=args.budget,
        cuda=torch.version.cuda,
    )
    parts = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        task = None

        def make_task() -> dict:
            nonlocal task
            from vpeft.data.synth import generate_task

            task = generate_task(
                tmp / "data", "shapes", size=32 if args.smoke else 224, n_test=16 if args.smoke else 64
            )
            return {"task": "shapes", "train_images": 1000}

        parts["data"] = run_part("data", make_task, deadline)
        # The memory table first, while nothing else has touched the device.
        parts["methods"] = run_part(
            "methods", lambda: methods_part(spec, teacher, batch, device, args.amp, warmup, repeats, deadline), deadline
        )
        methods = ("linear",) if args.smoke else ("linear", "lora")
        parts["data_path"] = run_part(
            "data_path",
            lambda: data_path_part(spec, task, tmp, methods, 2 if args.smoke else 4, batch, device, train_amp),
            deadline,
        )
        fp16 = "fp16" if device.type == "cuda" else "none"  # the recipes' AMP; fp32 on the CPU
        parts["fp16_scaler"] = run_part(
            "fp16_scaler", lambda: fp16_part(spec, task, batch, device, fp16, tmp), deadline
        )
        parts["gps"] = run_part("gps", lambda: gps_part(spec, task, batch, device, fp16, tmp), deadline)
        parts["lora_peft"] = run_part(
            "lora_peft", lambda: lora_peft_part(args.smoke, batch, device, args.amp, tmp / "lora_peft"), deadline
        )
        parts["nccl"] = run_part("nccl", lambda: nccl_part(device), deadline)
        parts["sam"] = run_part(
            "sam", lambda: sam_part(args.smoke, device, args.amp, warmup, repeats, deadline), deadline
        )
        parts["text"] = run_part(
            "text", lambda: text_part(args.smoke, batch, device, args.amp, warmup, repeats, deadline), deadline
        )
    data = {
        "meta": meta,
        "parts": parts,
        "paper": {"memory_gb": PAPER_MEMORY_GB, "inference_3090": PAPER_INFERENCE},
        "total_seconds": time.perf_counter() - t0,
    }
    save("gpu", data, markdown(data), out=args.out or OUT)
    failed = [k for k, v in parts.items() if v["status"] == "failed"]
    if failed:
        print(f"failed parts: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
