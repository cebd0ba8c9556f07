"""Synthetic tasks in the VTAB-1K layout, deterministic by seed, generated in seconds.

They exercise the real loader end to end on data the project makes itself (no download), and cover the kinds of
skill of VTAB's three groups:

* ``shapes`` (Natural-like, object recognition): which of 4 shapes (disc, square, triangle, cross) is drawn, under
  random colour, scale and position.
* ``texture`` (Specialized-like, texture recognition as DTD/EuroSAT): which of 4 textures fills the image
  (horizontal stripes, vertical stripes, checkerboard, dots), with random period, phase and colours.
* ``count`` (Structured, as Clevr-count): how many discs (1 to 4) are in the image.
* ``location`` (Structured, as dSprites-location): in which quadrant a square sits (4 classes).
* ``orientation`` (Structured, as dSprites-orientation): the angle of a bar, in 6 bins of 30 degrees.
* ``distance`` (Structured, as Clevr-distance): how far from the image centre the nearest of 2-3 discs is
  (4 bins).

One regression task (the ``regress`` task's test data; its lists hold a number per image instead of a class):

* ``disc_size``: the radius of a light disc on a dark background, as a share of the image side (0.08 to 0.4).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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


def _draw_texture(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    bg, fg = _colours(rng)
    period = int(rng.integers(4, 9))
    phase = int(rng.integers(0, period))
    yy, xx = np.mgrid[0:size, 0:size]
    half = period // 2
    if label == 0:
        on = ((yy + phase) % period) < half
    elif label == 1:
        on = ((xx + phase) % period) < half
    elif label == 2:
        on = (((xx + phase) // half + (yy + phase) // half) % 2) == 0
    else:
        on = (((xx + phase) % period - half) ** 2 + ((yy + phase) % period - half) ** 2) <= max(1, (half / 1.5) ** 2)
    img = np.where(on[..., None], np.array(fg, np.uint8), np.array(bg, np.uint8))
    return Image.fromarray(img.astype(np.uint8))


def _draw_location(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    bg, fg = _colours(rng)
    img = Image.new("RGB", (size, size), bg)
    cell = size / 2
    r = rng.uniform(0.1, 0.15) * size
    cy, cx = (label // 2 + rng.uniform(0.35, 0.65)) * cell, (label % 2 + rng.uniform(0.35, 0.65)) * cell
    ImageDraw.Draw(img).rectangle([cx - r, cy - r, cx + r, cy + r], fill=fg)
    return img


def _draw_orientation(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    bg, fg = _colours(rng)
    img = Image.new("RGB", (size, size), bg)
    angle = np.deg2rad((label + rng.uniform(0.15, 0.85)) * 30.0)  # bins of 30 degrees over 0-180
    length, width = rng.uniform(0.3, 0.42) * size, max(2.0, 0.08 * size)
    cx, cy = rng.uniform(0.4, 0.6, 2) * size
    dx, dy = np.cos(angle) * length, -np.sin(angle) * length
    ImageDraw.Draw(img).line([cx - dx, cy - dy, cx + dx, cy + dy], fill=fg, width=int(width))
    return img


def _draw_distance(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    bg, fg = _colours(rng)
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    c, r = size / 2, 0.06 * size
    edges = np.array([0.0, 0.11, 0.21, 0.31, 0.42]) * size  # distance bins from the centre
    far = c - r - 0.5  # the farthest a disc may sit and stay inside the image

    def disc(d):
        a = rng.uniform(0, 2 * np.pi)
        x, y = c + d * np.cos(a), c + d * np.sin(a)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fg)

    d = rng.uniform(edges[label] + 0.3, edges[label + 1] - 0.3)
    disc(d)  # the nearest disc sets the class
    for _ in range(int(rng.integers(1, 3))):  # others lie farther out, where there is room
        if d + 2 * r < far:
            disc(rng.uniform(d + 2 * r, far))
    return img


TASKS: dict[str, tuple[Callable, list[str], str]] = {
    "shapes": (_draw_shapes, ["disc", "square", "triangle", "cross"], "which shape is drawn"),
    "texture": (_draw_texture, ["h-stripes", "v-stripes", "checker", "dots"], "which texture fills the image"),
    "count": (_draw_count, ["one", "two", "three", "four"], "how many discs there are"),
    "location": (
        _draw_location,
        ["top-left", "top-right", "bottom-left", "bottom-right"],
        "which quadrant holds the square",
    ),
    "orientation": (_draw_orientation, [f"{30 * i}-{30 * i + 30}deg" for i in range(6)], "the bar's angle bin"),
    "distance": (_draw_distance, ["near", "mid", "far", "farthest"], "distance of the nearest disc to the centre"),
}


def _draw_disc_size(rng: np.random.Generator, size: int) -> tuple[Image.Image, float]:
    """A light disc on a dark background, and its radius as a share of the side (written with 4 decimals)."""
    target = round(float(rng.uniform(0.08, 0.4)), 4)
    r = target * size
    cx, cy = rng.uniform(r, size - r, 2)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 60, 3)))
    fg = tuple(int(v) for v in rng.integers(180, 256, 3))
    ImageDraw.Draw(img).ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    return img, target


#: Generated regression tasks: name -> (draw(rng, size) -> (image, target), what the target is).
REGRESSION_TASKS: dict[str, tuple[Callable, str]] = {
    "disc_size": (_draw_disc_size, "the disc's radius as a share of the image side"),
}

#: A fixed number per task for its random stream: adding a task never changes another task's images.
TASK_IDS = {"count": 0, "shapes": 1, "texture": 2, "location": 3, "orientation": 4, "distance": 5, "disc_size": 6}


def generate_task(out: str | Path, task: str, seed: int = 0, size: int = 32, n_test: int = 500) -> Path:
    """Write one task folder ``out/<task>`` (a classification task of :data:`TASKS`, whose lists hold class labels
    and which has a ``classes.txt``, or a regression task of :data:`REGRESSION_TASKS`, whose lists hold targets); the
    same seed gives byte-identical files."""
    if task not in TASKS and task not in REGRESSION_TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; known: {', '.join([*TASKS, *REGRESSION_TASKS])}")
    root = Path(out) / task
    rng = np.random.default_rng([seed, TASK_IDS[task]])
    lists: dict[str, list[str]] = {}
    for split, n in {**SPLITS, "test": n_test}.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        if task in TASKS:
            draw, classes, _ = TASKS[task]
            for i, label in enumerate(rng.permutation(np.arange(n) % len(classes))):
                rel = f"images/{split}/{i:06d}.png"
                draw(rng, int(label), size).save(root / rel, optimize=False)
                lines.append(f"{rel} {int(label)}")
        else:
            for i in range(n):
                rel = f"images/{split}/{i:06d}.png"
                img, target = REGRESSION_TASKS[task][0](rng, size)
                img.save(root / rel, optimize=False)
                lines.append(f"{rel} {target:.4f}")
        lists[split] = lines
    lists["train800val200"] = lists["train800"] + lists["val200"]
    for split, lines in lists.items():
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    if task in TASKS:
        (root / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(TASKS[task][1])))
    return root


def generate(out: str | Path, tasks: list[str] | None = None, seed: int = 0, size: int = 32, n_test: int = 500):
    """Write several tasks (default: every classification task); returns their folders."""
    return [generate_task(out, t, seed=seed, size=size, n_test=n_test) for t in (tasks or list(TASKS))]
