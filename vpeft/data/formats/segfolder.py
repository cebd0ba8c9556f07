"""``segfolder``: images and their binary masks, ``images/<stem>.<ext>`` and ``masks/<stem>.<ext>``, paired by file
stem (any image suffix; masks are usually PNG), for the ``segment`` task.

Splits come from ``train.txt``, ``val.txt`` and ``test.txt`` in the folder where it has any, one image per line:

* ``images/<id>.jpg masks/<id>.png``: an image and its mask, both relative to the folder (Kvasir-SEG's lists, and
  what ``vpeft data synth --suite seg`` writes);
* ``images/<id>.jpg`` (or ``<id>.jpg``, relative to ``images/``): an image, its mask found by stem;
* ``<id>``: a stem, its image and mask found in ``images/`` and ``masks/``.

A line is split in two on its last run of white space only where both halves name image files, so an image path may
hold spaces (a mask path beside it may not). Without any list file vpeft splits the pairs itself, as the ``folder``
layout splits a class: the stems in name order shuffled by ``data.split_seed`` and cut by ``data.split_fractions``
(train, val, test). An image without a mask is an error naming it (a mask without an image is left out; ``vpeft data
check`` reports both). Hidden files (a name starting with a dot) are left out.

An entry's label is its mask's path relative to the folder: :func:`vpeft.data.vtab.load_split` decodes the masks
with the images (binary, nearest-neighbour resized; see :func:`vpeft.data.vtab.decode_mask`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import DataError
from ...files import read_text
from ...registry import FORMATS
from ..entries import IMAGE_SUFFIXES, SPLIT_FRACTIONS, Entry, Layout
from .folder import split_counts

IMAGES, MASKS = "images", "masks"
SPLITS = ("train", "val", "test")


def _by_stem(d: Path) -> tuple[dict[str, Path], list[str]]:
    """The image files of folder ``d`` by stem, and the stems that name several files (ambiguous)."""
    out: dict[str, Path] = {}
    several: list[str] = []
    if not d.is_dir():
        return out, several
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        if p.stem in out:
            several.append(p.stem)
        out.setdefault(p.stem, p)
    return out, several


@dataclass
class Scan:
    """What ``images/`` and ``masks/`` hold: files by stem, the stems that name several files, and the unpaired
    stems both ways."""

    root: Path
    images: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)
    ambiguous: list[str] = field(default_factory=list)

    @property
    def images_without_mask(self) -> list[str]:
        return sorted(s for s in self.images if s not in self.masks)

    @property
    def masks_without_image(self) -> list[str]:
        return sorted(s for s in self.masks if s not in self.images)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def scan(root: str | Path) -> Scan:
    """The image and mask files of a ``segfolder`` folder by stem; a missing ``images/`` or ``masks/`` fails."""
    root = Path(root)
    for sub in (IMAGES, MASKS):
        if not (root / sub).is_dir():
            raise DataError(f"{root} has no {sub}/ folder (segfolder: images/ and masks/, paired by file stem)")
    images, several = _by_stem(root / IMAGES)
    masks, several_masks = _by_stem(root / MASKS)
    ambiguous = [f"{IMAGES}/{s}.*" for s in several] + [f"{MASKS}/{s}.*" for s in several_masks]
    return Scan(root, images, masks, ambiguous)


def list_files(root: str | Path) -> dict[str, Path]:
    """The split lists the folder holds (``train.txt``, ``val.txt``, ``test.txt``), by split."""
    return {s: Path(root) / f"{s}.txt" for s in SPLITS if (Path(root) / f"{s}.txt").is_file()}


def _is_image_name(text: str) -> bool:
    return Path(text).suffix.lower() in IMAGE_SUFFIXES


def _mask_of(sc: Scan, stem: str, where: str, image: str) -> str:
    if stem not in sc.masks:
        raise DataError(
            f"{where}: image {image} has no mask: no file {MASKS}/{stem}.<png|jpg|...> in {sc.root} (masks are paired "
            "with images by file stem)"
        )
    return sc.rel(sc.masks[stem])


def parse_line(sc: Scan, text: str, where: str) -> tuple[str, str]:
    """``(image path, mask path)``, relative to the folder, of one list line (see the module docstring); a line whose
    image or mask cannot be found fails naming ``where`` (``file:line``)."""
    parts = text.rsplit(maxsplit=1)
    if len(parts) == 2 and _is_image_name(parts[0].strip()) and _is_image_name(parts[1]):
        return parts[0].strip(), parts[1]
    if _is_image_name(text):
        path = text if (sc.root / text).is_file() or "/" in text else f"{IMAGES}/{text}"
        return path, _mask_of(sc, Path(text).stem, where, path)
    if text not in sc.images:
        raise DataError(
            f"{where}: no image with stem {text!r} in {sc.root / IMAGES} (a line names a stem, an image path, or an "
            "image path and its mask path)"
        )
    image = sc.rel(sc.images[text])
    return image, _mask_of(sc, text, where, image)


def read_split_list(sc: Scan, path: Path) -> list[Entry]:
    """The entries of one split list (image path, mask path as the label, line); an empty list fails."""
    out = []
    for i, raw in enumerate(read_text(path).splitlines(), 1):
        line = raw.strip()
        if line:
            image, mask = parse_line(sc, line, f"{path}:{i}")
            out.append(Entry(image, mask, i, path))
    if not out:
        raise DataError(f"list file {path} has no entries")
    return out


def auto_split(sc: Scan, fractions: tuple[float, ...] = SPLIT_FRACTIONS, split_seed: int = 0) -> dict[str, list]:
    """The paired stems split into ``train``, ``val`` and ``test`` entries: in name order, shuffled by a generator
    seeded with ``split_seed``, cut by :func:`~vpeft.data.formats.folder.split_counts`; each entry's line is the
    stem's position in name order (1-based) and its source the ``images/`` folder."""
    stems = sorted(s for s in sc.images if s in sc.masks)
    order = list(range(len(stems)))
    random.Random(f"{split_seed}:{IMAGES}").shuffle(order)
    n_train, n_val, _ = split_counts(len(stems), fractions)
    out: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    part = {i: "train" if k < n_train else "val" if k < n_train + n_val else "test" for k, i in enumerate(order)}
    for i, s in enumerate(stems):
        out[part[i]].append(Entry(sc.rel(sc.images[s]), sc.rel(sc.masks[s]), i + 1, sc.root / IMAGES))
    return out


