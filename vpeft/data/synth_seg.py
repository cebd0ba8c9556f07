"""A generated segmentation task in the ``segfolder`` layout, deterministic by seed, written in a second or two (issue
18): for tests, CI and the demo, where Kvasir-SEG is not at hand.

Each image is a textured background (stripes, checks or smooth noise in two random colours) with one or two shapes
drawn over it, each a disc, a square or a blob (a union of three to five overlapping discs), filled with a texture of
other colours; the mask is 255 on every shape pixel and 0 elsewhere, drawn without anti-aliasing, so it is exactly
the pixels the shapes cover. About one image in twenty has no shape (an empty mask). Images and masks are PNG
(``images/<stem>.png``, ``masks/<stem>.png``); ``train.txt``, ``val.txt`` and ``test.txt`` list
``images/<stem>.png masks/<stem>.png`` lines, as Kvasir-SEG's lists do; ``suite.json`` says what was generated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Images per split by default (``test``: the ``n_test`` argument).
SPLITS = {"train": 240, "val": 60}
KINDS = ("disc", "square", "blob")
#: The share of images without any shape.
EMPTY_SHARE = 0.05


def _colour(rng: np.random.Generator, lo: int, hi: int) -> np.ndarray:
    return rng.integers(lo, hi, 3).astype(np.float64)


def _texture(rng: np.random.Generator, size: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """An RGB float ``[size, size, 3]`` texture between colours ``a`` and ``b``: stripes, checks or smooth noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    kind = int(rng.integers(0, 3))
    period = float(rng.uniform(3, 9))
    if kind == 0:  # stripes at a random angle
        angle = rng.uniform(0, np.pi)
        w = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    elif kind == 1:  # checks
        w = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float64)
    else:  # smooth noise: a coarse random grid upsampled
        cells = max(2, int(size / period))
        coarse = rng.uniform(0, 1, (cells, cells))
        w = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)) / 255.0
    return a + (b - a) * w[..., None]


def _draw_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, kind: str, size: int) -> None:
    r = rng.uniform(0.12, 0.25) * size
    cx, cy = rng.uniform(r, size - r, 2)
    if kind == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        for _ in range(int(rng.integers(3, 6))):
            q = r * rng.uniform(0.4, 0.7)
            ox, oy = rng.uniform(-0.6 * r, 0.6 * r, 2)
            draw.ellipse([cx + ox - q, cy + oy - q, cx + ox + q, cy + oy + q], fill=255)


def draw_pair(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image, list[str]]:
    """One image, its mask (``L``, 0 and 255) and the kinds of shape drawn."""
    mask = Image.new("L", (size, size), 0)
    kinds = [] if rng.uniform() < EMPTY_SHARE else [KINDS[int(rng.integers(0, 3))] for _ in range(rng.integers(1, 3))]
    draw = ImageDraw.Draw(mask)
    for kind in kinds:
        _draw_shape(draw, rng, kind, size)
    background = _texture(rng, size, _colour(rng, 0, 140), _colour(rng, 0, 140))
    objects = _texture(rng, size, _colour(rng, 120, 256), _colour(rng, 120, 256))
    on = np.asarray(mask) > 0
    pixels = np.where(on[..., None], objects, background)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)), mask, kinds


def generate_seg(
    out: str | Path,
    seed: int = 0,
    size: int = 32,
    n_test: int = 100,
    n_train: int = SPLITS["train"],
    n_val: int = SPLITS["val"],
) -> Path:
    """Write the task folder ``out`` (``images/``, ``masks/``, the three lists, ``suite.json``); the same seed, size
    and counts give byte-identical files (the images are drawn train, val, test in turn from one generator, so other
    training or validation counts change the test images too). Returns ``out``."""
    if not 8 <= size <= 1024:
        raise ValueError(f"image size must be in 8..1024 pixels, got {size}")
    if min(n_train, n_val, n_test) < 0:
        raise ValueError(f"image counts must be >= 0, got train {n_train}, val {n_val}, test {n_test}")
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 18])
    counts = {"train": n_train, "val": n_val, "test": n_test}
    shapes: dict[str, int] = dict.fromkeys(KINDS, 0)
    empty = 0
    for split, n in counts.items():
        lines = []
        for i in range(n):
            stem = f"{split}_{i:05d}"
            image, mask, kinds = draw_pair(rng, size)
            image.save(root / "images" / f"{stem}.png", optimize=False)
            mask.save(root / "masks" / f"{stem}.png", optimize=False)
            lines.append(f"images/{stem}.png masks/{stem}.png")
            empty += not kinds
            for k in kinds:
                shapes[k] += 1
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    about = {
        "layout": "segfolder",
        "task": "segment",
        "seed": seed,
        "size": size,
        "splits": counts,
        "shapes": shapes,
        "empty_masks": empty,
        "about": "one or two discs, squares or blobs on a textured background; masks 0/255, exactly the shapes",
    }
    (root / "suite.json").write_text(json.dumps(about, indent=1) + "\n")
    return root
