"""``lm``: ATTEMPT's language-modelling loss on T5's label scores (issue 20, task ``text2text``).

A ``t5`` backbone scores each label string (:mod:`vpeft.families.t5`: the teacher-forced sum of its tokens'
log-probabilities, ``</s>`` included); the loss is the gold string's negative log-likelihood averaged over every
target token of the batch, which is exactly the loss transformers' T5 computes from ``labels=`` and ATTEMPT trains
with (:func:`vpeft.families.t5.lm_loss`). The logits the metrics read are the scores (prediction by scoring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import ConfigError
from ..families.t5 import lm_loss
from ..registry import OBJECTIVES
from .base import Objective, ObjectiveConfig


@OBJECTIVES.register("lm")
@dataclass(kw_only=True)
class LMConfig(ObjectiveConfig):
    """ATTEMPT's loss: the gold label string's mean-token negative log-likelihood under T5 (task text2text)."""

    tasks: ClassVar[tuple[str, ...]] = ("text2text",)

    def attach(self, backbone) -> LMObjective:
        if getattr(backbone.model, "label_lengths", None) is None:
            raise ConfigError(f"objective 'lm' scores label strings: it needs a t5 backbone, not {backbone.spec!r}")
        return LMObjective()


class LMObjective(Objective):
    def forward(self, model, images, labels):
        scores = model(images)
        return {"loss": lm_loss(scores, labels, model.model.label_lengths), "logits": scores}
