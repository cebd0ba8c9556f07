"""The bottom of the data package: the entry type, the ``<path> <label>`` list parser, and :class:`Layout`, the
contract of a data layout, looked up by name in :data:`vpeft.registry.FORMATS`.

The built-in layouts are one module each in :mod:`vpeft.data.formats` (``vtab1k``, ``fgvc``, ``fewshot``, ``lists``,
``folder``, ``csv``); a new one is one module there plus one line in its ``__init__``, or a third-party module declared
in the entry-point group ``vpeft.formats``. :func:`detect_format` picks a folder's layout by its markers
(``data.format=auto``, the default) and reads a plain folder of class folders as ``folder``. List files share one
parser (:func:`read_pairs`: lines ``<path> <label>``, split on the last run of white space, so a path may hold
spaces). Every entry keeps the file and line (or JSON position) it came from, for error messages. The label column
holds integer class labels, or, for a task that asks for them (``labels="float"``: regression), real-valued targets,
in the layouts whose ``label_kinds`` say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError
from ..files import read_text
from ..registry import FORMATS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
#: Train, val and test shares of a folder of class folders split by vpeft (``data.split_fractions``).
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(slots=True)
class Entry:
    """One image of a split: its path (relative to the split's image root), label (a float target for regression),
    and the file and line naming it."""

    path: str
    label: int | float
    line: int
    source: Path


ListEntry = Entry  # the name of a list file's entry before the layouts shared one type


LABEL_KINDS = ("int", "float")


def parse_label(text, labels: str, where: str) -> int | float:
    """A label column's value: an integer class label, or with ``labels="float"`` a finite real target; anything
    else fails naming ``where`` (``file:line``)."""
    if labels not in LABEL_KINDS:
        raise ValueError(f"labels must be one of {LABEL_KINDS}, got {labels!r}")
    try:
        if labels == "int":
            return int(text)
        value = float(text)
    except (TypeError, ValueError):
        what = "label" if labels == "int" else "target"
        raise DataError(f"{where}: {what} {text!r} is not {'an integer' if labels == 'int' else 'a number'}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: target {text!r} is not a finite number")
    return value


def read_pairs(f: Path, labels: str = "int") -> list[Entry]:
    """The ``<path> <label>`` lines of a list file (``labels``: ``int`` class labels or ``float`` targets); a bad
    line fails with the file and line number."""
    out = []
    for i, raw in enumerate(read_text(f).splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{f}:{i}: expected '<relative path> <label>', got {line!r}")
        out.append(Entry(parts[0], parse_label(parts[1], labels, f"{f}:{i}"), i, f))
    if not out:
        raise DataError(f"list file {f} has no entries")
    return out


def data_folder(root: str | Path) -> Path:
    """``root`` as a :class:`Path` when it is a folder; a file or a missing path fails saying which."""
    root = Path(root)
    if root.is_file():
        raise DataError(
            f"data folder {root} is a file, not a folder: give the folder that holds the data (e.g. {root.parent})"
        )
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    return root


def list_path(root: str | Path, split: str) -> Path:
    return Path(root) / f"{split}.txt"


def read_list(root: str | Path, split: str, labels: str = "int") -> list[Entry]:
    """Parse a VTAB-1K list, ``<root>/<split>.txt``; a missing one names the lists that are there."""
    path = list_path(data_folder(root), split)
    if not path.is_file():
        present = sorted(p.stem for p in Path(root).glob("*.txt"))
        raise DataError(f"missing list file {path} (list files there: {', '.join(present) or 'none'})")
    return read_pairs(path, labels)


class Layout:
    """A data layout: how a task folder names its splits and lists its images. One subclass per layout, registered
    in :data:`vpeft.registry.FORMATS` (the built-in ones in :mod:`vpeft.data.formats`); ``data.format`` names it.

    Attributes:
        splits: Default split names: train (``train.select=last``), train (``select=val``), val, test.
        augment: Default training augmentation (``data.augment``: ``none``, ``crop_flip``, ``crop_flip_randaug``).
        markers: Paths that together mark a complete task folder of this layout (a bench suite's task discovery).
        check_splits: The splits ``vpeft data check`` reads; a missing one is an error only if in ``required``.
        required: The splits a task folder must have.
        label_kinds: What its label column can hold: ``int`` class labels, and ``float`` targets where the layout
            reads them (its :meth:`entries` then takes ``labels="float"``).
        splits_itself: Whether it can split a folder that has no splits (its :meth:`entries` then takes
            ``fractions`` and ``split_seed``, ``data.split_fractions`` and ``data.split_seed``).
        options: The run's data options (``DataConfig`` fields) it reads, passed to its :meth:`entries` as keywords
            of those names (``lists``: where its list files and images are).
    """

    name: str  # set by ``FORMATS.register``
    #: ``image`` (entries of image files, decoded) or ``text`` (examples tokenised by the backbone: :meth:`examples`).
    kind: str = "image"
    splits: tuple[str, str, str, str] = ("train", "train", "val", "test")
    augment: str = "none"
    markers: tuple[str, ...] = ("train", "test")
    check_splits: tuple[str, ...] = ("train", "val", "test")
    required: tuple[str, ...] = ("train", "test")
    label_kinds: tuple[str, ...] = ("int",)
    splits_itself: bool = False
    options: tuple[str, ...] = ()

    def entries(self, root: Path, split: str, shot: int = 16, seed: int = 0) -> tuple[list[Entry], Path]:
        """``(entries, image root)`` of one split (``shot`` and ``seed`` choose a few-shot list where a layout has
        several); a bad entry fails with its file and line (or position). A layout whose ``label_kinds`` hold
        ``float`` also takes ``labels="float"``."""
        raise NotImplementedError

    def split_names(self, **options) -> tuple[str, ...]:
        """The splits ``vpeft data check`` reads with these :attr:`options`: :attr:`check_splits` (``lists``: and
        each split its ``lists`` option names)."""
        return self.check_splits

    def class_names(self, root: Path) -> list[str] | None:
        """The class names in label order where the layout defines them (null: labels are plain numbers)."""
        return None

    def is_task(self, root: Path) -> bool:
        """``root`` holds every marker: a complete task folder of this layout."""
        return all((Path(root) / m).exists() for m in self.markers)

    def looks_like(self, root: Path) -> bool:
        """``root`` holds some marker: a task folder of this layout, maybe incomplete (``vpeft data check``)."""
        return any((Path(root) / m).exists() for m in self.markers)

    def fits_unmarked(self, root: Path) -> bool:
        """``root`` holds this layout's data without any layout's markers (``folder``: a plain folder of class
        folders); :func:`detect` asks only when no layout's marker is there."""
        return False


def layout(fmt: str) -> Layout:
    """The registered layout ``fmt``; an unknown name fails naming the registered ones."""
    return FORMATS.get(fmt)()


def detect(root: str | Path) -> list[str]:
    """The registered layouts whose markers ``root`` holds, by name; where it holds no layout's marker at all, the
    layouts that read it without markers (a plain folder of class folders: ``folder``)."""
    root = Path(root)
    found = [n for n in FORMATS.names() if layout(n).is_task(root)]
    if found or any(layout(n).looks_like(root) for n in FORMATS.names()):
        return found
    return [n for n in FORMATS.names() if layout(n).fits_unmarked(root)]


def detect_format(root: str | Path | None, default: str = "vtab1k") -> str:
    """The layout ``data.format=auto`` reads ``root`` in: ``default`` (VTAB-1K) where ``root`` is a task folder of
    it or no folder at all, else the one layout :func:`detect` finds, else the one whose markers ``root`` partly
    holds (its reader then names what is missing), else ``default``. Two complete layouts fail, naming them."""
    if root is None or not Path(root).is_dir():
        return default
    found = detect(root)
    if default in found:
        return default
    if len(found) > 1:
        raise ConfigError(
            f"data folder {root} holds the markers of several layouts ({', '.join(found)}): set "
            "data.format to the one to read"
        )
    if found:
        return found[0]
    partial = [n for n in FORMATS.names() if layout(n).looks_like(Path(root))]
    return partial[0] if len(partial) == 1 else default


def read_entries(
    root: str | Path,
    split: str,
    fmt: str = "vtab1k",
    shot: int = 16,
    seed: int = 0,
    labels: str = "int",
    fractions: tuple[float, ...] = SPLIT_FRACTIONS,
    split_seed: int = 0,
    options: dict | None = None,
):
    """``(entries, image root)`` of one split of a dataset in layout ``fmt``, with ``int`` labels or ``float``
    targets; ``fractions`` and ``split_seed`` split a folder that has no splits (the layouts that can); ``options``
    (data option -> value) gives the layout the ones of its :attr:`Layout.options` (others are not its own)."""
    root = data_folder(root)
    lay = layout(fmt)
    if labels != "int" and labels not in lay.label_kinds:
        readers = [n for n in FORMATS.names() if labels in FORMATS.get(n).label_kinds]
        raise DataError(f"data format {fmt!r} has no {labels} labels (formats that do: {', '.join(readers) or 'none'})")
    kw: dict = {"fractions": tuple(fractions), "split_seed": split_seed} if lay.splits_itself else {}
    if labels != "int":
        kw["labels"] = labels
    kw.update({k: v for k, v in (options or {}).items() if k in lay.options})
    return lay.entries(root, split, shot, seed, **kw)


def layout_options(dc) -> dict:
    """The options of a run's data section ``dc`` that its layout reads (:attr:`Layout.options`), by name."""
    return {k: getattr(dc, k) for k in layout(dc.format).options}


def entries_for(dc, split: str, root: str | Path | None = None, labels: str = "int"):
    """:func:`read_entries` of one split as a run's data section ``dc`` names it (layout, few-shot list, split
    fractions and seed, the layout's own options), from ``root`` (default: ``dc.root``)."""
    return read_entries(
        root or dc.root,
        split,
        dc.format,
        dc.shot,
        dc.fewshot_seed,
        labels,
        tuple(dc.split_fractions),
        dc.split_seed,
        layout_options(dc),
    )


def label_ranges(labels: list[int]) -> str:
    """Sorted labels in runs: ``3, 5..98`` for ``[3, 5, 6, ..., 98]``."""
    runs: list[list[int]] = []
    for y in labels:
        if runs and y == runs[-1][1] + 1:
            runs[-1][1] = y
        else:
            runs.append([y, y])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def listed_classes(root: str | Path) -> int:
    """The number of class lines in ``root/classes.txt`` (0 where there is none)."""
    classes = Path(root) / "classes.txt"
    return sum(1 for line in read_text(classes).splitlines() if line.strip()) if classes.is_file() else 0


def infer_num_classes(
    root: str | Path,
    splits: list[str],
    fmt: str = "vtab1k",
    shot: int = 16,
    seed: int = 0,
    options: dict | None = None,
) -> int:
    """``classes.txt``'s line count if it exists, else the layout's class names (``folder``, ``csv`` with named
    labels), else 1 + the largest label in ``splits`` (read with the layout's ``options``)."""
    n = listed_classes(data_folder(root))
    if n > 0:
        return n
    names = layout(fmt).class_names(Path(root))
    if names:
        return len(names)
    return 1 + max(e.label for s in splits for e in read_entries(root, s, fmt, shot, seed, options=options)[0])
