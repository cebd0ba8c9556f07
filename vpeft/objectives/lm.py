"""``lm``: ATTEMPT's language-modelling loss on T5's label scores (issue 20, task ``text2text``).

A ``t5`` backbone scores each label string (:mod:`vpeft.families.t5`: the teacher-forced sum of its tokens'
log-probabilities, ``</s>`` included); the loss is the gold string's negative log-likelihood averaged over every
target token of the batch, which is exactly the loss transformers' T5 computes from ``labels=`` and ATTEMPT trains
with (:func:`vpeft.families.t5.lm_loss`). Evaluation predicts by scoring (the most likely label string) or, with
``prediction=generation``, by each greedy generation's label (ATTEMPT's prediction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..families.t5 import lm_loss
from ..registry import OBJECTIVES
from .base import Objective, ObjectiveConfig


@OBJECTIVES.register("lm")
@dataclass(kw_only=True)
class LMConfig(ObjectiveConfig):
    """ATTEMPT's loss: the gold label string's mean-token negative log-likelihood under T5 (task text2text).

    Args:
        prediction: How evaluation predicts: ``scoring`` (the most likely label string: GIST's KL needs these
            scores) or ``generation`` (greedy free generation, ATTEMPT's: a generated string that is no label
            string is wrong, and counts as a class of its own in F1 and MCC, as ATTEMPT's scoring of strings).
            Training is the same either way.
    """

    prediction: Literal["scoring", "generation"] = "scoring"

    tasks: ClassVar[tuple[str, ...]] = ("text2text", "text2text_regress")

    def attach(self, backbone) -> LMObjective:
        if getattr(backbone.model, "label_lengths", None) is None:
            raise ConfigError(f"objective 'lm' scores label strings: it needs a t5 backbone, not {backbone.spec!r}")
        return LMObjective(self)


class LMObjective(Objective):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, model, images, labels):
        scores = model(images)
        return {"loss": lm_loss(scores, labels, model.model.label_lengths), "logits": scores}

    def predict(self, model, images: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]``; with ``prediction=generation``, one-hot ``[B, C + 1]`` of each greedy generation's label
        (column C: a string that is no label string, never right)."""
        if self.cfg.prediction == "scoring":
            return model(images)
        t5 = model.model
        strings = t5.head.strings
        longest = max(int(n) for n in t5.label_lengths)
        generated = t5.generate(images, max_new_tokens=longest + 1)
        index = torch.tensor(
            [strings.index(g.strip()) if g.strip() in strings else len(strings) for g in generated],
            device=images.device,
        )
        return F.one_hot(index, len(strings) + 1).float()
