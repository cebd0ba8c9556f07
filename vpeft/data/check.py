"""``vpeft data check``: read every list and image of a task folder (or of every task folder below a root) and
report counts, classes and every problem, naming the list file and line."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import DataError
from ..files import read_text
from .entries import layout, read_entries
from .suites import canonical_classes


@dataclass
class TaskReport:
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    classes: int = 0
    num_classes: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    conversions: Counter = field(default_factory=Counter)
    train_test_duplicates: int = 0


def _inspect(path: Path):
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, None, f"cannot read: {e.strerror}"
    try:
        from io import BytesIO

        with Image.open(BytesIO(data)) as img:
            img.load()
            mode = img.mode
    except Exception as e:
        return None, None, f"cannot decode: {type(e).__name__}: {e}"
    return hashlib.md5(data).hexdigest(), mode, None


def task_folders(root: str | Path, suite: str = "vtab1k") -> list[Path]:
    """``root`` itself when it looks like a task folder of layout ``suite`` (holds one of its markers), else its
    sub-folders that do."""
    root, fmt = Path(root), layout(suite)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if fmt.looks_like(root):
        return [root]
    tasks = sorted(p for p in root.iterdir() if p.is_dir() and fmt.looks_like(p))
    if not tasks:
        raise DataError(f"{root} holds no {suite} task folder (none has {' or '.join(fmt.markers)})")
    return tasks


def check_task(root: Path, suite: str = "vtab1k", shot: int = 16, seed: int = 0) -> TaskReport:
    rep, fmt = TaskReport(root=root), layout(suite)
    entries, image_roots = {}, {}
    for split in fmt.check_splits:
        try:
            entries[split], image_roots[split] = read_entries(root, split, suite, shot, seed)
        except DataError as e:
            if split in fmt.required or "missing" not in str(e):
                rep.errors.append(str(e))
            continue
        rep.counts[split] = len(entries[split])
    labels = {e.label for es in entries.values() for e in es}
    rep.classes = len(labels)
    classes_file = root / "classes.txt"
    listed = sum(1 for line in read_text(classes_file).splitlines() if line.strip()) if classes_file.is_file() else 0
    # As training counts them: classes.txt's lines if it has any, else 1 + the largest label.
    rep.num_classes = listed or (max(labels) + 1 if labels else 0)
    canonical = canonical_classes(root.name)
    if canonical is not None and canonical != rep.num_classes:
        rep.warnings.append(f"{rep.num_classes} classes where VTAB-1K's {root.name} has {canonical}")
    paths = sorted({(image_roots[s] / e.path) for s, es in entries.items() for e in es})
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        info = dict(zip(paths, pool.map(_inspect, paths)))
    digests: dict[str, dict[str, str]] = {}
    for split, es in entries.items():
        for e in es:
            lpath = e.source
            digest, mode, err = info[image_roots[split] / e.path]
            if err:
                rep.errors.append(f"{lpath}:{e.line}: {image_roots[split] / e.path}: {err}")
            elif mode != "RGB":
                rep.conversions[mode] += 1
            if not 0 <= e.label < rep.num_classes:
                rep.errors.append(f"{lpath}:{e.line}: label {e.label} is outside the class range 0..{rep.num_classes - 1}")
            if digest:
                digests.setdefault(split, {})[digest] = e.path
    train = set().union(*(set(d) for s, d in digests.items() if s != "test"))
    shared = train & set(digests.get("test", {}))
    rep.train_test_duplicates = len(shared)
    if shared:  # leakage: the data still trains, so a warning (with examples), not an error
        examples = ", ".join(digests["test"][d] for d in sorted(shared)[:3])
        rep.warnings.append(f"{len(shared)} test image(s) have the same bytes as a training image (e.g. {examples})")
    return rep


def check(root: str | Path, suite: str = "vtab1k", shot: int = 16, seed: int = 0, out=print) -> bool:
    """Check every task; print a table and the problems; True when there is no error."""
    reports = [check_task(t, suite, shot, seed) for t in task_folders(root, suite)]
    splits = layout(suite).check_splits
    head = f"{'task':<24} " + " ".join(f"{s:>14}" for s in splits) + \
        f" {'classes':>7} {'errors':>6} {'dup':>4}  converted to RGB"
    out(head)
    out("-" * len(head))
    for r in reports:
        conv = ", ".join(f"{n} {m}" for m, n in sorted(r.conversions.items())) or "-"
        out(f"{r.root.name:<24} " + " ".join(f"{r.counts.get(s, 0):>14}" for s in splits)
            + f" {r.num_classes:>7} {len(r.errors):>6} {r.train_test_duplicates:>4}  {conv}")
    ok = True
    for r in reports:
        for w in r.warnings:
            out(f"warning: {r.root.name}: {w}")
        for e in r.errors:
            out(f"error: {e}")
            ok = False
    out(f"{len(reports)} task(s): " + ("no errors" if ok else f"{sum(len(r.errors) for r in reports)} error(s)"))
    return ok
