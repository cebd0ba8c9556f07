"""The objective contract (as timm's ``TrainingTask``).

An :class:`ObjectiveConfig` makes its :class:`Objective` in one declared step, :meth:`ObjectiveConfig.attach`, run
after the method: the only place an objective may change the model (GIST inserts its token there), and
:attr:`ObjectiveConfig.changes_model` says whether it does. ``Objective.forward(model, images, labels)`` returns a
dict holding ``loss`` (a scalar to minimise), ``logits`` (the prediction outputs) and any named loss parts, which the
trainer logs. ``labels`` are the batch's labels (class indices ``[B]``, or real values), or, in training with
``train.mixup``, ``train.cutmix`` or ``train.smoothing``, soft targets: class probabilities, float ``[B, C]``, which
only objectives whose config sets :attr:`ObjectiveConfig.soft_labels` receive (``F.cross_entropy`` takes either).
An objective may own parameters and whole models (iDAT's teacher, :meth:`Objective.companions`); the trainer steps
the trainable ones, counts the companions apart from the kept model, and records what
:meth:`Objective.extra_result` returns. Neither the trainer nor ``vpeft measure`` knows any objective by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config_base import BaseConfig


@dataclass(kw_only=True)
class ObjectiveConfig(BaseConfig):
    """Base of every objective config; :meth:`attach` makes the objective module for a given backbone.

    Class attributes:
        changes_model: :meth:`attach` adds modules or hooks to the backbone (GIST's token), so the trained model is
            not the method's alone: it cannot share a trunk with other runs (:class:`~vpeft.MultiTask`).
        tasks: The tasks it trains (``("regress",)``); unset: any task that does not name its objectives.
        soft_labels: ``forward`` also trains on soft targets (float ``[B, C]`` class probabilities) in place of class
            indices, as label mixing and smoothing give (``train.mixup``, ``cutmix``, ``smoothing``); a run with
            those options refuses an objective that does not set it.
    """

    name: ClassVar[str]
    changes_model: ClassVar[bool] = False
    soft_labels: ClassVar[bool] = False

    def attach(self, backbone) -> Objective:
        """Build the objective for ``backbone`` (with its method applied): the one step where it may change it."""
        raise NotImplementedError

    def companion_runs(self, method) -> dict[str, tuple[str, object]]:
        """Models the objective trains beside the kept one, as ``name -> (backbone spec, method spec)``, so that
        ``vpeft measure`` can also measure each alone (iDAT: ``{"teacher": (teacher, its method)}``)."""
        return {}

    def for_inference(self) -> ObjectiveConfig:
        """The objective to rebuild for evaluation (iDAT drops its teacher; GIST keeps its token)."""
        return self


class Objective(nn.Module):
    """An objective module. Subclasses implement :meth:`forward`; :meth:`predict` gives evaluation logits."""

    def forward(self, model, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, model, images: torch.Tensor) -> torch.Tensor:
        return model(images)

    def companions(self) -> dict[str, nn.Module]:
        """Models owned by the objective apart from the kept model (iDAT's teacher): counted apart, never saved
        with the run's trainable tensors."""
        return {}

    def extra_result(self, history: list[dict]) -> dict:
        """What ``result.json`` records about the objective beyond the shared keys, from the epoch log ``history``."""
        return {}

    def save_extra(self, run_dir) -> None:
        """Write files of the objective's own beside the run's ``trainable.safetensors`` (iDAT's teacher)."""
