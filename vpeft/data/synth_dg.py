"""A generated domain-generalisation suite: one source task and shifted target domains made by the same generator,
deterministic by seed, generated in seconds (issue 17).

It stands in for DTL's and NOAH's protocol (train on ImageNet, test on ImageNet-Sketch, -V2, -A, -R) in tests, the
demo and CI. The class is what the image shows, not how it is drawn: which of :data:`SHAPES`, how many copies and
how large (:data:`LABEL_RULE`; 128 classes), so that the label space is large ("1000-way-style") and every style
keeps it. The styles:

* ``photo`` (the source): a filled bright shape on a dark plain background, hues from red to cyan.
* ``sketch``: the shape's outline only, dark on light paper (as ImageNet-Sketch).
* ``colour``: unseen hues (blue to magenta) and the polarity reversed, a dark shape on a light background.
* ``texture``: the source's hues and contrast, but the shape and the background are filled with stripes, checks or
  dots instead of plain colour.
* ``mixed``: each image in one of the three shifted styles at random (as ImageNet-R's renditions).

Folders written under the root: ``source`` (the VTAB-1K layout: ``train800``, ``val200``, ``train800val200`` and
``test`` lists of 32 px PNGs), one ``target_<name>`` per entry of :data:`TARGETS` with a ``test.txt``, and ``fewshot``
(the source's style in NOAH's few-shot layout: training lists per shot and list seed, for few-shot sweeps over list
seeds). The
``subset`` target covers only a quarter of the classes (as ImageNet-A and -R cover 200 of ImageNet's 1000), so a
model's accuracy there differs between an argmax over every class and one over the classes present
(:func:`vpeft.metrics_dg.accuracy_all_and_present`). Every folder has a ``classes.txt`` naming the whole label space
(a target's model still has every class); ``suite.json`` at the root describes the folders, their styles, sizes and
the classes each one covers.
"""

from __future__ import annotations

