"""``fewshot``: NOAH's few-shot lists, ``annotations/train_meta.list.num_shot_<k>.seed_<s>``, ``val_meta.list``,
``test_meta.list``, lines ``<path> <label>``."""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ...registry import FORMATS
from ..entries import Entry, Layout, read_pairs


@FORMATS.register("fewshot")
class Fewshot(Layout):
    """Splits ``train`` (the list of ``data.shot`` and ``data.fewshot_seed``), ``val``, ``test``; crop + flip +
    RandAugment for training."""

    augment = "crop_flip_randaug"
    markers = ("annotations",)
    label_kinds = ("int", "float")

    def entries(
        self, root: Path, split: str, shot: int = 16, seed: int = 0, labels: str = "int"
    ) -> tuple[list[Entry], Path]:
        name = {
            "train": f"train_meta.list.num_shot_{shot}.seed_{seed}",
            "val": "val_meta.list",
            "test": "test_meta.list",
        }.get(split)
        if name is None:
            raise DataError(f"few-shot splits are train, val and test, not {split!r}")
        f = root / "annotations" / name
        if not f.is_file():
            raise DataError(f"missing list file {f}")
        return read_pairs(f, labels), root
