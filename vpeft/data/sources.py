"""The data protocol the trainer and the commands use: a layout's default splits and augmentation (from its entry in
:data:`vpeft.registry.FORMATS`), the size a split is decoded at, and one split loaded as training or evaluation sees
it.

The layouts themselves are read by :mod:`vpeft.data.formats` (through :mod:`vpeft.data.entries`, whose names are
re-exported here) and decoded by :mod:`vpeft.data.vtab`. A training split's labels are checked against the head
(:func:`check_labels`): labels with no training example where nothing declares the classes are an error, or with
``data.strict_labels=false`` a warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from ..files import read_text
from .entries import (  # noqa: F401  (re-exported)
    IMAGE_SUFFIXES,
    Entry,
    entries_for,
    label_ranges,
    layout,
    layout_options,
    listed_classes,
    read_entries,
)
from .formats.folder import folder_classes, has_split_folders, ignored_entries  # noqa: F401  (re-exported)
from .suites import canonical_classes
from .vtab import ImageDataset, StreamedSplit, center_crop, load_split

CROP_PCT = 0.875  # augmented layouts decode at size / 0.875 and test on the centre crop


def resolve_splits(dc, select: str) -> tuple[str, str | None, str]:
    """``(train, val or None, test)`` split names for a data config and a model-selection rule."""
    last, train_for_val, val, test = layout(dc.format).splits
    train = dc.train_split or (train_for_val if select == "val" else last)
    return train, ((dc.val_split or val) if select == "val" else None), dc.test_split or test


def augment_kind(dc) -> str:
    return dc.augment or layout(dc.format).augment


def load(
    dc,
    split: str,
    size: tuple[int, int],
    num_classes: int | None,
    training: bool,
    root=None,
    labels: str = "int",
    tokenizer=None,
):
    """One split as the trainer uses it: direct resize (``none``), or decoded larger and, unless training, centre
    cropped (the augmented layouts); ``labels`` as the run's task reads them (``int`` or ``float`` targets). A text
    layout's split (``glue``) is tokenised by ``tokenizer`` (texts -> int64 ids ``[N, L]``: the run's task's
    :meth:`~vpeft.tasks.base.TaskConfig.text_encoder`) into the dataset's ``images``."""
    root = root or dc.root
    if layout(dc.format).kind == "text":
        return load_text(dc, split, num_classes, root, labels, tokenizer)
    if labels == "int" and num_classes is not None:
        names = layout(dc.format).class_names(Path(root))
        if names and len(names) != num_classes and root == dc.root:
            shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
            raise DataError(
                f"{root} has {len(names)} classes ({shown}) but the run has {num_classes} "
                "(data.num_classes or classes.txt): leave data.num_classes unset or make them agree"
            )
        if training:
            check_labels(dc, split, num_classes, root)
    kw = dict(
        skip_bad=dc.skip_bad,
        fmt=dc.format,
        shot=dc.shot,
        seed=dc.fewshot_seed,
        labels=labels,
        fractions=tuple(dc.split_fractions),
        split_seed=dc.split_seed,
        options=layout_options(dc),
    )
    ds = load_split(root, split, decode_size(dc, size), num_classes, **kw)
    return ds if training or augment_kind(dc) == "none" else center_crop(ds, size)


def classes_declared(dc, num_classes: int, root=None) -> bool:
    """Whether something besides the labels themselves fixes the classes: ``data.num_classes``, ``classes.txt``,
    the layout's class names (``folder``, named ``csv`` labels), or a VTAB-1K task's folder name with its canonical
    count (whose training lists of 800 or 1,000 images leave some of, e.g., SUN397's classes out by design)."""
    root = Path(root or dc.root)
    return bool(
        dc.num_classes
        or listed_classes(root)
        or layout(dc.format).class_names(root)
        or canonical_classes(root.resolve().name) == num_classes
    )


def unseen_labels(dc, split: str, num_classes: int, root=None) -> tuple[list[int], Path]:
    """The labels 0..num_classes-1 with no example in training split ``split``, and the file that lists it."""
    entries, _ = entries_for(dc, split, root)
    seen = {e.label for e in entries}
    return [y for y in range(num_classes) if y not in seen], entries[0].source


def check_labels(dc, split: str, num_classes: int, root=None) -> None:
    """Where nothing declares the classes (:func:`classes_declared`), the head has 1 + the largest label outputs:
    a label far out of range or a gap in the numbering makes outputs that no training image teaches. Such labels
    fail naming them and the training list, or with ``data.strict_labels=false`` warn."""
    if classes_declared(dc, num_classes, root):
        return
    missing, source = unseen_labels(dc, split, num_classes, root)
    if not missing:
        return
    message = (
        f"{source}: label(s) {label_ranges(missing)} of 0..{num_classes - 1} have no training example (the head "
        f"takes 1 + the largest label, {num_classes} classes, as no classes.txt or data.num_classes says "
        "otherwise)"
    )
    if getattr(dc, "strict_labels", True):
        raise DataError(
            message + "; fix the labels, add classes.txt or data.num_classes, or set "
            "data.strict_labels=false to train anyway"
        )
    warnings.warn(message, stacklevel=3)


