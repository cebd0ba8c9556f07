"""``fgvc``: VPT's JSON splits, ``train.json`` / ``val.json`` / ``test.json`` mapping image paths to labels; images
under ``images/`` (CUB, NABirds), ``Images/`` (Stanford Dogs) or the root (Flowers, Cars)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import DataError
from ...files import read_text
from ...registry import FORMATS
from ..entries import Entry, Layout


@FORMATS.register("fgvc")
class Fgvc(Layout):
    """Splits ``train``, ``val``, ``test``; ``train+val`` joins two. Random-resized crop + flip for training."""

    splits = ("train+val", "train", "val", "test")
    augment = "crop_flip"
    markers = ("train.json", "test.json")

    def entries(self, root: Path, split: str, shot: int = 16, seed: int = 0) -> tuple[list[Entry], Path]:
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