import colorsys
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: What defines the class: which shape is drawn (all survive the sketch style's outline), how many copies (1 to 4,
#: each in its own quadrant) and how large (a radius bin, as a share of a quadrant's side). These are what a small
#: ViT picks up in a few epochs from the mean of its patch tokens; where an object sits is not (it learns that only
#: after tens of epochs), so position is random and no part of the class.
SHAPES = ("disc", "square", "triangle", "nabla", "diamond", "cross", "hbar", "vbar")
COUNTS = (1, 2, 3, 4)
SIZES = {"xs": (0.14, 0.18), "s": (0.2, 0.24), "m": (0.27, 0.31), "l": (0.35, 0.4)}
NUM_CLASSES = len(SHAPES) * len(COUNTS) * len(SIZES)
LABEL_RULE = (
    f"label = (shape * {len(COUNTS)} + count - 1) * {len(SIZES)} + size (shapes: {', '.join(SHAPES)}; "
    f"sizes: {', '.join(SIZES)})"
)
#: Source splits and their sizes (VTAB-1K).
SPLITS = {"train800": 800, "val200": 200}
#: Target name -> (style, share of the classes it covers, what the shift is).
TARGETS: dict[str, tuple[str, float, str]] = {
    "sketch": ("sketch", 1.0, "outline only, dark on light paper"),
    "colour": ("colour", 1.0, "unseen hues, polarity reversed"),
    "texture": ("texture", 1.0, "striped, checked or dotted fills instead of plain colour"),
    "subset": ("mixed", 0.25, "a quarter of the classes, each image in one of the shifted styles"),
}
#: A fixed number per folder for its random stream: adding a target never changes another folder's images.
FOLDER_IDS = {"source": 0, "sketch": 1, "colour": 2, "texture": 3, "subset": 4, "fewshot": 5}
#: The generated few-shot task (NOAH's layout, read by ``data.format=fewshot``): training lists of these shots, drawn
#: with these list seeds from a pool of ``FEWSHOT_POOL`` source-style images per class.
FEWSHOT_SHOTS = (1, 2, 4)
FEWSHOT_SEEDS = (0, 1, 2)
FEWSHOT_POOL = 8


def class_factors(label: int) -> tuple[str, int, str]:
    """The shape, count and size bin of a label."""
    rest, size = divmod(label, len(SIZES))
    shape, count = divmod(rest, len(COUNTS))
    return SHAPES[shape], COUNTS[count], list(SIZES)[size]


def class_name(label: int) -> str:
    """``<count>x<shape>-<size>`` of a label, e.g. ``2xdisc-s`` for 5."""
    shape, count, size = class_factors(label)
    return f"{count}x{shape}-{size}"


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array([round(255 * c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v)], np.uint8)


def _pick(rng: np.random.Generator, hues: tuple[float, float], values: tuple[float, float]) -> np.ndarray:
    return _rgb(rng.uniform(*hues), rng.uniform(0.35, 1.0), rng.uniform(*values))


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """A boolean stripes, checks or dots pattern of random period and phase."""
    period = int(rng.integers(2, 6))
    phase = int(rng.integers(0, period))
    yy, xx = np.mgrid[0:size, 0:size] + phase
    half = max(1, period // 2)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return (yy % period) < half
    if kind == 1:
        return (xx % period) < half
    if kind == 2:
        return ((xx // half + yy // half) % 2) == 0
    return ((xx % period) < half) & ((yy % period) < half)  # dots


def _fill(rng: np.random.Generator, size: int, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """A ``size`` x ``size`` x 3 plane of colour ``a``, or a pattern of ``a`` and ``b``."""
    if b is None:
        return np.broadcast_to(a, (size, size, 3))
    return np.where(_pattern(rng, size)[..., None], a, b)


#: Corners of the polygonal shapes, in units of the object's radius around its centre (t: a bar's half width).
_T = 0.45
POLYGONS = {
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0, -1), (1, 1), (-1, 1)],
    "nabla": [(-1, -1), (1, -1), (0, 1)],
    "diamond": [(0, -1), (1, 0), (0, 1), (-1, 0)],
    "cross": [
        (-_T, -1),
        (_T, -1),
        (_T, -_T),
        (1, -_T),
        (1, _T),
        (_T, _T),
        (_T, 1),
        (-_T, 1),
        (-_T, _T),
        (-1, _T),
        (-1, -_T),
        (-_T, -_T),
    ],
    "hbar": [(-1, -_T), (1, -_T), (1, _T), (-1, _T)],
    "vbar": [(-_T, -1), (_T, -1), (_T, 1), (-_T, 1)],
}


def _mask(rng: np.random.Generator, label: int, size: int, outline: bool) -> np.ndarray:
    """The objects' pixels: ``count`` copies of the shape, filled or as outlines, each in its own quadrant at a
    random place, with one radius drawn from the size bin."""
    shape, count, bin_ = class_factors(label)
    step = size / 2
    r = rng.uniform(*SIZES[bin_]) * step
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    kw = {"outline": 255} if outline else {"fill": 255}
    for q in rng.permutation(4)[:count]:
        cx = q % 2 * step + rng.uniform(r + 0.5, step - r - 0.5)
        cy = q // 2 * step + rng.uniform(r + 0.5, step - r - 0.5)
        if shape == "disc":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], **kw)
        else:
            draw.polygon([(cx + r * x, cy + r * y) for x, y in POLYGONS[shape]], **kw)
    return np.asarray(img) > 0


#: Hue ranges: the source's (red to cyan) and the colour target's (blue to magenta) do not overlap.
SOURCE_HUES, OTHER_HUES = (0.0, 0.45), (0.55, 0.95)
DARK, BRIGHT = (0.1, 0.4), (0.75, 1.0)
STYLES = ("photo", "sketch", "colour", "texture")


def render(rng: np.random.Generator, label: int, size: int, style: str) -> Image.Image:
    """One image of class ``label`` in ``style`` (one of :data:`STYLES`, or ``mixed``: a shifted one at random)."""
    if style == "mixed":
        style = STYLES[1 + int(rng.integers(0, len(STYLES) - 1))]
    if style == "photo":
        bg, fg = _fill(rng, size, _pick(rng, SOURCE_HUES, DARK)), _fill(rng, size, _pick(rng, SOURCE_HUES, BRIGHT))
    elif style == "sketch":
        paper, ink = int(rng.integers(215, 256)), int(rng.integers(0, 70))
        bg, fg = _fill(rng, size, np.full(3, paper, np.uint8)), _fill(rng, size, np.full(3, ink, np.uint8))
    elif style == "colour":
        bg, fg = _fill(rng, size, _pick(rng, OTHER_HUES, BRIGHT)), _fill(rng, size, _pick(rng, OTHER_HUES, DARK))
    elif style == "texture":
        bg = _fill(rng, size, _pick(rng, SOURCE_HUES, DARK), _pick(rng, SOURCE_HUES, (0.0, 0.2)))
        fg = _fill(rng, size, _pick(rng, SOURCE_HUES, BRIGHT), _pick(rng, SOURCE_HUES, (0.55, 0.8)))
    else:
        raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLES)}, mixed")
    on = _mask(rng, label, size, outline=style == "sketch")
    return Image.fromarray(np.where(on[..., None], fg, bg).astype(np.uint8))


