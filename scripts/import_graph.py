"""The import graph of the ``vpeft`` package, read from the source (nothing is imported): for issue 16's layering.

Prints the number of modules and lines, the vpeft imports made at module level and inside functions, and every
import circle (a strongly connected component of more than one module), counting function-level imports too (they
close the same circles, only later).

    python scripts/import_graph.py [--json]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "vpeft"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(mod: str, is_pkg: bool, node: ast.ImportFrom, files=()) -> list[str]:
    """The vpeft modules an ``import`` / ``from ... import`` names: a name that is a submodule counts as one, and the
    package itself only when some name is not a submodule (``from . import methods`` reads no name of ``vpeft``)."""
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    subs = [f"{target}.{a.name}" for a in node.names]
    return subs + ([target] if not files or any(s not in files for s in subs) else [])


def graph() -> tuple[dict, dict, dict, dict]:
    """``(edges, counts, lines, deferred)``: every module's vpeft imports (both kinds), the number of import statements
    of each kind, each module's line count, and the vpeft modules each module imports only inside functions."""
    files = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
    edges: dict[str, set] = {m: set() for m in files}
    deferred: dict[str, set] = {m: set() for m in files}
    counts = {"module_level": 0, "function_level": 0}
    lines = {m: len(p.read_text().splitlines()) for m, p in files.items()}
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        is_pkg = path.name == "__init__.py"
        nested = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
            if n is not f
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = resolve(mod, is_pkg, node, files)
            else:
                continue
            found = {n for n in names if n in files and n != mod}
            if found:
                counts["function_level" if id(node) in nested else "module_level"] += 1
                edges[mod] |= found
                if id(node) in nested:
                    deferred[mod] |= found
    return edges, counts, lines, deferred


def circles(edges: dict) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v), on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    edges, counts, lines, _ = graph()
    found = circles(edges)
    report = {
        "modules": len(edges),
        "lines": sum(lines.values()),
        "vpeft_imports": counts,
        "circles": found,
        "largest_files": sorted(lines.items(), key=lambda kv: -kv[1])[:8],
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(
        f"{report['modules']} modules, {report['lines']:,} lines; vpeft imports: {counts['module_level']} at module "
        f"level, {counts['function_level']} inside functions"
    )
    for c in found:
        print(f"circle of {len(c)} modules: {', '.join(c)}")
    print("largest: " + ", ".join(f"{m} {n}" for m, n in report["largest_files"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
