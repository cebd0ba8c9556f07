"""``folder``: ``<split>/<class name>/<image>``, labels by sorted class name (recorded by a run, so evaluation on
other data can check its class folders)."""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ...registry import FORMATS
from ..entries import IMAGE_SUFFIXES, Entry, Layout


def folder_classes(root: str | Path) -> list[str]:
    """The ``folder`` layout's class names, label order: every class sub-folder of any split folder, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    return sorted({p.name for s in root.iterdir() if s.is_dir() for p in s.iterdir() if p.is_dir()})


@FORMATS.register("folder")
class Folder(Layout):
    """Splits ``train``, ``val``, ``test``, each a folder of class folders; no augmentation."""

    markers = ("train", "test")

    def entries(self, root: Path, split: str, shot: int = 16, seed: int = 0) -> tuple[list[Entry], Path]:
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

    def class_names(self, root: Path) -> list[str]:
        return folder_classes(root)
