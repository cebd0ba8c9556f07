"""``vpeft data check``: read every list and image of a task folder (or of every task folder below a root) and
report counts, classes and every problem, naming the list file and line. The layout is given (``suite``) or, with
``auto``, detected per folder, as training detects it (:func:`vpeft.data.entries.detect_format`): VTAB-1K lists,
FGVC JSON, few-shot lists, CSV files and class folders (split folders, or a plain folder split as training splits
it with the default shares and seed), and ``lists`` files wherever its options put them. Images with the same bytes
in the training split and another split are counted per split (leakage: a warning).

A segmentation folder (``segfolder``: images and masks paired by stem) is checked for what segmentation needs
(:func:`check_seg_task`): images without a mask and masks without an image, masks that are not binary, masks whose
size is not their image's, and images listed in no split, besides the counts and the duplicates."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..files import read_text
from ..registry import FORMATS
from ..targets import check_target, parse_targets
from .entries import data_folder, detect, detect_format, label_ranges, layout, listed_classes, read_entries
from .formats.folder import ignored_entries
from .formats.segfolder import list_files, parse_line, scan
from .suites import canonical_classes
from .vtab import mask_values


@dataclass
class TaskReport:
    root: Path
    suite: str = "vtab1k"
    counts: dict[str, int] = field(default_factory=dict)
    classes: int = 0
    num_classes: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    conversions: Counter = field(default_factory=Counter)
    train_test_duplicates: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)
    split_classes: dict[str, int] = field(default_factory=dict)
    #: The digests of the training images (every split but ``test``), for the targets' duplicates.
    train_digests: dict[str, str] = field(default_factory=dict)
    #: ``data.extra_tests``' targets: name -> images, classes present, duplicates of a training image.
    targets: dict[str, dict] = field(default_factory=dict)
    #: Segmentation (:func:`check_seg_task`): images without a mask plus masks without an image; masks holding values
    #: other than 0 and 255 (or 0 and 1); masks whose size is not their image's; images that no list names.
    unpaired: int = 0
    nonbinary: int = 0
    size_mismatch: int = 0
    unlisted: int = 0


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


def task_folders(root: str | Path, suite: str = "vtab1k", options: dict | None = None) -> list[tuple[Path, str]]:
    """``(folder, layout)`` of each task: ``root`` itself when it looks like a task folder of layout ``suite`` (holds
    one of its markers, or the layout reads ``options``, which say where its files are), else its sub-folders that
    do. With ``suite="auto"``, ``root`` when some layout fits it, else its sub-folders that some layout fits, each
    with its own; ``vtab1k`` (the command's default) falls back to that where neither ``root`` nor a sub-folder holds
    a VTAB-1K list."""
    root = data_folder(root)
    if suite == "vtab1k" and not layout(suite).is_task(root):  # the command's default: another layout's folder
        found = detect(root)
        if len(found) == 1:
            return [(root, found[0])]
    if suite != "auto":
        fmt = layout(suite)
        if fmt.looks_like(root) or any((options or {}).get(k) for k in fmt.options):
            return [(root, suite)]
        tasks = sorted(p for p in root.iterdir() if p.is_dir() and fmt.looks_like(p))
        if tasks:
            return [(t, suite) for t in tasks]
        if suite != "vtab1k":
            raise DataError(f"{root} holds no {suite} task folder (none has {' or '.join(fmt.markers)})")
    if _fits(root):
        return [(root, detect_format(root))]
    tasks = [
        (p, detect_format(p)) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and _fits(p)
    ]
    if not tasks:
        raise DataError(
            f"{root} holds no task folder of a known layout ({', '.join(FORMATS.names())}), nor do its sub-folders"
        )
    return tasks


def _fits(root: Path) -> bool:
    """Some layout reads ``root``: it holds a layout's markers, or is a plain folder of class folders."""
    return bool(detect(root)) or any(layout(n).looks_like(root) for n in FORMATS.names())


def check_task(
    root: Path, suite: str = "vtab1k", shot: int = 16, seed: int = 0, options: dict | None = None
) -> TaskReport:
    """Read every split and image of the task folder ``root`` in layout ``suite`` (``auto``: detected), with the
    layout's data ``options`` (``lists``: where its list files and images are)."""
    suite = detect_format(root) if suite == "auto" else suite
    if "mask" in layout(suite).label_kinds:
        return check_seg_task(root, suite)
    rep, fmt = TaskReport(root=root, suite=suite), layout(suite)
    own = {k: v for k, v in (options or {}).items() if k in fmt.options}
    entries, image_roots = {}, {}
    for split in fmt.split_names(**own):
        try:
            entries[split], image_roots[split] = read_entries(root, split, suite, shot, seed, options=own)
        except DataError as e:
            if split in fmt.required or "missing" not in str(e):
                rep.errors.append(str(e))
            continue
        rep.counts[split] = len(entries[split])
        rep.split_classes[split] = len({e.label for e in entries[split]})
    labels = {e.label for es in entries.values() for e in es}
    rep.classes = len(labels)
    listed = listed_classes(root)
    try:
        names = fmt.class_names(root) or []
    except DataError as e:
        names = []
        rep.errors.append(str(e))
    # As training counts them: classes.txt's lines if it has any, else the class names, else 1 + the largest label.
    rep.num_classes = listed or len(names) or (max(labels) + 1 if labels else 0)
    canonical = canonical_classes(root.name)
    if canonical is not None and canonical != rep.num_classes:
        rep.warnings.append(f"{rep.num_classes} classes where VTAB-1K's {root.name} has {canonical}")
    train = next((s for s in fmt.splits[:2] if s in entries), None)
    if not (listed or names or canonical == rep.num_classes) and train:
        seen = {e.label for e in entries[train]}
        unseen = [y for y in range(rep.num_classes) if y not in seen]
        if unseen:  # as training judges them (data.strict_labels)
            rep.errors.append(
                f"{entries[train][0].source}: label(s) {label_ranges(unseen)} of "
                f"0..{rep.num_classes - 1} have no training example (add classes.txt or fix the "
                "labels; training fails unless data.strict_labels=false)"
            )
    if suite == "folder":
        rep.warnings += [f"left out {e}" for e in ignored_entries(root)]
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
                rep.errors.append(
                    f"{lpath}:{e.line}: label {e.label} is outside the class range 0..{rep.num_classes - 1}"
                )
            if digest:
                digests.setdefault(split, {})[digest] = e.path
    rep.train_digests = {k: v for s, d in digests.items() if s != "test" for k, v in d.items()}
    train = set(rep.train_digests)
    shared = train & set(digests.get("test", {}))
    rep.train_test_duplicates = len(shared)
    if shared:  # leakage: the data still trains, so a warning (with examples), not an error
        examples = ", ".join(digests["test"][d] for d in sorted(shared)[:3])
        rep.warnings.append(f"{len(shared)} test image(s) have the same bytes as a training image (e.g. {examples})")
    # Each split against the training split (that of train.select=val; the union split, if any, holds the others).
    train = fmt.splits[1]
    for split in (s for s in digests if s not in (train, fmt.splits[0]) and train in digests):
        common = set(digests[split]) & set(digests[train])
        rep.duplicates[split] = len(common)
        if common and split != "test":
            examples = ", ".join(digests[split][d] for d in sorted(common)[:3])
            rep.warnings.append(
                f"{len(common)} image(s) of split {split!r} have the same bytes as one of {train!r} (e.g. {examples})"
            )
    return rep


def check(
    root: str | Path, suite: str = "vtab1k", shot: int = 16, seed: int = 0, out=print, options: dict | None = None
) -> bool:
    """Check every task (``suite``: its layout, or ``auto``; ``options``: the layout's data options, as a run's data
    section names them); print a table per layout and the problems; True when there is no error."""
    reports = [check_task(t, fmt, shot, seed, options) for t, fmt in task_folders(root, suite, options)]
    for r in reports:  # a run's target domains (data.extra_tests), against each task's training images
        check_targets(r, (options or {}).get("extra_tests"), shot, seed, options)
    for fmt in dict.fromkeys(r.suite for r in reports):
        ours = [r for r in reports if r.suite == fmt]
        splits = list(dict.fromkeys([*layout(fmt).check_splits, *(s for r in ours for s in r.counts)]))
        if "mask" in layout(fmt).label_kinds:
            _seg_table(ours, splits, out, fmt if fmt != suite else None)
            continue
        head = (
            f"{'task':<24} "
            + " ".join(f"{s:>14}" for s in splits)
            + f" {'classes':>7} {'errors':>6} {'dup':>4}  converted to RGB"
        )
        if fmt != suite:
            out(f"layout: {fmt}")
        out(head)
        out("-" * len(head))
        for r in ours:
            conv = ", ".join(f"{n} {m}" for m, n in sorted(r.conversions.items())) or "-"
            out(
                f"{r.root.name:<24} "
                + " ".join(f"{r.counts.get(s, 0):>14}" for s in splits)
                + f" {r.num_classes:>7} {len(r.errors):>6} {r.train_test_duplicates:>4}  {conv}"
            )
            if any(n != r.num_classes for n in r.split_classes.values()):  # a target covering some classes
                out("  classes present: " + ", ".join(f"{s} {n}" for s, n in r.split_classes.items()))
            for name, t in r.targets.items():
                out(
                    f"  target {name}: {t['images']} images, {t['classes_present']} of {r.num_classes} classes "
                    f"present, {t['duplicates']} the same bytes as a training image ({t['format']}, {t['root']})"
                )
    ok = True
    for r in reports:
        for w in r.warnings:
            out(f"warning: {r.root.name}: {w}")
        for e in r.errors:
            out(f"error: {e}")
            ok = False
    out(f"{len(reports)} task(s): " + ("no errors" if ok else f"{sum(len(r.errors) for r in reports)} error(s)"))
    return ok


def check_targets(rep: TaskReport, extra_tests: dict | None, shot: int, seed: int, options: dict | None) -> None:
    """Read each target domain of ``extra_tests`` (as ``data.extra_tests`` gives them) as a run of the task would:
    its images, the classes its list covers and the images that have the same bytes as one of the task's training
    images (leakage between source and target: a warning); a missing folder or list, an unreadable image or a label
    outside the task's classes is an error naming the file and line."""
    if not extra_tests:
        return
    if "mask" in layout(rep.suite).label_kinds:
        rep.errors.append("data.extra_tests scores class accuracy; a segmentation task has none to score")
        return
    layout_keys = set(FORMATS.get(rep.suite).options)
    own = {k: v for k, v in (options or {}).items() if k in layout_keys}
    try:
        dc = DataConfig.from_dict(
            {"root": str(rep.root), "format": rep.suite, "shot": shot, "fewshot_seed": seed, **own}
        )
        targets = parse_targets(extra_tests)
    except (ConfigError, DataError) as e:
        rep.errors.append(str(e))
        return
    for target in targets:
        try:
            tdc, entries, image_root = check_target(dc, target, rep.num_classes)
        except DataError as e:
            rep.errors.append(str(e))
            continue
        paths = [image_root / e.path for e in entries]
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            info = list(pool.map(_inspect, paths))
        shared = []
        for e, path, (digest, _, err) in zip(entries, paths, info):
            if err:
                rep.errors.append(f"{e.source}:{e.line}: {path}: {err}")
            elif digest in rep.train_digests:
                shared.append(e.path)
        if shared:
            rep.warnings.append(
                f"target {target.name!r}: {len(shared)} image(s) have the same bytes as a training image of the "
                f"source (e.g. {', '.join(shared[:3])})"
            )
        rep.targets[target.name] = {
            "images": len(entries),
            "classes_present": len({e.label for e in entries}),
            "duplicates": len(shared),
            "format": tdc.format,
            "root": target.root,
        }


def _seg_table(reports: list[TaskReport], splits: list[str], out, name: str | None) -> None:
    head = (
        f"{'task':<24} "
        + " ".join(f"{s:>8}" for s in splits)
        + f" {'errors':>6} {'dup':>4} {'unpaired':>8} {'non-binary':>10} {'size-mismatch':>13} {'unlisted':>8}"
    )
    if name:
        out(f"layout: {name}")
    out(head)
    out("-" * len(head))
    for r in reports:
        out(
            f"{r.root.name:<24} "
            + " ".join(f"{r.counts.get(s, 0):>8}" for s in splits)
            + f" {len(r.errors):>6} {r.train_test_duplicates:>4} {r.unpaired:>8} {r.nonbinary:>10} "
            f"{r.size_mismatch:>13} {r.unlisted:>8}"
        )


def _inspect_pair(image: Path, mask: Path):
    """``(image digest, image mode, image size, error)`` and ``(mask size, its distinct grey values, error)``."""
    digest, mode, err = _inspect(image)
    size = None
    if err is None:
        with Image.open(image) as img:
            size = img.size
    try:
        with Image.open(mask) as m:
            m.load()
            msize, values = m.size, np.unique(mask_values(m))
        merr = None
    except FileNotFoundError:
        msize, values, merr = None, None, "does not exist"
    except Exception as e:
        msize, values, merr = None, None, f"cannot decode: {type(e).__name__}: {e}"
    return (digest, mode, size, err), (msize, values, merr)


def _examples(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (" ..." if len(items) > n else "")


def check_seg_task(root: Path, suite: str = "segfolder") -> TaskReport:
    """Read every split, image and mask of a segmentation folder: counts per split; images without a mask and masks
    without an image (errors where a split needs them, else warnings); masks that are not binary (grey values other
    than 0 and 255, or 0 and 1: warned, as reading thresholds them at 128); masks whose size differs from their
    image's (errors: reading fails); images no list names (a warning); images with the same bytes in the training
    split and another split (a warning: the Kvasir-Sessile test images inside Kvasir-SEG's training images)."""
    rep, fmt = TaskReport(root=root, suite=suite), layout(suite)
    rep.num_classes = 1
    try:
        sc = scan(root)
    except DataError as e:
        rep.errors.append(str(e))
        return rep
    rep.errors += [f"{root}: several files share a stem: {a}; keep one" for a in sc.ambiguous]
    lists = list_files(root)
    entries: dict[str, list[tuple[str, str, str]]] = {}  # split -> (image, mask, file:line)
    for split in fmt.split_names():
        if lists:
            if split not in lists:
                if split in fmt.required:
                    rep.errors.append(f"missing list file {root / f'{split}.txt'} of split {split!r}")
                continue
            rows = []
            for i, raw in enumerate(read_text(lists[split]).splitlines(), 1):
                if raw.strip():
                    where = f"{lists[split]}:{i}"
                    try:
                        rows.append((*parse_line(sc, raw.strip(), where), where))
                    except DataError as e:
                        rep.errors.append(str(e))
        else:
            try:
                got, _ = read_entries(root, split, suite, labels="mask")
            except DataError as e:
                if str(e) not in rep.errors:
                    rep.errors.append(str(e))
                continue
            rows = [(e.path, e.label, f"{e.source}:{e.line}") for e in got]
        entries[split] = rows
        rep.counts[split] = len(rows)
    without_mask, without_image = sc.images_without_mask, sc.masks_without_image
    rep.unpaired = len(without_mask) + len(without_image)
    if without_mask:
        message = f"{len(without_mask)} image(s) in images/ have no mask in masks/ (stems: {_examples(without_mask)})"
        (rep.warnings if lists else rep.errors).append(message)
    if without_image:
        rep.warnings.append(
            f"{len(without_image)} mask(s) in masks/ have no image in images/ (stems: {_examples(without_image)})"
        )
    if lists:
        listed = {(root / image).resolve() for rows in entries.values() for image, _, _ in rows}
        unlisted = sorted(s for s, p in sc.images.items() if p.resolve() not in listed)
        rep.unlisted = len(unlisted)
        if unlisted:
            rep.warnings.append(f"{len(unlisted)} image(s) of images/ are in no list (stems: {_examples(unlisted)})")
    pairs = sorted({(image, mask) for rows in entries.values() for image, mask, _ in rows})
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        info = dict(zip(pairs, pool.map(lambda p: _inspect_pair(root / p[0], root / p[1]), pairs)))
    digests: dict[str, dict[str, str]] = {}
    nonbinary: dict[str, int] = {}
    mismatched: list[str] = []
    for split, rows in entries.items():
        for image, mask, where in rows:
            (digest, mode, size, err), (msize, values, merr) = info[(image, mask)]
            if err:
                rep.errors.append(f"{where}: {root / image}: {err}")
            elif mode != "RGB":
                rep.conversions[mode] += 1
            if merr:
                rep.errors.append(f"{where}: mask {root / mask}: {merr}")
            elif values is not None and not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
                nonbinary[mask] = len(values)
            if size is not None and msize is not None and size != msize and mask not in mismatched:
                mismatched.append(mask)
                rep.errors.append(
                    f"{where}: mask {mask} is {msize[0]}x{msize[1]} but its image {image} is {size[0]}x{size[1]}"
                )
            if digest:
                digests.setdefault(split, {})[digest] = image
    rep.nonbinary, rep.size_mismatch = len(nonbinary), len(mismatched)
    if nonbinary:
        shown = _examples([f"{m} ({n} grey values)" for m, n in sorted(nonbinary.items())])
        rep.warnings.append(
            f"{len(nonbinary)} mask(s) are not binary (grey values other than 0 and 255, or 0 and 1), read as "
            f"grey >= 128: {shown}"
        )
    train = fmt.splits[1]
    rep.train_digests = {k: v for s, d in digests.items() if s != "test" for k, v in d.items()}
    for split in (s for s in digests if s != train and train in digests):
        common = set(digests[split]) & set(digests[train])
        rep.duplicates[split] = len(common)
        if split == "test":
            rep.train_test_duplicates = len(common)
        if common:
            examples = _examples([digests[split][d] for d in sorted(common)])
            rep.warnings.append(
                f"{len(common)} image(s) of split {split!r} have the same bytes as one of {train!r} "
                f"(e.g. {examples}): train without them, or the {split} score is not on unseen images"
            )
    return rep
