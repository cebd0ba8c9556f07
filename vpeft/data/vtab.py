"""Decoded splits: images read from a split's entries, resized to the model's input and kept in memory as uint8 (so
an epoch costs no decoding), with a bounded cache of the splits this process decoded.

Images are resized directly to the requested size (bicubic, no crop, no augmentation, as the papers' VTAB runs);
every problem names the list file and line. The entries come from :mod:`vpeft.data.entries` (whose names are
re-exported here); the layouts' defaults and the trainer's view of a split are in :mod:`vpeft.data.sources`.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .entries import (  # noqa: F401  (re-exported)
    SPLIT_FRACTIONS,
    Entry,
    ListEntry,
    infer_num_classes,
    list_path,
    read_entries,
    read_list,
)

NORMALIZATION = {
    # mean = std = 0.5 (timm's IMAGENET_INCEPTION_*), as GIST, iDAT, GPS and DTL
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # OpenAI CLIP's (open_clip's OPENAI_DATASET_MEAN / _STD), as CoOp and MaPLe
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


@dataclass
class ImageDataset:
    """Decoded images of one split: ``images`` uint8 ``[N, 3, H, W]``, ``labels`` int64 ``[N]`` (float32 targets
    for regression; zeros for segmentation); ``skipped`` lists the problems of lines left out under ``skip_bad``;
    ``masks``: a segmentation split's binary masks, uint8 ``[N, H, W]`` of 0 and 1 at the images' size (else None)."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str
    skipped: list = None
    masks: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.labels)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with high-bit-depth images rescaled to 8 bits first (``convert("RGB")`` alone clips a 16-bit image's
    values above 255 to white): 16-bit by its full range, 32-bit integer by 16-bit range when it fits, else by its
    maximum; float in [0, 1] by 255."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = float(a.max()) if a.size else 0.0
        if img.mode.startswith("I;16") or (img.mode == "I" and 255 < top <= 65535):
            a = a / 257.0
        elif img.mode == "F" and top <= 1.0:
            a = a * 255.0
        elif top > 255:
            a = a * (255.0 / top)
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    return img.convert("RGB")


def _decode(path: Path, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        img = to_rgb(img)
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.BICUBIC)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def mask_values(img: Image.Image) -> np.ndarray:
    """A mask image's grey values, uint8 ``[H, W]``: 16-bit and float masks rescaled as :func:`to_rgb` does, colour
    and palette masks converted to grey (``L``)."""
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * 255
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = to_rgb(img)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def binarize(grey: np.ndarray) -> np.ndarray:
    """A mask's grey values as 0/1 uint8: values already all 0 or 1 as they are, else grey >= 128 is foreground."""
    if grey.size and int(grey.max()) <= 1:
        return grey.astype(np.uint8)
    return (grey >= 128).astype(np.uint8)


