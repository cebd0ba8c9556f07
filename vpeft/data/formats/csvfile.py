"""``csv``: ``<split>.csv`` with a header naming the columns ``path`` and ``label``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ...errors import DataError
from ...files import read_text
from ...registry import FORMATS
from ..entries import Entry, Layout, parse_label


@FORMATS.register("csv")
class Csv(Layout):
    """Splits ``train``, ``val``, ``test``, one file each; no augmentation."""

    markers = ("train.csv", "test.csv")
    label_kinds = ("int", "float")

    def entries(self, root: Path, split: str, shot: int = 16, seed: int = 0,
                labels: str = "int") -> tuple[list[Entry], Path]:
        f = root / f"{split}.csv"
        if not f.is_file():
            raise DataError(f"missing split file {f}")
        out = []
        with io.StringIO(read_text(f), newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise DataError(f"{f}: the header must name the columns path and label, got {reader.fieldnames}")
            for i, row in enumerate(reader, 2):
                out.append(Entry(row["path"], parse_label(row["label"], labels, f"{f}:{i}"), i, f))
        if not out:
            raise DataError(f"{f} has no entries")
        return out, root
