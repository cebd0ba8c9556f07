"""``folder``: class folders. Either split folders of class folders, ``<split>/<class name>/<image>``, or a plain
folder of class folders, ``<class name>/<image>``, that vpeft splits itself: seeded and stratified, each class shuffled
by ``data.split_seed`` and cut by ``data.split_fractions`` into train, val and test. Labels by sorted class name
(recorded by a run, so evaluation on other data can check its class folders).

Hidden and system folders and files (a name starting with a dot, such as ``.git``, ``.ipynb_checkpoints``,
``.DS_Store`` or macOS's ``._name.jpg``, and ``__MACOSX``) are left out, and so, in a plain folder, are folders
that hold no image; a warning names them once per folder (:func:`ignored_entries` lists them).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

from ...errors import DataError
from ...registry import FORMATS
from ..entries import IMAGE_SUFFIXES, SPLIT_FRACTIONS, Entry, Layout, data_folder

#: The split folders of the split layout, and the splits vpeft makes of a plain folder.
SPLITS = ("train", "val", "test")
#: Folder names that system tools leave (besides every name starting with a dot).
SYSTEM_NAMES = frozenset({"__MACOSX", "__pycache__", "$RECYCLE.BIN", "System Volume Information", "lost+found"})
_NOTED: set[str] = set()  # the folders whose left-out entries were named (once per folder and process)


def hidden(name: str) -> bool:
    """A hidden or system file or folder name: left out of the data."""
    return name.startswith(".") or name in SYSTEM_NAMES


def has_split_folders(root: Path) -> bool:
    """``root`` has a ``train``, ``val`` or ``test`` folder (else it is a plain folder of class folders)."""
    return any((root / s).is_dir() for s in SPLITS)


def _folders(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not hidden(p.name))


def _images(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not hidden(p.name) and p.is_file())


def _hidden_below(d: Path, depth: int, rel: str = "") -> list[str]:
    out = []
    for p in sorted(d.iterdir()):
        if hidden(p.name):
            out.append(rel + p.name + ("/" if p.is_dir() else ""))
        elif p.is_dir() and depth > 1:
            out += _hidden_below(p, depth - 1, f"{rel}{p.name}/")
    return out


def _plain_classes(root: Path) -> tuple[list[str], list[str]]:
    """A plain folder's class folders (those that hold images) and its other folders."""
    classes, others = [], []
    for p in _folders(root):
        (classes if _images(p) else others).append(p.name)
    return classes, others


def ignored_entries(root: str | Path) -> list[str]:
    """What the ``folder`` layout leaves out of ``root``, relative to it (folders end in ``/``): hidden and system
    files and folders down to the images, and a plain folder's folders without images."""
    root = data_folder(root)
    split = has_split_folders(root)
    out = _hidden_below(root, 3 if split else 2)
    if not split:
        out += [f"{name}/ (no images)" for name in _plain_classes(root)[1]]
    return out


def _note(root: Path) -> None:
    key = str(root.resolve())
    if key in _NOTED:
        return
    _NOTED.add(key)
    left = ignored_entries(root)
    if left:
        shown = ", ".join(left[:6]) + (f" and {len(left) - 6} more" if len(left) > 6 else "")
        what = "entry" if len(left) == 1 else "entries"
        warnings.warn(f"{root}: left out {len(left)} hidden, system or image-less {what}: {shown}", stacklevel=3)


def folder_classes(root: str | Path) -> list[str]:
    """The ``folder`` layout's class names, label order: every class sub-folder of any split folder, or a plain
    folder's sub-folders that hold images, sorted; hidden and system folders left out."""
    root = data_folder(root)
    _note(root)
    if has_split_folders(root):
        return sorted({p.name for s in _folders(root) for p in _folders(s)})
    return _plain_classes(root)[0]


def split_counts(n: int, fractions: tuple[float, ...]) -> tuple[int, int, int]:
    """``(train, val, test)`` image counts of a class of ``n`` images: each share rounded, a class of at least 2
    (test) or 3 (val) images gives a split with a non-zero share at least one image, and train keeps at least one."""
    _, fv, ft = fractions
    n_val, n_test = int(n * fv + 0.5), int(n * ft + 0.5)
    if ft > 0 and n >= 2:
        n_test = max(n_test, 1)
    if fv > 0 and n >= 3:
        n_val = max(n_val, 1)
    while n_val + n_test > max(n - 1, 0):
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def auto_split(root: Path, fractions: tuple[float, ...] = SPLIT_FRACTIONS, split_seed: int = 0) -> dict[str, list]:
    """A plain folder of class folders split into ``train``, ``val`` and ``test`` entries: per class (stratified),
    its images in name order shuffled by a generator seeded with ``split_seed`` and the class name (a class added
    or removed leaves the others' splits as they were), then cut by :func:`split_counts`."""
    out: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    for label, c in enumerate(folder_classes(root)):
        files = _images(root / c)
        order = list(range(len(files)))
        random.Random(f"{split_seed}:{c}").shuffle(order)
        n_train, n_val, _ = split_counts(len(files), fractions)
        part = {i: "train" if k < n_train else "val" if k < n_train + n_val else "test" for k, i in enumerate(order)}
        for i, f in enumerate(files):
            out[part[i]].append(Entry(f"{c}/{f.name}", label, i + 1, root / c))
    return out


@FORMATS.register("folder")
class Folder(Layout):
    """Splits ``train``, ``val``, ``test``, each a folder of class folders, or made by vpeft from a plain folder of
    class folders (``data.split_fractions``, ``data.split_seed``); no augmentation."""

    markers = ("train", "test")
    splits_itself = True

    def entries(
        self,
        root: Path,
        split: str,
        shot: int = 16,
        seed: int = 0,
        fractions: tuple[float, ...] = SPLIT_FRACTIONS,
        split_seed: int = 0,
    ) -> tuple[list[Entry], Path]:
        classes = folder_classes(root)
        if not has_split_folders(root):
            if split not in SPLITS:
                raise DataError(f"{root} has no split folders: vpeft splits it into {', '.join(SPLITS)}, not {split!r}")
            out = auto_split(root, fractions, split_seed)[split]
            if not out:
                shares = ", ".join(f"{s} {f:g}" for s, f in zip(SPLITS, fractions))
                raise DataError(
                    f"{root}: the split vpeft made of its class folders has no {split} images "
                    f"(data.split_fractions: {shares}; {len(classes)} class folder(s))"
                )
            return out, root
        d = root / split
        if not d.is_dir():
            raise DataError(f"missing split folder {d}")
        out = []
        for label, c in enumerate(classes):
            for i, f in enumerate(_images(d / c) if (d / c).is_dir() else [], 1):
                out.append(Entry(f"{split}/{c}/{f.name}", label, i, d / c))
        if not out:
            raise DataError(f"split folder {d} holds no images in class sub-folders")
        return out, root

    def class_names(self, root: Path) -> list[str]:
        return folder_classes(root)

    def fits_unmarked(self, root: Path) -> bool:
        return not has_split_folders(Path(root)) and bool(_plain_classes(Path(root))[0])
