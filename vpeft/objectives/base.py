"""The objective contract (as timm's ``TrainingTask``): ``forward(model, images, labels)`` returns a dict.

The dict holds ``loss`` (a scalar to minimise), ``logits`` (the prediction logits) and any named loss parts, which
the trainer logs. An objective may own parameters (a token, a teacher model); the trainer steps the trainable ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config_base import BaseConfig


@dataclass(kw_only=True)
class ObjectiveConfig(BaseConfig):
    """Base of every objective config; :meth:`build` makes the objective module for a given backbone."""

    name: ClassVar[str]

    def build(self, backbone) -> "Objective":
        raise NotImplementedError

    def for_inference(self) -> "ObjectiveConfig":
        """The objective to rebuild for evaluation (iDAT drops its teacher; GIST keeps its token)."""
        return self


class Objective(nn.Module):
    """An objective module. Subclasses implement :meth:`forward`; :meth:`predict` gives evaluation logits."""

    def forward(self, model, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, model, images: torch.Tensor) -> torch.Tensor:
        return model(images)

    def save_extra(self, run_dir) -> None:
        """Write files of the objective's own beside the run's ``trainable.safetensors`` (iDAT's teacher)."""