@FORMATS.register("segfolder")
class SegFolder(Layout):
    """Splits ``train``, ``val``, ``test``: images in ``images/``, binary masks in ``masks/`` paired by file stem,
    split by ``train.txt`` / ``val.txt`` / ``test.txt`` (image and mask paths, image paths or stems) or, without
    lists, by vpeft (``data.split_fractions``, ``data.split_seed``); no augmentation (the ``segment`` task flips)."""

    markers = (IMAGES, MASKS)
    label_kinds = ("mask",)
    splits_itself = True

    def entries(
        self,
        root: Path,
        split: str,
        shot: int = 16,
        seed: int = 0,
        labels: str = "int",
        fractions: tuple[float, ...] = SPLIT_FRACTIONS,
        split_seed: int = 0,
    ) -> tuple[list[Entry], Path]:
        if labels != "mask":
            raise DataError(f"data format 'segfolder' holds masks, not {labels} labels: use task 'segment'")
        sc = scan(root)
        if sc.ambiguous:
            raise DataError(f"{root}: several files share a stem ({', '.join(sc.ambiguous[:4])}): keep one of each")
        lists = list_files(root)
        if lists:
            if split not in lists:
                raise DataError(
                    f"missing list file {Path(root) / f'{split}.txt'} of split {split!r} (lists there: "
                    f"{', '.join(p.name for p in lists.values())})"
                )
            return read_split_list(sc, lists[split]), Path(root)
        if split not in SPLITS:
            raise DataError(f"{root} has no list files: vpeft splits it into {', '.join(SPLITS)}, not {split!r}")
        if sc.images_without_mask:
            stem = sc.images_without_mask[0]
            more = len(sc.images_without_mask) - 1
            raise DataError(
                f"{sc.images[stem]}: image has no mask in {Path(root) / MASKS} (paired by file stem"
                + (f"; {more} more image(s) without a mask" if more else "")
                + ")"
            )
        out = auto_split(sc, fractions, split_seed)[split]
        if not out:
            shares = ", ".join(f"{s} {f:g}" for s, f in zip(SPLITS, fractions))
            raise DataError(
                f"{root}: the split vpeft made of its {len(sc.images)} image(s) has no {split} images "
                f"(data.split_fractions: {shares})"
            )
        return out, Path(root)

    def looks_like(self, root: Path) -> bool:
        return (Path(root) / MASKS).is_dir()  # images/ alone is common in other layouts (VTAB-1K's task folders)
