"""``vtab1k``: NOAH's VTAB-1K task folders, ``<split>.txt`` lists of ``<path> <label>`` lines; optionally
``classes.txt``, ``<label> <name>`` per class."""

from __future__ import annotations

from pathlib import Path

from ...registry import FORMATS
from ..entries import Entry, Layout, list_path, read_list

LISTS = ("train800", "val200", "train800val200", "test")


@FORMATS.register("vtab1k")
class Vtab1k(Layout):
    """Splits ``train800``, ``val200``, ``train800val200``, ``test``; direct resize, no augmentation."""

    splits = ("train800val200", "train800", "val200", "test")
    augment = "none"
    markers = ("train800val200.txt", "test.txt")
    check_splits = LISTS
    required = ("train800val200", "test")
    label_kinds = ("int", "float")

    def entries(
        self, root: Path, split: str, shot: int = 16, seed: int = 0, labels: str = "int"
    ) -> tuple[list[Entry], Path]:
        return read_list(root, split, labels), root

    def looks_like(self, root: Path) -> bool:
        return any(list_path(root, s).is_file() for s in LISTS)