def _write_split(
    folder: Path, split: str, labels: np.ndarray, rng: np.random.Generator, size: int, style: str
) -> list[str]:
    (folder / "images" / split).mkdir(parents=True, exist_ok=True)
    lines = []
    for i, label in enumerate(labels):
        rel = f"images/{split}/{i:06d}.png"
        render(rng, int(label), size, style).save(folder / rel, optimize=False)
        lines.append(f"{rel} {int(label)}")
    (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return lines


def _balanced(rng: np.random.Generator, classes: np.ndarray, n: int) -> np.ndarray:
    """``n`` labels cycling through ``classes`` (each as often as the count allows), shuffled."""
    return rng.permutation(classes[np.arange(n) % len(classes)])


def generate_dg(root: str | Path, seed: int = 0, size: int = 32, n_test: int = 500, n_target: int = 500) -> dict:
    """Write the suite under ``root`` (``source``, ``target_<name>`` for each of :data:`TARGETS`, ``suite.json``);
    the same arguments give byte-identical files.

    Args:
        root: The folder to write into (created if needed).
        seed: Seed of every random stream (one per folder).
        size: Image side in pixels.
        n_test: Images in the source's ``test`` list.
        n_target: Images in each target's ``test`` list.

    Returns:
        The suite's description, as written to ``suite.json``.
    """
    root = Path(root)
    classes_txt = "".join(f"{i} {class_name(i)}\n" for i in range(NUM_CLASSES))
    everything = np.arange(NUM_CLASSES)

    def folder_of(name: str) -> Path:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "classes.txt").write_text(classes_txt)
        return folder

    source, rng = folder_of("source"), np.random.default_rng([seed, FOLDER_IDS["source"]])
    lists = {s: _write_split(source, s, _balanced(rng, everything, n), rng, size, "photo") for s, n in SPLITS.items()}
    test = _write_split(source, "test", _balanced(rng, everything, n_test), rng, size, "photo")
    train = lists["train800"] + lists["val200"]
    (source / "train800val200.txt").write_text("\n".join(train) + "\n")
    suite: dict = {
        "name": "synth_dg",
        "seed": seed,
        "size": size,
        "num_classes": NUM_CLASSES,
        "labels": LABEL_RULE,
        "source": {
            "folder": "source",
            "style": "photo",
            "splits": {**{s: len(v) for s, v in lists.items()}, "train800val200": len(train), "test": len(test)},
            "present": sorted({int(x.rsplit(maxsplit=1)[1]) for x in train}),
        },
        "targets": {},
    }
    for name, (style, share, shift) in TARGETS.items():
        folder, rng = folder_of(f"target_{name}"), np.random.default_rng([seed, FOLDER_IDS[name]])
        covered = everything if share >= 1 else np.sort(rng.choice(everything, round(share * NUM_CLASSES), False))
        lines = _write_split(folder, "test", _balanced(rng, covered, n_target), rng, size, style)
        present = sorted({int(x.rsplit(maxsplit=1)[1]) for x in lines})
        suite["targets"][name] = {
            "folder": folder.name,
            "style": style,
            "shift": shift,
            "test": len(lines),
            "num_present": len(present),
            "present": present,
        }
    suite["fewshot"] = _write_fewshot(folder_of("fewshot"), seed, size)
    (root / "suite.json").write_text(_compact_json(suite))
    return suite


def _write_fewshot(folder: Path, seed: int, size: int) -> dict:
    """A few-shot task in NOAH's layout under ``folder``: ``annotations/train_meta.list.num_shot_<k>.seed_<s>`` for
    every shot of :data:`FEWSHOT_SHOTS` and list seed of :data:`FEWSHOT_SEEDS` (``k`` images of every class drawn from
    a pool of :data:`FEWSHOT_POOL` per class; a seed's smaller lists are not nested in its larger ones, as NOAH's are
    drawn), ``val_meta.list`` and ``test_meta.list`` (one and two images per class), images in the source's style."""
    everything, rng = np.arange(NUM_CLASSES), np.random.default_rng([seed, FOLDER_IDS["fewshot"]])
    pool = _write_split(folder, "pool", np.repeat(everything, FEWSHOT_POOL), rng, size, "photo")
    val = _write_split(folder, "val", everything, rng, size, "photo")
    test = _write_split(folder, "test", np.repeat(everything, 2), rng, size, "photo")
    for split in ("pool", "val", "test"):
        (folder / f"{split}.txt").unlink()  # the lists are NOAH's, under annotations/
    notes = folder / "annotations"
    notes.mkdir(exist_ok=True)
    by_class: dict[int, list[str]] = {}
    for line in pool:
        by_class.setdefault(int(line.rsplit(maxsplit=1)[1]), []).append(line)
    for list_seed in FEWSHOT_SEEDS:
        draw = np.random.default_rng([seed, FOLDER_IDS["fewshot"], list_seed])
        for shot in FEWSHOT_SHOTS:
            lines = [by_class[c][i] for c in everything for i in sorted(draw.choice(FEWSHOT_POOL, shot, replace=False))]
            (notes / f"train_meta.list.num_shot_{shot}.seed_{list_seed}").write_text("\n".join(lines) + "\n")
    (notes / "val_meta.list").write_text("\n".join(val) + "\n")
    (notes / "test_meta.list").write_text("\n".join(test) + "\n")
    return {
        "folder": folder.name,
        "format": "fewshot",
        "shots": list(FEWSHOT_SHOTS),
        "list_seeds": list(FEWSHOT_SEEDS),
        "val": len(val),
        "test": len(test),
    }


def _compact_json(obj) -> str:
    """``obj`` as indented JSON with each list of numbers on one line."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s+([\d,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"
