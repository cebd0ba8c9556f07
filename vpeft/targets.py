"""Extra test sets of a run (``data.extra_tests``): target domains evaluated after training, as domain generalisation
reports them (ImageNet 16-shot training, tested on ImageNet-V2, -Sketch, -A, -R; DTL's Table 4).

A target is a task folder of any layout whose labels use the run's classes. Where a target covers only some of them
(ImageNet-A and -R: 200 of the 1,000), two accuracies differ, and both are recorded:

* ``accuracy_present``: the argmax over the classes present in the target's list only (the official protocol of
  ImageNet-A and -R, and vpeft's default headline, ``classes: present``);
* ``accuracy_all``: the argmax over every class of the model (what NOAH's and DTL's code do, so what the DTL paper's
  Table 4 reports; ``classes: all`` makes it the headline, recorded and warned).

On a target that covers every class the two are the same number.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from .data.entries import detect_format, entries_for
from .data.sources import augment_kind, decode_size
from .data.vtab import crop_center, decode_chunks
from .errors import ConfigError, DataError
from .metrics_dg import accuracy_all_and_present
from .run import amp_context

Classes = Literal["present", "all"]
LAYOUT_KEYS = ("lists_root", "image_root", "image_roots", "lists")
ALL_CLASSES_WARNING = (
    "target {name!r}: classes=all scores the argmax over all {n} classes of the model although the target has only "
    "{k} (as NOAH's and DTL's code do); the benchmark's own protocol restricts it to the classes present "
    "(classes=present)"
)


@dataclass
class Target:
    """One extra test set: ``root`` (a task folder), its ``split`` (default ``test``), ``format`` (``auto``: detected)
    and which accuracy heads its record (``classes``)."""

    name: str
    root: str
    split: str = "test"
    format: str = "auto"
    classes: Classes = "present"
    #: A ``lists`` target's own list and image roots (``lists_root``, ``image_root``, ``image_roots``, ``lists``).
    layout: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, name: str, spec) -> Target:
        """A target from ``data.extra_tests``' value: a folder path, or a mapping with ``root`` and the options."""
        if isinstance(spec, str):
            spec = {"root": spec}
        if not isinstance(spec, dict) or not spec.get("root"):
            raise ConfigError(f"data.extra_tests.{name}: give a folder, or a mapping with 'root' (got {spec!r})")
        unknown = set(spec) - {"root", "split", "format", "classes", *LAYOUT_KEYS}
        if unknown:
            raise ConfigError(
                f"data.extra_tests.{name}: unknown key(s) {', '.join(sorted(unknown))} "
                f"(valid: root, split, format, classes, {', '.join(LAYOUT_KEYS)})"
            )
        if spec.get("classes", "present") not in ("present", "all"):
            raise ConfigError(f"data.extra_tests.{name}.classes must be 'present' or 'all', got {spec['classes']!r}")
        layout = {k: spec[k] for k in LAYOUT_KEYS if k in spec}
        return cls(name=name, **{k: str(v) for k, v in spec.items() if k not in LAYOUT_KEYS}, layout=layout)

    def to_dict(self) -> dict:
        return {"root": self.root, "split": self.split, "format": self.format, "classes": self.classes, **self.layout}


def parse_targets(extra_tests: dict) -> list[Target]:
    return [Target.parse(name, spec) for name, spec in (extra_tests or {}).items()]


def target_data(dc, target: Target):
    """The run's data config pointed at ``target`` (its root, layout and test split; everything else the run's)."""
    root = Path(target.root)
    if not root.is_dir():
        raise DataError(
            f"target {target.name!r}: data folder {root} does not exist" + (", it is a file" if root.is_file() else "")
        )
    # The run's data options but the target's own folder, layout and list roots (a source's lists options are not
    # the target's).
    own = {"lists_root": None, "image_root": None, "image_roots": {}, "lists": {}} | target.layout
    base = {**dc.to_dict(), **own, "root": str(root), "test_split": target.split, "extra_tests": {}}
    fmt = target.format
    if fmt == "auto":
        fmt = "lists" if any(target.layout.values()) else detect_format(root)
    return type(dc).from_dict({**base, "format": fmt})


def check_target(dc, target: Target, num_classes: int):
    """The target's data config, entries and image root, checked without decoding: its folder and list are there,
    list images, and every label is one of the run's ``num_classes`` classes (a failure names the file and line).
    The trainer calls it before training; :func:`evaluate_target` reads the target through it."""
    tdc = target_data(dc, target)
    entries, image_root = entries_for(tdc, target.split)
    if not entries:
        raise DataError(f"target {target.name!r}: split {target.split!r} of {tdc.root} lists no images")
    for e in entries:
        if not 0 <= e.label < num_classes:
            raise DataError(
                f"{e.source}:{e.line}: label {e.label} is outside the class range 0..{num_classes - 1} "
                f"of the run (target {target.name!r})"
            )
    return tdc, entries, image_root


@torch.no_grad()
def evaluate_target(
    model, objective, task, dc, target: Target, size, num_classes: int, batch_size: int, device, amp: str = "none"
) -> dict:
    """Both accuracies of the model on ``target`` and its headline one; labels outside the model's classes, an empty
    list or a missing image fail naming the file and line."""
    tdc, entries, image_root = check_target(dc, target, num_classes)
    present = sorted({int(e.label) for e in entries})
    if target.classes == "all" and len(present) < num_classes:
        warnings.warn(ALL_CLASSES_WARNING.format(name=target.name, n=num_classes, k=len(present)), stacklevel=2)
    # Decoded a chunk at a time (data.eval_memory_mb), so a target of any size fits; each chunk as the test split is
    # prepared: decoded at the run's size (or larger and centre-cropped, for the augmented layouts).
    dsize = decode_size(tdc, size)
    chunk = max(1, int(dc.eval_memory_mb * 2**20 // (3 * dsize[0] * dsize[1])))
    crop = augment_kind(tdc) != "none"
    was_training = model.training
    model.eval(), objective.eval()
    logits, labels = [], []  # [N, classes] in float32 on the host: 200 MB for ImageNet val's 50,000 images
    with amp_context(device, amp):
        for images, part in decode_chunks(entries, image_root, dsize, chunk):
            images = crop_center(images, size) if crop else images
            y = torch.tensor([e.label for e in part], dtype=torch.int64)
            for i in range(0, len(part), batch_size):
                batch = {"image": images[i : i + batch_size].to(device), "label": y[i : i + batch_size].to(device)}
                batch = task.prepare(batch, train=False)
                logits.append(objective.predict(model, batch["image"]).float().cpu())
            labels.append(y)
    model.train(was_training), objective.train(was_training)
    labels = torch.cat(labels)
    n = len(labels)
    acc = accuracy_all_and_present(torch.cat(logits), labels, present)
    acc_all, acc_present = acc["all"], acc["present"]
    return {
        "accuracy": acc_present if target.classes == "present" else acc_all,
        "accuracy_all": acc_all,
        "accuracy_present": acc_present,
        "images": n,
        "classes_present": len(present),
        **target.to_dict(),
        "format": tdc.format,
    }
