"""Mean squared error: the loss of tasks with real-valued targets (``regress``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..registry import OBJECTIVES
from .base import Objective, ObjectiveConfig


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a one-unit head's ``outputs`` ``[B, 1]`` against ``targets`` ``[B]``, in float32."""
    return F.mse_loss(outputs[..., 0].float(), targets.float())


@OBJECTIVES.register("mse")
@dataclass(kw_only=True)
class MSEConfig(ObjectiveConfig):
    """Mean squared error of a one-unit head against real-valued targets: the ``regress`` task's loss."""

    tasks: ClassVar[tuple[str, ...]] = ("regress", "text_regress")

    def attach(self, backbone) -> MSEObjective:
        return MSEObjective()


class MSEObjective(Objective):
    def forward(self, model, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = model(images)
        loss = mse_loss(outputs, labels)
        return {"loss": loss, "logits": outputs, "mse": loss.detach()}
