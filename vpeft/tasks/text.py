"""Text tasks on token ids (issue 20): ``text_classify`` (GLUE's classification tasks) and ``text_regress`` (STS-B).

The data are a text layout's splits (``glue``), tokenised when loaded by the run's backbone
(:meth:`TextClassifyConfig.text_encoder`: the family's tokenizer at the backbone's ``max_length``, a spec key:
``hf_text:PATH:max_length=256``), so a batch is ``{"image":
token ids int64 [B, L], "label": ...}`` and the model (a ``hf_text`` backbone) computes its attention mask from the
ids. No augmentation, no normalisation. ``text_classify`` reports accuracy, F1 of class 1 (binary tasks) and
Matthews correlation, in percent (:mod:`vpeft.metrics_text`, as GLUE reports them); ``primary`` picks the one that
selects and heads the reports (CoLA: ``mcc``; MRPC, QQP: ``f1`` or ``accuracy``). ``text_regress`` is ``regress``
on token ids (Pearson, Spearman, MAE, MSE). On a ``t5`` backbone, ``text2text`` classifies by the label strings
("0", "1", ...) and ``text2text_regress`` is STS-B as strings ("0.0" ... "5.0"), both with ATTEMPT's formatting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch

from ..data.entries import layout
from ..data.glue import STSB_ROUNDING, attempt_input, label_strings, stsb_target
from ..errors import ConfigError
from ..metrics_text import accuracy, f1, mcc
from ..registry import TASKS
from .base import Batch, Metric
from .classify import ClassifyConfig, ClassifyTask
from .regress import RegressConfig, RegressionMetric, RegressTask


def _encoder(backbone, task: str) -> Callable:
    encode = getattr(backbone, "text_encoder", None) or getattr(getattr(backbone, "model", None), "text_encoder", None)
    if encode is None:
        raise ConfigError(
            f"task {task!r} reads text: it needs a text backbone (hf_text:..., whose tokenizer encodes it), not "
            f"{getattr(backbone, 'spec', type(backbone).__name__)!r}"
        )
    return encode(None)  # at the backbone's max_length (its spec key: hf_text:PATH:max_length=256)


class TextClassMetric(Metric):
    """Every prediction and label of a split on the device; accuracy, F1 (class 1) and MCC on the host."""

    def __init__(self):
        self.preds: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        self.preds.append(outputs.detach().argmax(-1))
        self.labels.append(batch["label"].detach())

    def sync(self, dist) -> None:
        if dist.enabled:
            raise ConfigError("text tasks do not run under torchrun yet")

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.preds:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return torch.cat(self.preds).cpu().numpy(), torch.cat(self.labels).cpu().numpy()

    @property
    def correct(self) -> int:
        p, y = self._arrays()
        return int((p == y).sum())

    @property
    def total(self) -> int:
        return int(sum(len(y) for y in self.labels))

    def compute(self) -> dict[str, float]:
        p, y = self._arrays()
        if not len(y):
            return {"accuracy": 0.0, "f1": 0.0, "mcc": 0.0}
        return {"accuracy": accuracy(p, y), "f1": f1(p, y), "mcc": mcc(p, y)}


@TASKS.register("text_classify")
@dataclass(kw_only=True)
class TextClassifyConfig(ClassifyConfig):
    """Text classification (GLUE): a linear head on the encoder's [CLS] state, cross-entropy; accuracy, F1 of class
    1 and Matthews correlation (percent). Reads a text layout (``glue``) with a text backbone (``hf_text``).

    Args:
        primary: The metric that selects epochs and heads the reports: ``accuracy``, ``f1`` (MRPC, QQP) or ``mcc``
            (CoLA).
    """

    primary: Literal["accuracy", "f1", "mcc"] = "accuracy"

    inputs = "text"
    mixes_labels = False

    @property
    def primary_metric(self) -> str:
        return self.primary

    def text_encoder(self, backbone, data=None) -> Callable:
        return _encoder(backbone, self.name)

    def build(self, normalize: str = "inception", augment: str = "none", size: Optional[tuple[int, int]] = None):
        return TextClassifyTask(self, normalize, "none", size)


class TextClassifyTask(ClassifyTask):
    def prepare(self, batch: Batch, train: bool, generator: Optional[torch.Generator] = None) -> dict:
        """Token ids as they are (no augmentation, no normalisation)."""
        return dict(batch)

    def metric(self) -> TextClassMetric:
        return TextClassMetric()

    def result_keys(self, test: Metric, val: Optional[dict]) -> dict:
        metrics = test.compute()
        return {
            "test_acc": metrics["accuracy"],
            "test_correct": test.correct,
            "test_total": test.total,
            "val_acc": val["accuracy"] if val is not None else None,
        }


@TASKS.register("text_regress")
@dataclass(kw_only=True)
class TextRegressConfig(RegressConfig):
    """Text regression (STS-B): a one-unit head on the [CLS] state, mean squared error; Pearson (primary),
    Spearman, MAE, MSE. Reads a text layout (``glue``) with a text backbone (``hf_text``).
    """

    inputs = "text"

    def text_encoder(self, backbone, data=None) -> Callable:
        return _encoder(backbone, self.name)

    def build(self, normalize: str = "inception", augment: str = "none", size: Optional[tuple[int, int]] = None):
        return TextRegressTask(self, normalize, "none", size)


class TextRegressTask(RegressTask):
    def prepare(self, batch: Batch, train: bool, generator: Optional[torch.Generator] = None) -> dict:
        """Token ids as they are (no augmentation, no normalisation)."""
        return dict(batch)


@TASKS.register("text2text")
@dataclass(kw_only=True)
class Text2TextConfig(TextClassifyConfig):
    """T5 text-to-text classification (ATTEMPT's GLUE setting): the input formatted as ATTEMPT does ("sentence1: ...
    sentence2: ..."), the label index as the target string ("0", "1", ...), trained with ATTEMPT's loss (objective
    ``lm``: the gold string's mean-token negative log-likelihood); predicted by scoring the label strings (the most
    likely one), or with ``lm:prediction=generation`` by greedy free generation (ATTEMPT's); accuracy, F1, MCC as
    ``text_classify``. Needs a ``t5`` backbone and a ``glue`` folder (its GLUE task fixes the input fields); STS-B in
    this form is ``text2text_regress``.

    Args:
        primary: ``accuracy``, ``f1`` (MRPC, QQP) or ``mcc`` (CoLA).
    """

    default_objective = "lm"

    def text_encoder(self, backbone, data=None) -> Callable:
        return _attempt_encoder(backbone, self.name, data)


def _attempt_encoder(backbone, name: str, data) -> Callable:
    """The backbone's tokenizer on ATTEMPT's formatting of each example ("sentence1: ... sentence2: ...")."""
    encode = _encoder(backbone, name)
    if data is None:
        raise ConfigError(f"task {name} formats its inputs by the GLUE task: it needs the run's data section")
    task = layout(data.format).task(data.root, getattr(data, "glue_task", None))

    def formatted(rows):
        return encode([attempt_input(task, tuple(r) if not isinstance(r, str) else (r,)) for r in rows])

    return formatted


class StringScoreMetric(RegressionMetric):
    """Pearson, Spearman, MAE and MSE of the scores the predicted label strings spell (``"3.4"`` -> 3.4) against the
    examples' scores; a prediction that is no label string (free generation's extra column) reads -1.0, as ATTEMPT's
    ``string_to_float``."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.values = values  # each label string's number, then -1.0 for no label string

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        index = outputs.detach().argmax(-1)
        self.preds.append(self.values.to(index.device)[index].float())
        self.targets.append(batch["score"].detach().float())


