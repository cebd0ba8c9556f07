"""``coop``: CoOp's splits, one ``split_zhou_<Dataset>.json`` per dataset folder holding ``{"train": [...], "val":
[...], "test": [...]}``, each row ``[image path, label, class name]``, the paths relative to the dataset's image
folder (``oxford_flowers/jpg``, ``dtd/images``, ``ucf101/UCF-101-midframes``, ...; CoOp, MaPLe and every method
built on Dassl read them so).

Few-shot sampling is Dassl's (``DatasetBase.generate_fewshot_dataset``, as each CoOp dataset calls it): a
``random.Random`` seeded with ``data.fewshot_seed`` (Dassl's ``set_random_seed`` seeds the global ``random`` with the
run's seed, and nothing draws from it before the split is sampled) draws, for each label in the order of its first
row in the JSON's training list, ``random.sample(rows, shot)`` of that label's rows (all of them, in order, where
there are fewer); then, from the same stream, the validation list likewise with ``min(shot, 4)`` shots. The test list
is read whole. ``data.shot`` below 1 reads the whole training and validation lists (Dassl's ``num_shots < 1``).
Class names are the JSON's, as written (CoOp's trainers replace ``_`` with a space only when they build prompts).
"""

from __future__ import annotations

import bisect
import json
import random
import re
from functools import lru_cache
from pathlib import Path

from ...errors import DataError
from ...files import read_text
from ...registry import FORMATS
from ..entries import Entry, Layout

#: The split file's name pattern (CoOp: ``split_zhou_OxfordFlowers.json``, ``split_zhou_DescribableTextures.json``).
MARKER = "split_zhou_*.json"
#: The folders, beside the split file, that CoOp's datasets keep their images in (``""``: the dataset folder itself,
#: as Stanford Cars'), tried in this order.
IMAGE_FOLDERS = ("jpg", "images", "UCF-101-midframes", "2750", "SUN397", "101_ObjectCategories", "")
SPLITS = ("train", "val", "test")
#: Dassl's validation shots: ``min(shot, VAL_SHOTS)``.
VAL_SHOTS = 4
#: How many of a split's first rows the image folder is looked for by.
PROBE_ROWS = 16

_WS = re.compile(r"[ \t\n\r]*")


def split_file(root: str | Path) -> Path:
    """The one ``split_zhou_*.json`` of ``root``; none or several fail naming what is there."""
    root = Path(root)
    found = sorted(root.glob(MARKER))
    if not found:
        raise DataError(f"{root} holds no CoOp split file ({MARKER})")
    if len(found) > 1:
        raise DataError(
            f"{root} holds several CoOp split files ({', '.join(f.name for f in found)}): keep one per data folder"
        )
    return found[0]


def _row_lines(text: str) -> dict[str, list[int]]:
    """The line each row of each top-level list starts on, by key (``text``: valid JSON, an object)."""
    scan = json.JSONDecoder().scan_once
    newlines = [m.start() for m in re.finditer("\n", text)]
    out: dict[str, list[int]] = {}
    i = _WS.match(text, 1 + _WS.match(text, 0).end()).end()  # past "{"
    while text[i] != "}":
        key, i = scan(text, i)
        i = _WS.match(text, _WS.match(text, i).end() + 1).end()  # past ":"
        starts = []
        if text[i] == "[":
            i = _WS.match(text, i + 1).end()
            while text[i] != "]":
                starts.append(bisect.bisect_right(newlines, i) + 1)
                _, i = scan(text, i)
                i = _WS.match(text, i).end()
                if text[i] == ",":
                    i = _WS.match(text, i + 1).end()
            i += 1
        else:
            _, i = scan(text, i)
        out[key] = starts
        i = _WS.match(text, i).end()
        if text[i] == ",":
            i = _WS.match(text, i + 1).end()
    return out


@lru_cache(maxsize=8)
def _parse(path: str, mtime_ns: int, size: int) -> dict:
    """The split file's splits: name -> ``(line, path, label, class name)`` rows, each row checked, or the error
    message of a split's first bad row (raised when that split is read); keyed by the file's mtime and size."""
    f = Path(path)
    text = read_text(f)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{f}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, dict):
        raise DataError(f"{f}: expected an object with the lists train, val and test, got a {type(data).__name__}")
    lines = _row_lines(text)
    out: dict[str, list | str] = {}
    for split in SPLITS:
        if split not in data:
            continue
        rows = data[split]
        if not isinstance(rows, list):
            out[split] = f"{f}: split {split!r} must be a list of [image path, label, class name], got {rows!r:.80}"
            continue
        checked = []
        for k, (row, line) in enumerate(zip(rows, lines[split])):
            if not (
                isinstance(row, list)
                and len(row) == 3
                and isinstance(row[0], str)
                and row[0]
                and isinstance(row[1], int)
                and not isinstance(row[1], bool)
                and row[1] >= 0
                and isinstance(row[2], str)
            ):
                checked = (
                    f"{f}:{line}: split {split!r}, row {k}: expected [image path, label >= 0, class name], got "
                    f"{json.dumps(row)[:120]}"
                )
                break
            checked.append((line, row[0], row[1], row[2]))
        out[split] = checked
    return out


