"""``classify``: image classification, the papers' VTAB-1K, FGVC and few-shot protocol (top-1 accuracy, CE)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..data.entries import infer_num_classes, layout_options
from ..data.suites import canonical_classes
from ..registry import TASKS
from .base import MIXING_OPTIONS, Batch, Metric, Task, TaskConfig


class Accuracy(Metric):
    """Top-1 accuracy in percent, counted on the device: ``correct`` and ``total`` are host numbers after
    :meth:`sync`."""

    def __init__(self):
        self.correct: torch.Tensor | int = 0
        self.total = 0

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        labels = batch["label"]
        self.correct = self.correct + (outputs.detach().argmax(-1) == labels).sum()
        self.total += len(labels)

    def sync(self, dist) -> None:
        self.correct = int(self.correct)  # the split's one read of the device
        if dist.enabled:  # each process counted its share of every batch
            self.correct, self.total = (int(v) for v in dist.sum_floats([self.correct, self.total]))

    def compute(self) -> dict[str, float]:
        return {"accuracy": 100.0 * int(self.correct) / max(self.total, 1)}


@TASKS.register("classify")
@dataclass(kw_only=True)
class ClassifyConfig(TaskConfig):
    """Image classification: a linear head over the classes, cross-entropy, top-1 accuracy (in percent).

    The number of classes is ``data.num_classes``, else ``classes.txt``'s line count, else 1 + the largest label (a
    VTAB-1K task whose data disagrees with the canonical count gets the data's, with a warning). In training,
    ``train.mixup``, ``train.cutmix`` and ``train.smoothing`` turn the labels into soft targets (timm's ``Mixup``);
    the training accuracy still counts the hard labels.
    """

    head_key = "num_classes"
    mixes_labels = True

    @property
    def primary_metric(self) -> str:
        return "accuracy"

    def log_key(self, split: str) -> str:
        return f"{split}_acc"

    def num_outputs(self, data, splits: list[str]) -> int:
        if data.num_classes:
            return data.num_classes
        n = infer_num_classes(data.root, splits, data.format, data.shot, data.fewshot_seed, layout_options(data))
        name = Path(data.root).resolve().name  # `--data .` names the folder, not ""
        canonical = canonical_classes(name)
        if canonical is not None and canonical != n:
            warnings.warn(f"{data.root}: the data has {n} classes where VTAB-1K's {name} has {canonical}; using {n}")
        return n

    def build(
        self, normalize: str = "inception", augment: str = "none", size: Optional[tuple[int, int]] = None
    ) -> ClassifyTask:
        return ClassifyTask(self, normalize, augment, size)


class ClassifyTask(Task):
    def configure_training(self, data, train, num_classes: int, objective=None) -> None:
        super().configure_training(data, train, num_classes, objective)
        if any(getattr(train, n, 0) for n in MIXING_OPTIONS):
            from ..data.augment import Mixing  # timm.data: imported only when mixing

            self._mixing = Mixing(
                num_classes,
                mixup=train.mixup,
                cutmix=train.cutmix,
                prob=train.mixup_prob,
                switch_prob=train.mixup_switch_prob,
                smoothing=train.smoothing,
            )

    def prepare(self, batch: Batch, train: bool, generator: Optional[torch.Generator] = None) -> dict:
        """As :meth:`Task.prepare`; in training with mixing or smoothing, the images mixed (timm's ``Mixup``, its
        parameters drawn from ``generator``) and ``"target"`` the soft targets; ``"label"`` stays as it was."""
        out = super().prepare(batch, train, generator)
        if train and self._mixing is not None and len(out["image"]):
            out["image"], out["target"] = self._mixing(out["image"], out["label"], generator)
        return out

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(outputs, batch.get("target", batch["label"]))  # soft targets where mixed

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(-1)

    def metric(self) -> Accuracy:
        return Accuracy()

    def result_keys(self, test: Metric, val: Optional[dict]) -> dict:
        return {
            "test_acc": test.compute()["accuracy"],
            "test_correct": test.correct,
            "test_total": test.total,
            "val_acc": val["accuracy"] if val is not None else None,
        }
