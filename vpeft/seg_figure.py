"""A figure of predicted masks (issue 18): a grid PNG whose rows are a few test images and whose columns are the
image, its ground-truth mask and each run's predicted mask, each prediction titled with its Dice on that image.

:func:`mask_grid` takes run folders (any ``segment`` run: every method, objective and selector rebuilds from its
folder, as ``vpeft predict`` does) and image / mask pairs (:func:`split_pairs` reads them from a ``segfolder``
split); ``vpeft demo --suite seg`` and the Kvasir-SEG benchmark call it. Masks are shown at each image's own size
(:meth:`vpeft.predict.Predictor.masks`), so the figure shows what ``vpeft predict`` writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from .data.formats.segfolder import auto_split, list_files, read_split_list, scan
from .data.vtab import decode_mask, to_rgb
from .errors import ConfigError, DataError
from .metrics_seg import confusion, dice_iou
from .predict import Predictor


def split_pairs(root: str | Path, split: str = "test", n: Optional[int] = None) -> list[tuple[Path, Path]]:
    """The ``(image, mask)`` files of a ``segfolder`` split, in list order (the first ``n``): from its list file
    (``<split>.txt``), or, in a folder without lists, from vpeft's own split (default fractions and seed)."""
    sc = scan(root)
    lists = list_files(root)
    if lists:
        if split not in lists:
            raise DataError(f"{root} has no {split}.txt (it lists {', '.join(lists)})")
        entries = read_split_list(sc, lists[split])
    else:
        entries = auto_split(sc)[split]
    pairs = [(sc.root / e.path, sc.root / e.label) for e in entries]
    return pairs[:n] if n is not None else pairs


def image_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """One image's Dice in percent (:mod:`vpeft.metrics_seg`: 100 where both masks are empty)."""
    tp, fp, fn = confusion(torch.from_numpy(pred)[None], torch.from_numpy(truth)[None])
    return 100.0 * float(dice_iou(tp, fp, fn)[0][0])


def mask_grid(
    runs: Mapping[str, str | Path],
    pairs: Sequence[tuple[str | Path, str | Path]],
    out: str | Path,
    title: Optional[str] = None,
    device: str = "cpu",
    cell: float = 1.6,
) -> Path:
    """Write the grid PNG ``out`` and return it.

    Args:
        runs: Column label -> run folder of a ``segment`` run, in column order.
        pairs: ``(image file, mask file)`` per row (e.g. :func:`split_pairs` of the runs' test split).
        out: The PNG to write (its folder is created).
        title: A title over the grid.
        device: Where the runs' models predict.
        cell: Size of one cell in inches.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs or not pairs:
        raise ConfigError("a mask figure needs at least one run and one image")
    images = [Path(i) for i, _ in pairs]
    shown, truths = [], []
    for image, mask in pairs:
        with Image.open(image) as img:
            img.load()
            rgb = to_rgb(img)
        shown.append(np.asarray(rgb))
        truths.append(decode_mask(Path(mask), (rgb.height, rgb.width), rgb.size))
    predicted = {}
    for label, run in runs.items():
        predictor = Predictor.from_run(run, device)
        # the ground-truth masks prompt a model of prompt mode box or points (others ignore them)
        predicted[label] = [m for _, m in predictor.masks(images, prompt_masks=[Path(m) for _, m in pairs])]
    cols = 2 + len(runs)
    fig, axes = plt.subplots(len(pairs), cols, figsize=(cell * cols, cell * len(pairs) + (0.4 if title else 0)))
    axes = np.asarray(axes).reshape(len(pairs), cols)
    for r, (rgb, truth) in enumerate(zip(shown, truths)):
        cells = [(rgb, images[r].stem), (truth, "ground truth")]
        cells += [
            (predicted[label][r], f"{label}\nDice {image_dice(predicted[label][r], truth):.1f}") for label in runs
        ]
        for c, (picture, name) in enumerate(cells):
            ax = axes[r, c]
            if picture.ndim == 2:
                ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(picture, interpolation="nearest")
            ax.set_title(name, fontsize=7)
            ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
