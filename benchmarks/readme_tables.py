"""Rewrite the README's result tables from the committed files in benchmarks/results/.

    .venv/bin/python benchmarks/readme_tables.py          # rewrite README.md in place
    .venv/bin/python benchmarks/readme_tables.py --check  # exit 1 if README.md is out of date (a test runs this)
"""

from __future__ import annotations

import json
import re
import sys
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
        lines.append(f"| {r['method']} | {r['ops_merged']} / {r['ops_plain']} | {r['flops_merged'] / r['flops_plain']:.4f} "
                     f"| {r['merged_over_plain']:.3f} | {r['unmerged_over_plain']:.3f} | {r['max_abs_diff']:.1e} |")
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
        lines.append(f"| {r['method']} | {r['train_ratio']:.3f} | {r['eval_ratio']:.3f} | {r['eval_flops_ratio']:.4f} |")
    return "\n".join(lines)


TABLES = {"memory": memory_table, "merge": merge_table, "gist": gist_table}


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