def describe_split(dc) -> dict | None:
    """How vpeft split the data, for a run's record: a plain folder of class folders split by
    ``data.split_fractions`` and ``data.split_seed`` (``{"made_by": "vpeft", "fractions", "seed"}``); null where the
    data brings its own splits."""
    if dc.format != "folder" or dc.root is None or has_split_folders(Path(dc.root)):
        return None
    return {"made_by": "vpeft", "fractions": list(dc.split_fractions), "seed": dc.split_seed, "stratified": True}


def decode_size(dc, size: tuple[int, int]) -> tuple[int, int]:
    """The size images are decoded at: the model's input, or size / 0.875 for the augmented layouts (whose
    training takes random crops of it and whose evaluation takes its centre crop)."""
    if augment_kind(dc) == "none":
        return size
    return round(size[0] / CROP_PCT), round(size[1] / CROP_PCT)


def data_class_names(dc, num_classes: int | None = None) -> list[str] | None:
    """The class names of a run's data in label order, where the data names its classes: the layout's own (the
    ``folder`` layout's class folders), else a ``classes.txt`` in the data folder (``<label> <name>`` lines, as the
    generated tasks write); None when neither is there or their count is not ``num_classes``."""
    root = Path(dc.root) if dc.root else None
    if root is None or not root.is_dir():
        return None
    names = layout(dc.format).class_names(root)
    if names is None and (root / "classes.txt").is_file():
        rows = [line.strip() for line in read_text(root / "classes.txt").splitlines() if line.strip()]
        pairs = [r.split(maxsplit=1) for r in rows]
        if all(len(p) == 2 and p[0].isdigit() for p in pairs) and sorted(int(p[0]) for p in pairs) == list(
            range(len(pairs))
        ):
            names = [name for _, name in sorted((int(i), n) for i, n in pairs)]
        else:
            names = rows
    if names is not None and num_classes is not None and len(names) != num_classes:
        return None
    return names


def streamed(dc, split: str, size: tuple[int, int], num_classes: int | None, labels: str = "int"):
    """An evaluation split as a :class:`~vpeft.data.vtab.StreamedSplit` where, decoded, it would take more than
    ``data.eval_memory_mb`` (ImageNet val: 50,000 images, 7.5 GB at 224 px), so it is read a chunk at a time each
    time it is evaluated; None where it fits (:func:`load` it). Labels out of range and missing images fail naming
    the file and line before anything is decoded (with ``data.skip_bad``: are left out, with a warning)."""
    if layout(dc.format).kind == "text":  # tokenised whole: token ids are small
        return None
    entries, image_root = entries_for(dc, split, labels=labels)
    dsize = decode_size(dc, size)
    per_image, budget = 3 * dsize[0] * dsize[1], dc.eval_memory_mb * 2**20
    if len(entries) * per_image <= budget:
        return None
    skipped = []
    kept = []
    for e in entries:
        if labels == "int" and num_classes is not None and not 0 <= e.label < num_classes:
            skipped.append(f"{e.source}:{e.line}: label {e.label} is outside the class range 0..{num_classes - 1}")
        elif not os.path.isfile(image_root / e.path):
            skipped.append(f"{e.source}:{e.line}: image {image_root / e.path} does not exist")
        else:
            kept.append(e)
            continue
        if not dc.skip_bad:
            raise DataError(skipped[-1])
    if skipped:
        warnings.warn(f"skip_bad: left out {len(skipped)} bad line(s) of split {split!r}; first: {skipped[0]}")
    if not kept:
        raise DataError(f"{entries[0].source}: no readable entries ({len(skipped)} skipped)")
    return StreamedSplit(
        entries=kept,
        image_root=image_root,
        decode_size=dsize,
        crop=None if augment_kind(dc) == "none" else tuple(size),
        chunk=max(1, int(budget // per_image)),
        label_dtype=torch.int64 if labels == "int" else torch.float32,
        skip_bad=dc.skip_bad,
        source=str(entries[0].source),
        skipped=skipped,
    )


def load_text(dc, split: str, num_classes: int | None, root, labels: str, tokenizer):
    """A text layout's split (:meth:`~vpeft.data.formats.glue.Glue.examples`), its texts tokenised: a dataset whose
    ``images`` are int64 token ids ``[N, L]`` (the model's input) and whose ``labels`` are class indices or float
    targets."""
    lay = layout(dc.format)
    if tokenizer is None:
        raise ConfigError(
            f"data format {dc.format!r} holds text: train it with a text backbone (hf_text:...) and a text task "
            "(--task text_classify or text_regress)"
        )
    rows = lay.examples(Path(root), split, **layout_options(dc))
    if labels == "int":
        y = torch.tensor([int(e.label) for e in rows], dtype=torch.int64)
        if num_classes is not None and len(y) and int(y.max()) >= num_classes:
            raise DataError(
                f"{root}: split {split!r} has label {int(y.max())}, outside the run's {num_classes} classes"
            )
    else:
        y = torch.tensor([float(e.label) for e in rows], dtype=torch.float32)
    ids = tokenizer([e.texts for e in rows])
    return ImageDataset(ids, y, f"{root}:{split}", skipped=[])
