"""Rewrite the README's result tables from the committed files in benchmarks/results/.

.venv/bin/python benchmarks/readme_tables.py          # rewrite README.md in place
.venv/bin/python benchmarks/readme_tables.py --check  # exit 1 if README.md is out of date (a test runs this)
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def memory_table() -> str:
    data = json.loads((RESULTS / "memory_vit_b16.json").read_text())
    rows, meta = data["rows"], data["meta"]
    full = next(r for r in rows if r["method"] == "full")
    mib = lambda b: f"{b / 2**20:,.1f}"  # noqa: E731
    lines = [
        f"{meta['backbone']}, batch {meta['batch_size']}, {meta['dtype']}, {meta['device']}; "
        f"`{meta['command']}` (full table with step times: `benchmarks/results/memory_vit_b16.md`).",
        "",
        "| method | trainable (no head) | activations MiB | x full | train memory MiB | x full |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: r["train_memory_bytes"]):
        lines.append(
            f"| {r['method']} | {r['trainable_no_head']:,} | {mib(r['saved_activation_bytes'])} "
            f"| {r['saved_activation_bytes'] / full['saved_activation_bytes']:.3f} | {mib(r['train_memory_bytes'])} "
            f"| {r['train_memory_bytes'] / full['train_memory_bytes']:.3f} |"
        )
    return "\n".join(lines)


def merge_table() -> str:
    data = json.loads((RESULTS / "merge_inference.json").read_text())
    meta = data["meta"]
    lines = [
        f"{meta['backbone']}, eval forward, batch {meta['batch_size']}, {meta['dtype']}, {meta['device']}, fastest "
        f"of {meta['repeats']} interleaved runs; `{meta['command']}`.",
        "",
        "| method | aten ops merged / plain | FLOPs merged / plain | time merged / plain | time unmerged / plain "
        "| max abs diff |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['method']} | {r['ops_merged']} / {r['ops_plain']} | {r['flops_merged'] / r['flops_plain']:.4f} "
            f"| {r['merged_over_plain']:.3f} | {r['unmerged_over_plain']:.3f} | {r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def gist_table() -> str:
    data = json.loads((RESULTS / "gist_overhead.json").read_text())
    meta = data["meta"]
    lines = [
        f"{meta['backbone']}, batch {meta['batch_size']}, {meta['dtype']}, {meta['device']}, fastest of "
        f"{meta['repeats']} ABBA runs; `{meta['command']}`.",
        "",
        "| method | train step, gist / ce | eval forward, gist / ce | eval FLOPs, gist / ce |",
        "|---|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['method']} | {r['train_ratio']:.3f} | {r['eval_ratio']:.3f} | {r['eval_flops_ratio']:.4f} |"
        )
    return "\n".join(lines)


def _mini(part: str, tuned: bool = False):
    """(records, labels, tasks, summary) of a committed mini-VTAB report (``tuned``: the lr chosen on val, as
    ``vpeft report ... --tune val``; then also the times each grid point was chosen)."""
    sys.path.insert(0, str(ROOT))
    from vpeft.bench.report import _order, collect, summarise, tune

    path = RESULTS / "mini_vtab" / part / "results.jsonl"
    records = collect(path)
    chosen = {}
    if tuned:
        records, chosen = tune(records)
    labels, tasks, _ = _order([path], records)
    out = records, labels, tasks, summarise(records, labels, tasks)
    return out + (chosen,) if tuned else out


def _pm(ms) -> str:
    return f"{ms[0]:.1f} ±{ms[1]:.1f}" if ms else "-"


def mini_vtab_table() -> str:
    from vpeft.bench.report import compare

    parts = {p: _mini(p) for p in ("real", "synth")}
    real, synth = parts["real"][3], parts["synth"][3]
    full_mem = real["full"]["memory"]
    seeds = {p: sorted({r["seed"] for r in parts[p][0]}) for p in parts}
    lines = [
        f"`python benchmarks/mini_vtab.py`; {len(parts['real'][2])} real tasks ({', '.join(parts['real'][2])}), seeds "
        f"{seeds['real']}, and {len(parts['synth'][2])} generated ones, seeds {seeds['synth']}; test accuracy (%) of "
        "the best-on-val200 epoch, "
        "mean over tasks ± spread over seeds; GIST columns give the change when GIST is added (paired by seed). "
        "Memory: params + grads + optimizer state + saved activations, batch 32, float32, CPU. Full tables: "
        "`benchmarks/results/mini_vtab/*/summary.md`.",
        "",
        "| method | real tasks | + GIST | generated tasks | + GIST | trainable (no head) | train memory MiB | x full |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = [x for x in parts["real"][1] if "+gist" not in x]
    for label in base:
        gist = f"{label}+gist"
        deltas = []
        for p in ("real", "synth"):
            recs, labels, tasks, _ = parts[p]
            c = compare(recs, label, gist, tasks) if gist in labels else None
            deltas.append(f"{c['mean'][0]:+.1f} ±{c['mean'][1]:.1f}" if c and c["mean"] else "-")
        r = real[label]
        lines.append(
            f"| `{label}` | {_pm(real[label]['mean'])} | {deltas[0]} | {_pm(synth[label]['mean'])} | "
            f"{deltas[1]} | {r['params']:,.0f} | {r['memory'] / 2**20:.1f} | {r['memory'] / full_mem:.3f} |"
        )
    return "\n".join(lines)


def idat_table() -> str:
    from vpeft.bench.report import compare

    parts = {p: _mini(p) for p in ("idat-real", "idat-synth")}
    lines = [
        "Student `vit_c10_base`, teacher `vit_c10_small` (both trained jointly, the teacher with the same method), "
        "`benchmarks/experiments/mini_vtab_idat.yaml` (4 epochs), seeds "
        f"{sorted({r['seed'] for r in parts['idat-real'][0]})} on the real tasks and "
        f"{sorted({r['seed'] for r in parts['idat-synth'][0]})} on the generated ones; mean over tasks ± spread over "
        "seeds, and the change against the student alone (paired by seed). Full tables: "
        "`benchmarks/results/mini_vtab/idat-*/summary.md`.",
        "",
        "| student method | real: alone | + iDAT mse | + iDAT kl | generated: alone | + iDAT mse | + iDAT kl |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for alone, v in (("S (adapter)", "s"), ("P (adaptformer)", "p"), ("PS (adapter_ps)", "ps")):
        cells = [f"`{alone}`"]
        for p in ("idat-real", "idat-synth"):
            recs, labels, tasks, summ = parts[p]
            cells.append(_pm(summ[alone]["mean"]) if alone in summ else "-")
            for loss in ("mse", "kl"):
                name = f"idat-{v}-{loss}"
                c = compare(recs, alone, name, tasks) if name in labels and alone in labels else None
                cells.append(f"{c['mean'][0]:+.1f} ±{c['mean'][1]:.1f}" if c and c["mean"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table() -> str:
    """The papers' claims, checked on the committed mini-VTAB results."""
    from vpeft.bench.report import compare

    lines = ["| claim | real tasks | generated tasks |", "|---|---|---|"]
    parts = {p: _mini(p) for p in ("real", "synth")}

    def cell(p, fn):
        return fn(*parts[p])

    def beats_linear(recs, labels, tasks, summ):
        lin = summ["linear"]["mean"][0]
        trains = [x for x in labels if "+gist" not in x and x != "linear"]
        losers = [x for x in trains if summ[x]["mean"][0] <= lin]
        below = ", ".join(f"`{x}` {summ[x]['mean'][0]:.2f}" for x in losers)  # 2 decimals: near-ties show
        return f"{len(trains) - len(losers)} of {len(trains)} beat linear ({lin:.2f})" + (
            f"; not: {below}" if losers else ""
        )

    def gist(recs, labels, tasks, summ):
        ds = {
            x: compare(recs, x, f"{x}+gist", tasks)["mean"][0]
            for x in labels
            if "+gist" not in x and f"{x}+gist" in labels
        }
        up = sorted(x for x, d in ds.items() if d > 0)
        return (
            f"mean change {sum(ds.values()) / len(ds):+.2f} points over {len(ds)} methods; better for "
            f"{len(up)} ({', '.join(up) or 'none'})"
        )

    def dtl_mem(recs, labels, tasks, summ):
        m = {x: summ[x]["memory"] for x in ("dtl", "dtl_plus", "lora", "adapter", "full") if x in summ}
        return (
            f"DTL {m['dtl'] / m['full']:.2f}x full, {m['dtl'] / m['lora']:.2f}x LoRA, "
            f"{m['dtl'] / m['adapter']:.2f}x adapter; DTL+ {m['dtl_plus'] / m['full']:.2f}x full"
        )

    tuned = _mini("real-tuned", tuned=True)[:4]
    lines.append(
        f"| every method that trains the backbone beats linear probing | {cell('real', beats_linear)} | "
        f"{cell('synth', beats_linear)} |"
    )
    lines.append(f"| the same, each method's lr chosen on val200 | {beats_linear(*tuned)} | not run |")
    lines.append(f"| GIST improves its base method | {cell('real', gist)} | {cell('synth', gist)} |")
    lines.append(f"| the same, lr chosen on val200 for both | {gist(*tuned)} | not run |")
    idat = {p: _mini(p) for p in ("idat-real", "idat-synth")}

    def idat_cell(p):
        recs, labels, tasks, _ = idat[p]
        ds = {}
        for alone, v in (("S (adapter)", "s"), ("P (adaptformer)", "p"), ("PS (adapter_ps)", "ps")):
            for loss in ("mse", "kl"):
                name = f"idat-{v}-{loss}"
                if name in labels and alone in labels:
                    c = compare(recs, alone, name, tasks)
                    if c["mean"]:
                        ds[name] = c["mean"][0]
        up = sorted(x for x, d in ds.items() if d > 0)
        return (
            (
                f"mean change {sum(ds.values()) / len(ds):+.2f} points over {len(ds)} presets; student better in "
                f"{len(up)} ({', '.join(up) or 'none'})"
            )
            if ds
            else "-"
        )

    lines.append(f"| iDAT's student beats the student alone | {idat_cell('idat-real')} | {idat_cell('idat-synth')} |")
    lines.append(f"| DTL trains with less memory (batch 32) | {cell('real', dtl_mem)} | same backbone and batch |")
    return "\n".join(lines)