def decode_mask(path: Path, size: tuple[int, int], image_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """A binary mask, uint8 ``[H, W]`` of 0 and 1 (:func:`binarize` of its grey values), resized to ``size`` with
    nearest neighbour (after binarising, so no new value appears). ``image_size`` (width, height): its image's size
    before resizing, which the mask must have."""
    with Image.open(path) as img:
        img.load()
        if image_size is not None and img.size != tuple(image_size):
            raise DataError(
                f"mask {path} is {img.size[0]}x{img.size[1]} but its image is {image_size[0]}x{image_size[1]} "
                "(width x height): a mask must have its image's size"
            )
        m = binarize(mask_values(img))
    if m.shape != tuple(size):
        m = np.asarray(Image.fromarray(m).resize((size[1], size[0]), Image.NEAREST), dtype=np.uint8)
    return m.copy()


def _decode_pair(image: Path, mask: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(image) as img:
        image_size = img.size
    return _decode(image, size), decode_mask(mask, size, image_size)


#: Decoded splits of this process, most recently used last; bounded so a long sweep does not keep every task.
_CACHE: OrderedDict[tuple, ImageDataset] = OrderedDict()
CACHE_SPLITS = 8


def load_split(
    root: str | Path,
    split: str,
    size: tuple[int, int],
    num_classes: Optional[int] = None,
    cache: bool = True,
    skip_bad: bool = False,
    fmt: str = "vtab1k",
    shot: int = 16,
    seed: int = 0,
    labels: str = "int",
    fractions: tuple[float, ...] = SPLIT_FRACTIONS,
    split_seed: int = 0,
    options: dict | None = None,
) -> ImageDataset:
    """Read and decode one split; checks labels against ``num_classes`` before decoding anything.

    A bad line (missing or unreadable image, label out of range) fails with its file and line number, or, with
    ``skip_bad``, is left out, described in the dataset's ``skipped`` list and counted in a warning naming the
    files. ``labels="float"`` reads real-valued targets (regression) instead of class labels. ``fractions`` and
    ``split_seed`` split a folder that has no splits (``folder``: a plain folder of class folders); ``options`` are
    the layout's own data options (``lists``: where its list files and images are).
    """
    entries, image_root = read_entries(root, split, fmt, shot, seed, labels, fractions, split_seed, options)
    root = Path(root)
    lpath = entries[0].source if entries else list_path(root, split)
    skipped: list[str] = []
    skipped_from: dict[str, int] = {}

    def bad(message: str, entry: Entry) -> None:
        if not skip_bad:
            raise DataError(message)
        skipped.append(message)
        skipped_from[str(entry.source)] = skipped_from.get(str(entry.source), 0) + 1
        entries.remove(entry)

    if num_classes is not None and labels == "int":
        for e in list(entries):
            if not 0 <= e.label < num_classes:
                bad(f"{e.source}:{e.line}: label {e.label} is outside the class range 0..{num_classes - 1}", e)
    # The cache key covers every image's size and mtime, so an edited, replaced or deleted file is read again.
    stats = []
    masks = labels == "mask"  # a segmentation split: each entry's label is its mask's path under the image root
    for e in list(entries):
        try:
            st = os.stat(image_root / e.path)
        except OSError:
            bad(f"{e.source}:{e.line}: image {image_root / e.path} does not exist", e)
            continue
        if not masks:
            stats.append((st.st_mtime_ns, st.st_size))
            continue
        try:
            mst = os.stat(image_root / e.label)
        except OSError:
            bad(f"{e.source}:{e.line}: mask {image_root / e.label} does not exist", e)
            continue
        stats.append((st.st_mtime_ns, st.st_size, mst.st_mtime_ns, mst.st_size))
    key = (
        str(root.resolve()),
        fmt,
        shot,
        seed,
        split,
        tuple(size),
        skip_bad,
        labels,
        tuple(fractions),
        split_seed,
        str(image_root),
        hash((tuple((e.path, e.label) for e in entries), tuple(stats))),
    )
    if cache and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]

    def work(e):
        if masks:
            try:
                return _decode_pair(image_root / e.path, image_root / e.label, size)
            except DataError as ex:
                return f"{e.source}:{e.line}: {ex}"
            except Exception as ex:
                return (
                    f"{e.source}:{e.line}: cannot read image {image_root / e.path} or its mask {image_root / e.label}: "
                    f"{type(ex).__name__}: {ex}"
                )
        try:
            return _decode(image_root / e.path, size)
        except Exception as ex:
            return f"{e.source}:{e.line}: cannot read image {image_root / e.path}: {type(ex).__name__}: {ex}"

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(work, list(entries)))
    for e, a in list(zip(list(entries), arrays)):
        if isinstance(a, str):
            bad(a, e)
    arrays = [a for a in arrays if not isinstance(a, str)]
    mask_arrays = None
    if masks:
        arrays, mask_arrays = [a for a, _ in arrays], [m for _, m in arrays]
    if skipped:
        files = ", ".join(f"{n} in {f}" for f, n in skipped_from.items())
        warnings.warn(
            f"skip_bad: left out {len(skipped)} bad line(s) of split {split!r} ({files}); first: {skipped[0]}",
            stacklevel=2,
        )
    if not arrays:
        raise DataError(f"{lpath}: no readable entries" + (f" ({len(skipped)} skipped)" if skipped else ""))
    if masks:
        ds = ImageDataset(
            images=torch.from_numpy(np.stack(arrays)),
            labels=torch.zeros(len(arrays), dtype=torch.int64),
            source=str(lpath),
            skipped=skipped,
            masks=torch.from_numpy(np.stack(mask_arrays)),
        )
    else:
        ds = ImageDataset(
            images=torch.from_numpy(np.stack(arrays)),
            labels=torch.tensor([e.label for e in entries], dtype=torch.int64 if labels == "int" else torch.float32),
            source=str(lpath),
            skipped=skipped,
        )
    if cache:
        _CACHE[key] = ds
        while len(_CACHE) > CACHE_SPLITS:
            _CACHE.popitem(last=False)
    return ds