@TASKS.register("text2text_regress")
@dataclass(kw_only=True)
class Text2TextRegressConfig(TextRegressConfig):
    """STS-B in T5's text-to-text form (ATTEMPT's): the score becomes a string (``rounding=attempt``: ATTEMPT's
    ``np.round((label * 5) / 5, decimals=1)``, 51 strings ``"0.0"`` ... ``"5.0"``; ``t5``: T5's steps of 0.2, 26
    strings), each label string is a class the ``t5`` model scores, trained with ATTEMPT's loss (objective ``lm``)
    on the gold string; evaluation reads the predicted string's number (scoring: the most likely label string;
    ``lm:prediction=generation``: the greedy generation, -1.0 where it is no label string) and reports Pearson
    (primary), Spearman, MAE and MSE against the examples' own scores (ATTEMPT compares with the rounded target
    strings; the difference is the rounding's, at most 0.05). Needs a ``t5`` backbone and a ``glue`` folder of STS-B.

    Args:
        rounding: ``attempt`` (0.1, 51 label strings) or ``t5`` (0.2, 26).
        primary: The metric that selects epochs and heads the reports: ``pearson``, ``spearman``, ``mae`` or
            ``mse``.
    """

    rounding: Literal["attempt", "t5"] = "attempt"

    default_objective = "lm"
    objectives = ("lm", "gist")

    def __post_init__(self):
        if self.rounding not in STSB_ROUNDING:
            raise ConfigError(f"task text2text_regress: rounding {self.rounding!r} is not one of {STSB_ROUNDING}")

    @property
    def outputs(self) -> int:
        return len(label_strings("stsb", self.rounding))

    def text_encoder(self, backbone, data=None) -> Callable:
        return _attempt_encoder(backbone, self.name, data)

    def configure_model(self, backbone, class_names: Optional[list[str]]) -> None:
        super().configure_model(backbone, class_names)
        if not hasattr(backbone.model, "set_labels"):
            raise ConfigError(
                f"task {self.name} scores STS-B's label strings with a decoder: it needs a t5 backbone, not "
                f"{backbone.spec!r} (an encoder regresses the score with --task text_regress)"
            )
        backbone.model.set_labels(list(label_strings("stsb", self.rounding)))

    def build(self, normalize: str = "inception", augment: str = "none", size: Optional[tuple[int, int]] = None):
        return Text2TextRegressTask(self, normalize, "none", size)


class Text2TextRegressTask(TextRegressTask):
    def __init__(self, cfg: Text2TextRegressConfig, *args):
        super().__init__(cfg, *args)
        self.strings = list(label_strings("stsb", cfg.rounding))
        self.index = {s: i for i, s in enumerate(self.strings)}
        self.values = torch.tensor([*map(float, self.strings), -1.0], dtype=torch.float64)

    def prepare(self, batch: Batch, train: bool, generator: Optional[torch.Generator] = None) -> dict:
        """The score's label string as the class (``label``: its index); the score itself stays as ``score``."""
        out = dict(batch)
        scores = batch["label"]
        if scores.is_floating_point():
            classes = [self.index[stsb_target(v, self.cfg.rounding)] for v in scores.double().tolist()]
            out["label"], out["score"] = torch.tensor(classes, device=scores.device), scores
        return out

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs, batch["label"])

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """The score each prediction's label string spells (-1.0: no label string)."""
        return self.values.to(outputs.device)[outputs.argmax(-1)].float()

    def metric(self) -> StringScoreMetric:
        return StringScoreMetric(self.values)