def lr_check_table() -> str:
    """The methods below linear probing, at the linear probe's learning rate or higher (and the probe at theirs)."""
    _, _, _, real = _mini("real")
    _, labels, _, check = _mini("lr-check")
    lines = [
        "| method | mini-VTAB setting | mean, real tasks | other lr | mean, real tasks | change |",
        "|---|---|---:|---|---:|---:|",
    ]
    settings = {"linear": "lr 1e-2", "gps": "Adam lr 2e-3"}
    for label in labels:
        name, lr = label.split("@")
        a, b = real[name]["mean"], check[label]["mean"]
        lines.append(
            f"| `{name}` | {settings.get(name, 'lr 5e-3')} | {_pm(a)} | lr {float(lr):g} | {_pm(b)} | "
            f"{b[0] - a[0]:+.1f} |"
        )
    return "\n".join(lines)


def _lr_split(chosen: dict, points: list[str]) -> str:
    """'low / as configured / high' counts from tune()'s {grid point: times}, ``points`` the label's two grid
    points ('lr=X', any order; a point never chosen counts 0)."""
    low, high = sorted(points, key=lambda g: float(g.split("=")[1]))
    return f"{chosen.get(low, 0)} / {chosen.get('as configured', 0)} / {chosen.get(high, 0)}"


