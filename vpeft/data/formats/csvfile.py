"""``csv``: ``<split>.csv`` with a header naming the columns ``path`` and ``label``. The label column holds integer
class labels, real-valued targets (regression), or class names: a column without an integer label is read as names,
numbered in sorted order over the ``train``, ``val`` and ``test`` files (a run records them as its class names)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ...errors import DataError
from ...files import read_text
from ...registry import FORMATS
from ..entries import Entry, Layout, parse_label

#: The split files whose labels make the class list when the labels are names.
NAMED_FROM = ("train", "val", "test")


def _rows(f: Path) -> list[tuple[int, str, str]]:
    """``(line, path, label text)`` of each row of ``f``."""
    with io.StringIO(read_text(f), newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"{f}: the header must name the columns path and label, got {reader.fieldnames}")
        return [(i, row["path"], (row["label"] or "").strip()) for i, row in enumerate(reader, 2)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_classes(root: str | Path) -> list[str] | None:
    """The class names, label order, where the label column holds names (sorted over the ``train``, ``val`` and
    ``test`` files); null where it holds numbers (class labels, checked as the entries are read). A column mixing
    names and numbers, or a named column with an empty label, fails naming them."""
    rows = [(f, *r) for s in NAMED_FROM if (f := Path(root) / f"{s}.csv").is_file() for r in _rows(f)]
    numbers = [r for r in rows if _is_number(r[3])]
    if len(numbers) == len(rows):
        return None
    for f, line, _, text in rows:
        if not text:
            raise DataError(f"{f}:{line}: the label is empty")
    if numbers:
        name, num = next(r for r in rows if not _is_number(r[3])), numbers[0]
        raise DataError(
            f"{name[0]}:{name[1]}: label {name[3]!r} is a class name, but {num[0]}:{num[1]} has the "
            f"number {num[3]!r}: give every label as a class name or every one as an integer"
        )
    return sorted({r[3] for r in rows})


@FORMATS.register("csv")
class Csv(Layout):
    """Splits ``train``, ``val``, ``test``, one file each; no augmentation."""

    markers = ("train.csv", "test.csv")
    label_kinds = ("int", "float")

    def entries(
        self, root: Path, split: str, shot: int = 16, seed: int = 0, labels: str = "int"
    ) -> tuple[list[Entry], Path]:
        f = root / f"{split}.csv"
        if not f.is_file():
            raise DataError(f"missing split file {f}")
        rows = _rows(f)
        names = csv_classes(root) if labels == "int" else None
        index = {n: i for i, n in enumerate(names or [])}
        out = []
        for i, path, text in rows:
            if names is None:
                out.append(Entry(path, parse_label(text, labels, f"{f}:{i}"), i, f))
            elif text in index:
                out.append(Entry(path, index[text], i, f))
            else:
                raise DataError(
                    f"{f}:{i}: label {text!r} is not a class of {', '.join(n + '.csv' for n in NAMED_FROM)}"
                    f" (classes: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''})"
                )
        if not out:
            raise DataError(f"{f} has no entries")
        return out, root

    def class_names(self, root: Path) -> list[str] | None:
        return csv_classes(root)
