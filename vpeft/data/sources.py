"""The data protocol the trainer and the commands use: a layout's default splits and augmentation (from its entry in
:data:`vpeft.registry.FORMATS`), the size a split is decoded at, and one split loaded as training or evaluation sees
it.

The layouts themselves are read by :mod:`vpeft.data.formats` (through :mod:`vpeft.data.entries`, whose names are
re-exported here) and decoded by :mod:`vpeft.data.vtab`.
"""

from __future__ import annotations

from .entries import IMAGE_SUFFIXES, Entry, layout, read_entries  # noqa: F401  (re-exported)
from .formats.folder import folder_classes  # noqa: F401  (re-exported)
from .vtab import center_crop, load_split

CROP_PCT = 0.875  # augmented layouts decode at size / 0.875 and test on the centre crop


def resolve_splits(dc, select: str) -> tuple[str, str | None, str]:
    """``(train, val or None, test)`` split names for a data config and a model-selection rule."""
    last, train_for_val, val, test = layout(dc.format).splits
    train = dc.train_split or (train_for_val if select == "val" else last)
    return train, ((dc.val_split or val) if select == "val" else None), dc.test_split or test


def augment_kind(dc) -> str:
    return dc.augment or layout(dc.format).augment


def load(dc, split: str, size: tuple[int, int], num_classes: int | None, training: bool, root=None,
         labels: str = "int"):
    """One split as the trainer uses it: direct resize (``none``), or decoded larger and, unless training, centre
    cropped (the augmented layouts); ``labels`` as the run's task reads them (``int`` or ``float`` targets)."""
    root = root or dc.root
    kw = dict(skip_bad=dc.skip_bad, fmt=dc.format, shot=dc.shot, seed=dc.fewshot_seed, labels=labels)
    ds = load_split(root, split, decode_size(dc, size), num_classes, **kw)
    return ds if training or augment_kind(dc) == "none" else center_crop(ds, size)


def decode_size(dc, size: tuple[int, int]) -> tuple[int, int]:
    """The size images are decoded at: the model's input, or size / 0.875 for the augmented layouts (whose
    training takes random crops of it and whose evaluation takes its centre crop)."""
    if augment_kind(dc) == "none":
        return size
    return round(size[0] / CROP_PCT), round(size[1] / CROP_PCT)
