"""Plain cross-entropy on the classifier logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F

from ..registry import OBJECTIVES
from .base import Objective, ObjectiveConfig


@OBJECTIVES.register("ce")
@dataclass(kw_only=True)
class CEConfig(ObjectiveConfig):
    """Cross-entropy on the class logits.

    Args:
        label_smoothing: Label smoothing factor in [0, 1) (0 as in the papers' VTAB runs).
    """

    label_smoothing: float = 0.0

    soft_labels: ClassVar[bool] = True  # F.cross_entropy takes class probabilities (label_smoothing smooths them too)

    def __post_init__(self):
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def attach(self, backbone) -> CEObjective:
        return CEObjective(self)


class CEObjective(Objective):
    def __init__(self, cfg: CEConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, model, images, labels):
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        return {"loss": loss, "logits": logits, "ce": loss.detach()}
