"""The bottom of the data package: where a split's ``(image path, label)`` entries come from, for every layout.

* ``vtab1k``: ``<split>.txt`` lists (NOAH's VTAB-1K layout); splits ``train800``, ``val200``, ``train800val200``,
  ``test``; optionally ``classes.txt``, ``<label> <name>`` per class.
* ``fgvc``: VPT's JSON splits, ``train.json`` / ``val.json`` / ``test.json`` mapping image paths to labels; images under
  ``images/`` (CUB, NABirds), ``Images/`` (Stanford Dogs) or the root (Flowers, Cars). ``train+val`` joins two splits.
* ``fewshot``: NOAH's lists, ``annotations/train_meta.list.num_shot_<k>.seed_<s>``, ``val_meta.list``,
  ``test_meta.list``.
* ``folder``: ``<split>/<class name>/<image>``, labels by sorted class name.
* ``csv``: ``<split>.csv`` with a header ``path,label``.

The list files of ``vtab1k`` and ``fewshot`` share one parser (:func:`read_pairs`: lines ``<path> <label>``, split on
the last run of white space, so a path may hold spaces). Every entry keeps the file and line (or JSON position) it
came from, for error messages.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..files import read_text

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(slots=True)
class Entry:
    """One image of a split: its path (relative to the split's image root), label, and the file and line naming it."""

    path: str
    label: int
    line: int
    source: Path


ListEntry = Entry  # the name of a list file's entry before the layouts shared one type


def read_pairs(f: Path) -> list[Entry]:
    """The ``<path> <label>`` lines of a list file; a bad line fails with the file and line number."""
    out = []
    for i, raw in enumerate(read_text(f).splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{f}:{i}: expected '<relative path> <label>', got {line!r}")
        try:
            out.append(Entry(parts[0], int(parts[1]), i, f))
        except ValueError:
            raise DataError(f"{f}:{i}: label {parts[1]!r} is not an integer") from None
    if not out:
        raise DataError(f"list file {f} has no entries")
    return out


def list_path(root: str | Path, split: str) -> Path:
    return Path(root) / f"{split}.txt"


def read_list(root: str | Path, split: str) -> list[Entry]:
    """Parse a VTAB-1K list, ``<root>/<split>.txt``; a missing one names the lists that are there."""
    path = list_path(root, split)
    if not Path(root).is_dir():
        raise DataError(f"data folder {root} does not exist")
    if not path.is_file():
        present = sorted(p.stem for p in Path(root).glob("*.txt"))
        raise DataError(f"missing list file {path} (list files there: {', '.join(present) or 'none'})")
    return read_pairs(path)


def _fgvc(root: Path, split: str) -> tuple[list[Entry], Path]:
    out = []
    for part in split.split("+"):
        f = root / f"{part}.json"
        if not f.is_file():
            raise DataError(f"missing split file {f}")
        try:
            data = json.loads(read_text(f))
        except json.JSONDecodeError as e:
            raise DataError(f"{f}: not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise DataError(f"{f}: expected a mapping of image path to label")
        for i, (p, y) in enumerate(data.items(), 1):
            if not isinstance(y, int) or isinstance(y, bool):
                raise DataError(f"{f}: entry {i} ({p}): label {y!r} is not an integer")
            out.append(Entry(p, y, i, f))
    if not out:
        raise DataError(f"{root}: split {split!r} has no entries")
    for images in (root / "images", root / "Images", root):
        if (images / out[0].path).is_file():
            return out, images
    return out, root


def _fewshot(root: Path, split: str, shot: int, seed: int) -> tuple[list[Entry], Path]:
    name = {"train": f"train_meta.list.num_shot_{shot}.seed_{seed}", "val": "val_meta.list",
            "test": "test_meta.list"}.get(split)
    if name is None:
        raise DataError(f"few-shot splits are train, val and test, not {split!r}")
    f = root / "annotations" / name
    if not f.is_file():
        raise DataError(f"missing list file {f}")
    return read_pairs(f), root


def folder_classes(root: str | Path) -> list[str]:
    """The ``folder`` layout's class names, label order: every class sub-folder of any split folder, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    return sorted({p.name for s in root.iterdir() if s.is_dir() for p in s.iterdir() if p.is_dir()})


def _folder(root: Path, split: str) -> tuple[list[Entry], Path]:
    d = root / split
    if not d.is_dir():
        raise DataError(f"missing split folder {d}")
    classes = folder_classes(root)
    out = []
    for label, c in enumerate(classes):
        for i, f in enumerate(sorted((d / c).glob("*")) if (d / c).is_dir() else [], 1):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                out.append(Entry(f"{split}/{c}/{f.name}", label, i, d / c))
    if not out:
        raise DataError(f"split folder {d} holds no images in class sub-folders")
    return out, root


def _csv(root: Path, split: str) -> tuple[list[Entry], Path]:
    f = root / f"{split}.csv"
    if not f.is_file():
        raise DataError(f"missing split file {f}")
    out = []
    with io.StringIO(read_text(f), newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"{f}: the header must name the columns path and label, got {reader.fieldnames}")
        for i, row in enumerate(reader, 2):
            try:
                out.append(Entry(row["path"], int(row["label"]), i, f))
            except (TypeError, ValueError):
                raise DataError(f"{f}:{i}: label {row.get('label')!r} is not an integer") from None
    if not out:
        raise DataError(f"{f} has no entries")
    return out, root


def read_entries(root: str | Path, split: str, fmt: str = "vtab1k", shot: int = 16, seed: int = 0):
    """``(entries, image root)`` of one split of a dataset in layout ``fmt``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if fmt == "vtab1k":
        return read_list(root, split), root
    if fmt == "fgvc":
        return _fgvc(root, split)
    if fmt == "fewshot":
        return _fewshot(root, split, shot, seed)
    if fmt == "folder":
        return _folder(root, split)
    if fmt == "csv":
        return _csv(root, split)
    raise DataError(f"unknown data format {fmt!r}")


def infer_num_classes(root: str | Path, splits: list[str], fmt: str = "vtab1k", shot: int = 16, seed: int = 0) -> int:
    """``classes.txt``'s line count if it exists, else 1 + the largest label in ``splits``."""
    classes = Path(root) / "classes.txt"
    if classes.is_file():
        n = sum(1 for line in read_text(classes).splitlines() if line.strip())
        if n > 0:
            return n
    return 1 + max(e.label for s in splits for e in read_entries(root, s, fmt, shot, seed)[0])
