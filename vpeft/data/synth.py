"""Synthetic tasks in the VTAB-1K layout, deterministic by seed, generated in seconds.

They exercise the real loader end to end on data the project makes itself (no download):

* ``shapes``: which of 4 shapes (disc, square, triangle, cross) is drawn, under random colour, scale and position
  (a "Natural"-style object-recognition skill).
* ``count``: how many discs (1 to 4) are in the image, with random sizes, colours and positions
  (a "Structured"-style counting skill, in the spirit of Clevr-count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

SPLITS = {"train800": 800, "val200": 200}


def _colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    bg = rng.integers(0, 256, 3)
    fg = rng.integers(0, 256, 3)
    while np.abs(fg.astype(int) - bg.astype(int)).sum() < 200:  # keep the object visible
        fg = rng.integers(0, 256, 3)
    return tuple(int(v) for v in bg), tuple(int(v) for v in fg)


def _shape(draw: ImageDraw.ImageDraw, kind: int, cx: float, cy: float, r: float, fill) -> None:
    if kind == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == 1:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == 2:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        w = max(1.0, r / 2.5)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)


def _draw_shapes(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    bg, fg = _colours(rng)
    img = Image.new("RGB", (size, size), bg)
    r = rng.uniform(0.18, 0.32) * size
    cx, cy = rng.uniform(r, size - r, 2)
    _shape(ImageDraw.Draw(img), label, cx, cy, r, fg)
    return img


def _draw_count(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    bg, fg = _colours(rng)
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    placed: list[tuple[float, float, float]] = []
    while len(placed) < label + 1:
        r = rng.uniform(0.07, 0.12) * size
        cx, cy = rng.uniform(r, size - r, 2)
        if all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + 1) ** 2 for x, y, q in placed):
            placed.append((cx, cy, r))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    return img


TASKS: dict[str, tuple[Callable, list[str], str]] = {
    "shapes": (_draw_shapes, ["disc", "square", "triangle", "cross"], "which shape is drawn"),
    "count": (_draw_count, ["one", "two", "three", "four"], "how many discs there are"),
}


def generate_task(out: str | Path, task: str, seed: int = 0, size: int = 32, n_test: int = 500) -> Path:
    """Write one task folder ``out/<task>``; the same seed gives byte-identical files."""
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; known: {', '.join(TASKS)}")
    draw, classes, _ = TASKS[task]
    root = Path(out) / task
    rng = np.random.default_rng([seed, sorted(TASKS).index(task)])
    lists: dict[str, list[str]] = {}
    for split, n in {**SPLITS, "test": n_test}.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        labels = rng.permutation(np.arange(n) % len(classes))
        lines = []
        for i, label in enumerate(labels):
            rel = f"images/{split}/{i:06d}.png"
            draw(rng, int(label), size).save(root / rel, optimize=False)
            lines.append(f"{rel} {int(label)}")
        lists[split] = lines
    lists["train800val200"] = lists["train800"] + lists["val200"]
    for split, lines in lists.items():
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes)))
    return root


def generate(out: str | Path, tasks: list[str] | None = None, seed: int = 0, size: int = 32, n_test: int = 500):
    """Write several tasks; returns their folders."""
    return [generate_task(out, t, seed=seed, size=size, n_test=n_test) for t in (tasks or list(TASKS))]
