"""Where a split's ``(image path, label)`` entries come from, for every layout vpeft reads.

* ``vtab1k``: ``<split>.txt`` lists (NOAH's VTAB-1K layout); splits ``train800``, ``val200``, ``train800val200``,
  ``test``.
* ``fgvc``: VPT's JSON splits, ``train.json`` / ``val.json`` / ``test.json`` mapping image paths to labels; images under
  ``images/`` (CUB, NABirds), ``Images/`` (Stanford Dogs) or the root (Flowers, Cars). ``train+val`` joins two splits.
* ``fewshot``: NOAH's lists, ``annotations/train_meta.list.num_shot_<k>.seed_<s>``, ``val_meta.list``,
  ``test_meta.list``, lines ``<path> <label>`` (split on the last space).
* ``folder``: ``<split>/<class name>/<image>``, labels by sorted class name.
* ``csv``: ``<split>.csv`` with a header ``path,label``.

Every entry keeps the file and line (or JSON position) it came from, for error messages.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import DataError
from ..files import read_text

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class Entry:
    __slots__ = ("path", "label", "line", "source")

    def __init__(self, path: str, label: int, line: int, source: Path):
        self.path, self.label, self.line, self.source = path, label, line, source


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
    return _lines(f), root


def _lines(f: Path) -> list[Entry]:
    out = []
    for i, raw in enumerate(read_text(f).splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(" ", 1)
        if len(parts) != 2:
            raise DataError(f"{f}:{i}: expected '<path> <label>', got {line!r}")
        try:
            out.append(Entry(parts[0], int(parts[1]), i, f))
        except ValueError:
            raise DataError(f"{f}:{i}: label {parts[1]!r} is not an integer") from None
    if not out:
        raise DataError(f"list file {f} has no entries")
    return out


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
        from .vtab import list_path, read_list

        lpath = list_path(root, split)
        return [Entry(e.path, e.label, e.line, lpath) for e in read_list(root, split)], root
    if fmt == "fgvc":
        return _fgvc(root, split)
    if fmt == "fewshot":
        return _fewshot(root, split, shot, seed)
    if fmt == "folder":
        return _folder(root, split)
    if fmt == "csv":
        return _csv(root, split)
    raise DataError(f"unknown data format {fmt!r}")


#: Default split names per layout: (train for `last`, train for `val`, val, test).
SPLITS = {
    "vtab1k": ("train800val200", "train800", "val200", "test"),
    "fgvc": ("train+val", "train", "val", "test"),
    "fewshot": ("train", "train", "val", "test"),
    "folder": ("train", "train", "val", "test"),
    "csv": ("train", "train", "val", "test"),
}


DEFAULT_AUGMENT = {"vtab1k": "none", "fgvc": "crop_flip", "fewshot": "crop_flip_randaug", "folder": "none",
                   "csv": "none"}
CROP_PCT = 0.875  # augmented layouts decode at size / 0.875 and test on the centre crop


def resolve_splits(dc, select: str) -> tuple[str, str | None, str]:
    """``(train, val or None, test)`` split names for a data config and a model-selection rule."""
    last, train_for_val, val, test = SPLITS[dc.format]
    train = dc.train_split or (train_for_val if select == "val" else last)
    return train, ((dc.val_split or val) if select == "val" else None), dc.test_split or test


def augment_kind(dc) -> str:
    return dc.augment or DEFAULT_AUGMENT[dc.format]


def load(dc, split: str, size: tuple[int, int], num_classes: int | None, training: bool, root=None):
    """One split as the trainer uses it: direct resize (``none``), or decoded larger and, unless training, centre
    cropped (the augmented layouts)."""
    from .vtab import center_crop, load_split

    root = root or dc.root
    kw = dict(skip_bad=dc.skip_bad, fmt=dc.format, shot=dc.shot, seed=dc.fewshot_seed)
    ds = load_split(root, split, decode_size(dc, size), num_classes, **kw)
    return ds if training or augment_kind(dc) == "none" else center_crop(ds, size)


def decode_size(dc, size: tuple[int, int]) -> tuple[int, int]:
    """The size images are decoded at: the model's input, or size / 0.875 for the augmented layouts (whose
    training takes random crops of it and whose evaluation takes its centre crop)."""
    if augment_kind(dc) == "none":
        return size
    return round(size[0] / CROP_PCT), round(size[1] / CROP_PCT)