def tuned_table() -> str:
    """Fixed lr (the mini-VTAB table) against the lr chosen on val200 among x0.5, x1, x2."""
    from vpeft.bench.report import compare

    _, _, _, fixed = _mini("real")
    recs, labels, tasks, tuned, chosen = _mini("real-tuned", tuned=True)
    points = defaultdict(set)
    for r in _mini("real-tuned")[0]:
        if r.get("grid"):
            points[r["base_label"]].add(r["grid"])
    seeds = sorted({r["seed"] for r in recs})
    lines = [
        "`python benchmarks/mini_vtab.py --parts real-tuned` (`benchmarks/experiments/mini_vtab_tuned.yaml`): each "
        "method also at half and twice its learning rate; per task and seed the lr whose best epoch has the best "
        f"val200 accuracy is kept (`vpeft report ... --tune val`). Real tasks, seeds {seeds}, mean over tasks ± "
        "spread over seeds. Full table: `benchmarks/results/mini_vtab/real-tuned/summary.md`.",
        "",
        f"| method | fixed lr | lr tuned on val | change | + GIST, both tuned | lr chosen x0.5 / x1 / x2 "
        f"(of {len(tasks) * len(seeds)}) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label in [x for x in labels if "+gist" not in x]:
        a, b = fixed[label]["mean"], tuned[label]["mean"]
        gist = f"{label}+gist"
        c = compare(recs, label, gist, tasks) if gist in labels else None
        d = f"{c['mean'][0]:+.1f} ±{c['mean'][1]:.1f}" if c and c["mean"] else "-"
        lines.append(
            f"| `{label}` | {_pm(a)} | {_pm(b)} | {round(b[0] - a[0], 1) + 0.0:+.1f} | {d} | "
            f"{_lr_split(chosen[label], sorted(points[label]))} |"
        )
    return "\n".join(lines)


def pacs_table() -> str:
    sys.path.insert(0, str(ROOT))
    from vpeft.bench.report import _order, collect, summarise

    path = RESULTS / "pacs_dg" / "results.jsonl"
    meta = json.loads((RESULTS / "pacs_dg" / "meta.json").read_text())
    records = collect(path)
    labels, tasks, _ = _order([path], records)
    summary = summarise(records, labels, tasks)
    seeds = sorted({r["seed"] for r in records})
    vals = defaultdict(list)
    for r in records:
        vals[r["label"]].append(r["val_acc"])
    lines = [
        f"`{meta['command']}` ({meta['runs']} runs, {meta['seconds'] / 60:.0f} min on {meta['device']}); "
        f"`vit_c10_base` at 32 px, seeds {seeds}; test accuracy (%) on each held-out domain (the whole domain), the "
        "epoch chosen on the three training domains' validation lists; mean ± spread over seeds. Chance: 14.3%. "
        "Full report: `benchmarks/results/pacs_dg/summary.md`.",
        "",
        "| method | " + " | ".join(t.replace("_", " ") for t in tasks) + " | mean | source val | trainable (no head) |",
        "|---|" + "---:|" * (len(tasks) + 3),
    ]
    for label in labels:
        row = summary[label]
        cells = [_pm(row["tasks"].get(t)) for t in tasks]
        val = sum(vals[label]) / len(vals[label])
        lines.append(
            f"| `{label}` | " + " | ".join(cells) + f" | **{_pm(row['mean'])}** | {val:.1f} | {row['params']:,.0f} |"
        )
    return "\n".join(lines)


def sam_memory_table() -> str:
    data = json.loads((RESULTS / "memory_sam_b.json").read_text())
    rows = data["rows"]
    full = next(r for r in rows if r["label"] == "full")
    # The same seven steps run on the CPU (benchmarks/memory_sam_b.py --device cpu --timing): their step times.
    cpu = {r["label"]: r for r in json.loads((RESULTS / "step_sam_b_cpu.json").read_text())["rows"]}
    mib = lambda b: f"{b / 2**20:,.1f}"  # noqa: E731
    lines = [
        "| method | trainable (decoder included) | activations MiB | train memory MiB | x full | CPU step s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if cpu[r["label"]]["train_memory_bytes"] != r["train_memory_bytes"]:
            raise SystemExit(f"step_sam_b_cpu.json's {r['label']} counts other bytes than memory_sam_b.json's")
        lines.append(
            f"| {r['label']} | {r['trainable']:,} | {mib(r['saved_activation_bytes'])} "
            f"| {mib(r['train_memory_bytes'])} | {r['train_memory_bytes'] / full['train_memory_bytes']:.3f} "
            f"| {cpu[r['label']]['step_seconds']:.1f} |"
        )
    return "\n".join(lines)


def kvasir_table() -> str:
    sys.path.insert(0, str(ROOT))
    from vpeft.bench.report import _order, collect

    path = RESULTS / "kvasir_seg" / "results.jsonl"
    meta = json.loads((RESULTS / "kvasir_seg" / "meta.json").read_text())
    records = collect(path)
    labels, _, _ = _order([path], records)
    seeds = sorted({r["seed"] for r in records})
    by = defaultdict(list)
    for r in records:
        by[r["label"]].append(r)

    def ms(label, key):
        vals = [r[f"test_{key}"] for r in by[label]]
        m = sum(vals) / len(vals)
        sd = (sum((v - m) ** 2 for v in vals) / len(vals)) ** 0.5
        return f"{m:.1f} ±{sd:.1f}"

    lines = [
        f"`{meta['command']}` ({meta['runs']} runs, {meta['seconds'] / 60:.0f} min on {meta['device']}); "
        f"backbone `{meta.get('backbone', 'sam:tiny_synth')}` at its 64 px input, seeds {seeds}; the test split's 120 "
        "images, the epoch chosen on val; mean ± spread over seeds. Full report and mask figure: "
        "`benchmarks/results/kvasir_seg/`.",
        "",
        "| method | Dice | IoU | pooled Dice | pooled IoU | trainable |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        r0 = by[label][0]
        lines.append(
            f"| `{label}` | {ms(label, 'dice')} | {ms(label, 'iou')} | {ms(label, 'dice_pooled')} | "
            f"{ms(label, 'iou_pooled')} | {r0['trainable_params']:,} |"
        )
    return "\n".join(lines)


def glue_table() -> str:
    """benchmarks/glue_minilm.py's two tables (ATTEMPT's re-split and GLUE's split), with the command and its time."""
    meta = json.loads((RESULTS / "glue_minilm" / "meta.json").read_text())
    lines = (RESULTS / "glue_minilm" / "summary.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## "))
    body = [f"**{line[3:]}**" if line.startswith("## ") else line for line in lines[start:]]
    head = (
        f"`{meta['command']}` ({meta['seconds'] / 60:.0f} min on {meta['device']}); the report and each split's "
        "vpeft report: `benchmarks/results/glue_minilm/`."
    )
    return "\n".join([head, "", *body]).strip()


def pretrain_table() -> str:
    return (RESULTS / "pretrain_c10.md").read_text().strip()


TABLES = {
    "memory": memory_table,
    "merge": merge_table,
    "gist": gist_table,
    "pretrain": pretrain_table,
    "mini_vtab": mini_vtab_table,
    "idat": idat_table,
    "claims": claims_table,
    "lr_check": lr_check_table,
    "tuned": tuned_table,
    "pacs": pacs_table,
    "sam_memory": sam_memory_table,
    "kvasir": kvasir_table,
    "glue": glue_table,
}


def render(text: str) -> str:
    for name, fn in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:.*?\n)??(<!-- /table -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- table:{name} --> block")
        text = pattern.sub(lambda m: m.group(1) + fn() + "\n" + m.group(2), text)
    return text


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("README.md tables are out of date: run python benchmarks/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
