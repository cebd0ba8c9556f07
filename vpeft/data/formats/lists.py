"""``lists``: ``<path> <label>`` list files, the list files and the images each under their own root.

The general form of ``fewshot``, for the lists NOAH and DTL publish and the layouts their readers assume: a split is
a list file (``data.lists`` maps a split to its file name, with ``{shot}`` and ``{seed}`` standing for ``data.shot``
and ``data.fewshot_seed``; a split it does not name is ``<split>.txt``) under ``data.lists_root``, and its image paths
are relative to ``data.image_roots[<split>]``, else ``data.image_root`` (ImageNet's training and validation images
live apart). Each root is relative to the data folder (``data.root``) or absolute, and null means the data folder.
Lines are split on their last run of white space, so a path may hold spaces (ImageNet-A's class folders do).

NOAH's few-shot ImageNet (``lib/datasets.py``: lists in ``<root>/annotations``, images in ``<root>/train`` and
``<root>/val``) reads as ``lists_root=annotations``, ``image_roots={train: train, test: val}``, ``lists={train:
"train_meta.list.num_shot_{shot}.seed_{seed}", test: val_meta.list}``; DTL's (``data/domain_generalization.py``:
images in ``imagenet/images/{train,val}``) with ``image_roots={train: images/train, test: images/val}``.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ...registry import FORMATS
from ..entries import Entry, Layout, read_pairs

#: The names a list-file name may hold in braces, replaced by ``data.shot`` and ``data.fewshot_seed``.
PLACEHOLDERS = ("shot", "seed")


def list_names(lists: dict | None, split: str, shot: int, seed: int) -> list[str]:
    """The list files of ``split``: its entry in ``lists`` (a name or a list of names) with ``{shot}`` and ``{seed}``
    filled in, else ``<split>.txt``; a name with another placeholder fails naming it."""
    if not lists or split not in lists:
        return [f"{split}.txt"]
    names = lists[split] if isinstance(lists[split], list) else [lists[split]]
    out = []
    for name in names:
        try:
            out.append(str(name).format(shot=shot, seed=seed))
        except (KeyError, IndexError, ValueError) as e:
            raise DataError(
                f"data option 'lists', split {split!r}: cannot fill in list file name {name!r} ({e}); the names "
                f"in braces it may hold are {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            ) from None
    return out


def under(root: Path, path: str | None) -> Path:
    """``path`` relative to ``root`` (an absolute ``path`` stays as it is); null: ``root``."""
    return root if path is None else root / path


@FORMATS.register("lists")
class Lists(Layout):
    """Splits ``train``, ``val``, ``test`` (and any split ``data.lists`` names), one ``<path> <label>`` list file
    each; crop + flip + RandAugment for training, as ``fewshot``. Never picked by ``data.format=auto`` unless the data
    folder holds ``train.txt`` and ``test.txt`` and no other layout's markers; set ``data.format=lists`` (or any of
    its options) to read it."""

    augment = "crop_flip_randaug"
    markers = ("train.txt", "test.txt")
    label_kinds = ("int", "float")
    options = ("lists_root", "image_root", "image_roots", "lists")

    def entries(
        self,
        root: Path,
        split: str,
        shot: int = 16,
        seed: int = 0,
        labels: str = "int",
        lists_root: str | None = None,
        image_root: str | None = None,
        image_roots: dict[str, str] | None = None,
        lists: dict | None = None,
    ) -> tuple[list[Entry], Path]:
        folder = under(root, lists_root)
        if not folder.is_dir():
            raise DataError(f"list folder {folder} (data.lists_root) does not exist")
        entries = []
        for name in list_names(lists, split, shot, seed):
            f = folder / name
            if not f.is_file():
                named = f"data.lists.{split}" if lists and split in lists else f"no data.lists.{split}: {split}.txt"
                present = sorted(p.name for p in folder.iterdir() if p.is_file())
                shown = ", ".join(present[:12]) + (" ..." if len(present) > 12 else "")
                raise DataError(f"missing list file {f} of split {split!r} ({named}; files there: {shown or 'none'})")
            entries += read_pairs(f, labels)
        per_split = bool(image_roots) and split in image_roots
        images = under(root, image_roots[split] if per_split else image_root)
        if not images.is_dir():
            option = f"data.image_roots.{split}" if per_split else "data.image_root"
            raise DataError(f"image folder {images} of split {split!r} ({option}, listed by {f}) does not exist")
        return entries, images

    def split_names(self, lists: dict[str, str] | None = None, **options) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.check_splits, *(lists or {})]))

    def is_task(self, root: Path) -> bool:
        # As the class says: not where another layout's markers are all there too (segfolder's train.txt and
        # test.txt beside images/ and masks/).
        others = (FORMATS.get(n)() for n in FORMATS.names() if n != self.name)
        return super().is_task(root) and not any(o.is_task(root) for o in others)