def decode_chunks(
    entries: list[Entry], image_root: Path, size: tuple[int, int], chunk: int, skipped: Optional[list[str]] = None
):
    """Decode ``entries`` ``chunk`` images at a time, yielding ``(uint8 images [n, 3, H, W], the n entries)``: a split
    too large to hold decoded (ImageNet val, 50,000 images: 7.5 GB at 224 px) is read with at most ``chunk`` images
    in memory. An unreadable image fails naming its file and line, or, given a ``skipped`` list, is left out and its
    message appended there. Nothing is cached."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")

    def work(e):
        try:
            return _decode(image_root / e.path, size)
        except Exception as ex:
            message = f"{e.source}:{e.line}: cannot read image {image_root / e.path}: {type(ex).__name__}: {ex}"
            if skipped is None:
                raise DataError(message) from None
            return message

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(entries), chunk):
            part = entries[start : start + chunk]
            arrays = list(pool.map(work, part))
            if skipped is not None:
                skipped += [a for a in arrays if isinstance(a, str)]
                part = [e for e, a in zip(part, arrays) if not isinstance(a, str)]
                arrays = [a for a in arrays if not isinstance(a, str)]
            if arrays:
                yield torch.from_numpy(np.stack(arrays)), part


@dataclass
class StreamedSplit:
    """A split read a chunk at a time whenever it is evaluated, never held decoded whole (see :func:`decode_chunks`):
    its checked entries, where their images are, the size they are decoded at, the centre crop evaluation takes
    (null: none) and how many images a chunk holds. With ``skip_bad``, ``skipped`` lists the lines left out before
    decoding (labels out of range, missing images) and those the last pass could not decode."""

    entries: list[Entry]
    image_root: Path
    decode_size: tuple[int, int]
    crop: Optional[tuple[int, int]]
    chunk: int
    label_dtype: torch.dtype = torch.int64
    skip_bad: bool = False
    source: str = ""
    skipped: list[str] = field(default_factory=list)
    undecoded: list[str] = field(default_factory=list)

    def __post_init__(self):
        if any(isinstance(e.label, str) for e in self.entries[:1]):  # a segfolder split: masks as labels
            raise DataError(
                f"{self.source or 'a segmentation split'}: a split with masks is not read in chunks; raise "
                "data.eval_memory_mb above its decoded size (3 bytes a pixel for the images, 1 for the masks)"
            )

    def __len__(self) -> int:
        return len(self.entries)

    def chunks(self):
        """``(uint8 images [n, 3, H, W] as evaluation takes them, labels [n])``, a chunk at a time."""
        undecoded: list[str] = []
        for images, part in decode_chunks(
            self.entries, self.image_root, self.decode_size, self.chunk, undecoded if self.skip_bad else None
        ):
            images = crop_center(images, self.crop).contiguous() if self.crop else images
            yield images, torch.tensor([e.label for e in part], dtype=self.label_dtype)
        if undecoded:
            warnings.warn(
                f"skip_bad: left out {len(undecoded)} unreadable image(s) of {self.source}; first: {undecoded[0]}"
            )
        self.undecoded = undecoded

    @property
    def bad_lines(self) -> int:
        """The lines left out, before decoding and by the last pass."""
        return len(self.skipped) + len(self.undecoded)


def crop_center(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central ``size`` crop of images ``... x H x W`` (a view)."""
    h, w = images.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return images[..., top : top + size[0], left : left + size[1]]


def center_crop(ds: ImageDataset, size: tuple[int, int]) -> ImageDataset:
    """The central ``size`` crop of every image (test-time transform of the augmented layouts)."""
    masks = None if ds.masks is None else crop_center(ds.masks, size).contiguous()
    return ImageDataset(crop_center(ds.images, size).contiguous(), ds.labels, ds.source, ds.skipped, masks)


def normalize(images: torch.Tensor, kind: str) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` to normalised float32."""
    mean, std = NORMALIZATION[kind]
    mean = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std
