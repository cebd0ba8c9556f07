"""``regress``: one real-valued target per image (a list's label column holds numbers), a one-unit head trained with
mean squared error, scored by Pearson and Spearman correlation, MAE and MSE.

Pearson is the primary metric by default, as in STS-B and the image-quality benchmarks: it asks whether the
predictions order and space the images as the targets do, and does not reward a model for the targets' mean alone.
``primary`` picks another (``mae`` and ``mse`` are lower-is-better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch

from ..objectives.mse import mse_loss  # noqa: F401 - the task's loss, importable from here
from ..registry import TASKS
from .base import Batch, Metric, Task, TaskConfig

LOWER_IS_BETTER = ("mae", "mse")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation of two equal-length arrays; 0 where either is constant (no linear relation can be
    measured, and a selection rule needs a number)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    den = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / den) if den > 0 else 0.0


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks (scipy's ``rankdata`` ``average``)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]  # where each run of equal values starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]
    out = np.empty(len(x), np.float64)
    out[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's on the ranks, ties averaged."""
    return pearson(ranks(x), ranks(y))


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``pearson``, ``spearman``, ``mae`` and ``mse`` of predictions against targets."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    err = pred - target
    return {
        "pearson": pearson(pred, target),
        "spearman": spearman(pred, target),
        "mae": float(np.abs(err).mean()),
        "mse": float((err * err).mean()),
    }


class RegressionMetric(Metric):
    """Keeps every prediction and target of a split on the device; computes the metrics on the host at the end."""

    def __init__(self):
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        self.preds.append(outputs.detach()[..., 0].float())
        self.targets.append(batch["label"].detach().float())

    def _pairs(self) -> torch.Tensor:
        """``[N, 2]`` float64: prediction, target."""
        if not self.preds:
            return torch.zeros(0, 2, dtype=torch.float64)
        return torch.stack([torch.cat(self.preds), torch.cat(self.targets)], 1).double()

    def sync(self, dist) -> None:
        if not dist.enabled:
            return
        # Each process holds some pairs; every process gets all of them, in rank order (their order does not matter).
        mine = self._pairs()
        counts = [int(c) for c in dist.sum_floats([len(mine) if r == dist.rank else 0 for r in range(dist.world)])]
        start = sum(counts[: dist.rank])
        every = torch.zeros(sum(counts), 2, dtype=torch.float64, device=dist.device)
        every[start : start + len(mine)] = mine.to(dist.device)
        dist.sum_tensor_(every)
        self.preds, self.targets = [every[:, 0]], [every[:, 1]]

    def compute(self) -> dict[str, float]:
        pairs = self._pairs().cpu().numpy()
        if not len(pairs):
            return {"pearson": 0.0, "spearman": 0.0, "mae": float("nan"), "mse": float("nan")}
        return regression_metrics(pairs[:, 0], pairs[:, 1])


@TASKS.register("regress")
@dataclass(kw_only=True)
class RegressConfig(TaskConfig):
    """Regression of one real-valued target per image, scored by Pearson correlation by default.

    A one-unit head trained with mean squared error (objective ``mse``); metrics Pearson and Spearman correlation,
    MAE and MSE. The data's label column holds the targets (``vtab1k``, ``fewshot`` and ``csv`` lists).

    Args:
        primary: The metric that selects epochs (``train.select=val``) and grid points and heads the reports:
            ``pearson`` (the default, as STS-B), ``spearman``, or the lower-is-better ``mae`` or ``mse``.
    """

    primary: Literal["pearson", "spearman", "mae", "mse"] = "pearson"

    labels = "float"
    outputs = 1
    default_objective = "mse"
    objectives = ("mse", "gist")  # GIST: squared errors and an MSE interaction (gist_regression_loss)

    @property
    def primary_metric(self) -> str:
        return self.primary

    @property
    def higher_is_better(self) -> bool:
        return self.primary not in LOWER_IS_BETTER

    def build(
        self, normalize: str = "inception", augment: str = "none", size: Optional[tuple[int, int]] = None
    ) -> RegressTask:
        return RegressTask(self, normalize, augment, size)


class RegressTask(Task):
    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return mse_loss(outputs, batch["label"])

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[..., 0]

    def metric(self) -> RegressionMetric:
        return RegressionMetric()