def read_split_file(f: Path) -> dict:
    """:func:`_parse` of ``f``, read again when the file changes."""
    st = f.stat()
    return _parse(str(f), st.st_mtime_ns, st.st_size)


def split_rows(f: Path, split: str) -> list[tuple[int, str, int, str]]:
    """The rows ``(line, path, label, class name)`` of ``split`` in the split file ``f``: a missing, empty or bad
    split fails naming the file (and the row)."""
    splits = read_split_file(f)
    if split not in splits:
        raise DataError(f"{f} is missing split {split!r} (it holds: {', '.join(splits) or 'none of train, val, test'})")
    rows = splits[split]
    if isinstance(rows, str):
        raise DataError(rows)
    if not rows:
        raise DataError(f"{f}: split {split!r} has no entries")
    return rows


def fewshot(rows: list, shot: int, rng: random.Random) -> list:
    """Dassl's ``generate_fewshot_dataset`` (``repeat=False``) of ``rows`` (label at index 2): per label, in the
    order of its first row, ``rng.sample`` of ``shot`` of its rows, or all of them where there are fewer."""
    by_label: dict[int, list] = {}
    for r in rows:
        by_label.setdefault(r[2], []).append(r)
    out = []
    for items in by_label.values():
        out.extend(rng.sample(items, shot) if len(items) >= shot else items)
    return out


def sampled(f: Path, split: str, shot: int, seed: int) -> list[tuple[int, str, int, str]]:
    """The rows of ``split`` as a run reads them: ``train`` the ``shot``-shot sample drawn with ``seed``, ``val``
    the ``min(shot, 4)``-shot sample drawn after it from the same stream, ``test`` whole (``shot`` < 1: all whole)."""
    if split == "test" or shot < 1:
        return split_rows(f, split)
    rng = random.Random(seed)
    train = fewshot(split_rows(f, "train"), shot, rng)
    if split == "train":
        return train
    return fewshot(split_rows(f, "val"), min(shot, VAL_SHOTS), rng)


def image_folder(root: Path, f: Path, split: str, rows: list) -> Path:
    """The folder the rows' paths are relative to: the first of :data:`IMAGE_FOLDERS` under ``root`` holding one of
    the first :data:`PROBE_ROWS` images; none fails naming the first image and every folder tried."""
    tried = [root / d if d else root for d in IMAGE_FOLDERS]
    for folder in tried:
        if any((folder / r[1]).is_file() for r in rows[:PROBE_ROWS]):
            return folder
    raise DataError(
        f"{f}:{rows[0][0]}: image {rows[0][1]} of split {split!r} is in none of the image folders tried: "
        f"{', '.join(str(t) for t in tried)}"
    )


@FORMATS.register("coop")
class Coop(Layout):
    """Splits ``train`` (the ``data.shot``-shot sample of seed ``data.fewshot_seed``, as Dassl draws it; ``data.shot``
    below 1: the whole list), ``val`` (``min(shot, 4)`` shots, drawn next), ``test`` (whole), from a
    ``split_zhou_*.json``; random-resized crop + flip for training, as CoOp."""

    augment = "crop_flip"
    markers = (MARKER,)

    def entries(self, root: Path, split: str, shot: int = 16, seed: int = 0) -> tuple[list[Entry], Path]:
        if split not in SPLITS:
            raise DataError(f"coop splits are {', '.join(SPLITS)}, not {split!r}")
        f = split_file(root)
        rows = sampled(f, split, shot, seed)
        return [Entry(path, label, line, f) for line, path, label, _ in rows], image_folder(root, f, split, rows)

    def class_names(self, root: Path) -> list[str]:
        """The class names by label over the three splits: a label named two ways, or labels that are not 0..C-1,
        fail naming the file and rows."""
        f = split_file(root)
        names: dict[int, tuple[str, int]] = {}
        for split in SPLITS:
            rows = read_split_file(f).get(split)
            if isinstance(rows, str):
                raise DataError(rows)
            for line, _, label, name in rows or []:
                first = names.setdefault(label, (name, line))
                if first[0] != name:
                    raise DataError(
                        f"{f}:{line}: label {label} is named {name!r}, but {first[0]!r} at line {first[1]}: one "
                        "name per label"
                    )
        missing = [y for y in range(len(names)) if y not in names]
        if missing:
            raise DataError(
                f"{f}: labels must be 0..{len(names) - 1} for its {len(names)} classes, but it has no label "
                f"{', '.join(map(str, missing[:10]))} (largest: {max(names)})"
            )
        return [names[y][0] for y in range(len(names))]

    def is_task(self, root: Path) -> bool:
        return any(p.is_file() for p in Path(root).glob(MARKER))

    def looks_like(self, root: Path) -> bool:
        return self.is_task(root)
