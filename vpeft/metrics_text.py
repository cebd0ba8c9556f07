"""GLUE's metrics, written in numpy (no scipy or sklearn at run time), and which ones each task reports (issue 20).

Every metric returns **percent** (×100, as GLUE, ATTEMPT and GIST report them) unless ``percent=False``, which
gives the raw value (accuracy and F1 in [0, 1], correlations in [-1, 1]). Inputs are equal-length sequences or
arrays; labels may be integers or strings (ATTEMPT scores decoded strings), compared with ``==``.

Parity with ATTEMPT (``attempt/metrics/metrics.py`` @ b5121e53, which calls sklearn and scipy):

* :func:`accuracy`: ``100 * mean(pred == target)`` (``:51-53``).
* :func:`f1`: ``f1_score_with_invalid`` (``:90-107``): binary F1 of the positive class 1; a prediction that is
  neither class (a generation that is no label string, -1 here) counts as wrong, i.e. as the opposite of its target
  (a false negative on a positive, a false positive on a negative). No true or predicted positive: 0 (sklearn's
  ``zero_division``).
* :func:`mcc`: ``sklearn.metrics.matthews_corrcoef`` (``:112-114``): the multiclass form (Gorodkin's R_K) over the
  labels present, so an invalid prediction is a class of its own; 0 where undefined (a constant column), as
  sklearn.
* :func:`pearson`, :func:`spearman`: ``scipy.stats.pearsonr`` / ``spearmanr`` (``:56-87``), Spearman with average
  ranks for ties; ATTEMPT replaces an undefined (NaN) value, e.g. from constant predictions, by 0, and so do these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _pair(pred, target, min_len: int = 1) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred), np.asarray(target)
    if p.ndim != 1 or t.ndim != 1 or len(p) != len(t):
        raise ValueError(f"predictions {p.shape} and targets {t.shape} must be 1-d and of the same length")
    if len(p) < min_len:
        raise ValueError(f"need at least {min_len} prediction(s), got {len(p)}")
    return p, t


def _scale(value: float, percent: bool) -> float:
    return 100.0 * value if percent else value


def accuracy(pred, target, percent: bool = True) -> float:
    """The share of predictions equal to their target."""
    p, t = _pair(pred, target)
    return _scale(float(np.mean(p == t)), percent)


def f1(pred, target, positive=1, negative=0, percent: bool = True) -> float:
    """Binary F1 of the ``positive`` class, ``2TP / (2TP + FP + FN)``; a prediction that is neither ``positive`` nor
    ``negative`` is wrong (ATTEMPT's ``f1_score_with_invalid``); targets must be one of the two. 0 when there is no
    positive at all."""
    p, t = _pair(pred, target)
    if not np.all((t == positive) | (t == negative)):
        raise ValueError(f"F1 targets must be {positive!r} or {negative!r}")
    invalid = (p != positive) & (p != negative)
    hit = p == positive
    tp = int(np.sum(hit & (t == positive)))
    fp = int(np.sum(hit & (t == negative))) + int(np.sum(invalid & (t == negative)))
    fn = int(np.sum(~hit & (t == positive)))
    den = 2 * tp + fp + fn
    return _scale(2 * tp / den if den else 0.0, percent)


def mcc(pred, target, percent: bool = True) -> float:
    """Matthews correlation coefficient, multiclass over the labels present (binary MCC for two classes):
    ``(c·s - t·p) / sqrt((s² - p·p)(s² - t·t))`` with ``c`` the correct count, ``s`` the total, ``t`` and ``p`` the
    per-class true and predicted counts; 0 where the denominator is 0."""
    p, t = _pair(pred, target)
    _, inverse = np.unique(np.concatenate([t, p]), return_inverse=True)
    ti, pi = inverse[: len(t)], inverse[len(t) :]
    k = int(inverse.max()) + 1
    t_sum = np.bincount(ti, minlength=k).astype(np.float64)
    p_sum = np.bincount(pi, minlength=k).astype(np.float64)
    correct, s = float(np.sum(ti == pi)), float(len(t))
    cov_tp = correct * s - float(t_sum @ p_sum)
    cov_pp = s * s - float(p_sum @ p_sum)
    cov_tt = s * s - float(t_sum @ t_sum)
    den = cov_pp * cov_tt
    return _scale(cov_tp / math.sqrt(den) if den > 0 else 0.0, percent)


def pearson(pred, target, percent: bool = True) -> float:
    """Pearson's r in float64; 0 where undefined (a constant or non-finite input), as ATTEMPT."""
    p, t = _pair(pred, target, min_len=2)
    p, t = p.astype(np.float64), t.astype(np.float64)
    dp, dt = p - p.mean(), t - t.mean()
    den = math.sqrt(float(dp @ dp) * float(dt @ dt))
    r = float(dp @ dt) / den if den > 0 else float("nan")
    r = max(-1.0, min(1.0, r)) if math.isfinite(r) else 0.0
    return _scale(r, percent)


def average_ranks(x) -> np.ndarray:
    """1-based ranks of ``x``, ties given the mean of the ranks they span (scipy's ``rankdata(method="average")``)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first sorted position of each distinct value
    ends = np.r_[starts[1:], len(x)]  # one past its last
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return ranks


def spearman(pred, target, percent: bool = True) -> float:
    """Spearman's rho: Pearson's r of the average ranks; 0 where undefined, as ATTEMPT."""
    p, t = _pair(pred, target, min_len=2)
    if not (np.all(np.isfinite(p.astype(np.float64))) and np.all(np.isfinite(t.astype(np.float64)))):
        return 0.0
    return pearson(average_ranks(p), average_ranks(t), percent)


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}
#: ATTEMPT's names of these metrics (``TASK_TO_METRICS``), for reading its logs.
ATTEMPT_NAMES = {"accuracy": "accuracy", "f1": "f1", "mcc": "matthews_correlation", "pearson": "pearson",
                 "spearman": "spearmanr"}  # fmt: skip


@dataclass(frozen=True)
class TaskMetrics:
    """Which metrics a GLUE task reports.

    Attributes:
        metrics: Those ATTEMPT computes and averages into ``average_metrics``, its model-selection score
            (``TASK_TO_METRICS``, ``metrics.py:14-27``; ``trainer.py:110-116``), in its order.
        primary: The one number of a results table (GIST's Table 3 and ATTEMPT's: "Pearson Correlation for STS-B
            and accuracy for other tasks", ``papers/gist.txt:337``, with CoLA's being Matthews correlation, the
            only metric ATTEMPT computes for it [inf]).
    """

    metrics: tuple[str, ...]
    primary: str


TASK_METRICS: dict[str, TaskMetrics] = {
    "cola": TaskMetrics(("mcc",), "mcc"),
    "sst2": TaskMetrics(("accuracy",), "accuracy"),
    "mrpc": TaskMetrics(("accuracy", "f1"), "accuracy"),
    "qqp": TaskMetrics(("accuracy", "f1"), "accuracy"),
    "stsb": TaskMetrics(("pearson", "spearman"), "pearson"),
    "mnli": TaskMetrics(("accuracy",), "accuracy"),
    "qnli": TaskMetrics(("accuracy",), "accuracy"),
    "rte": TaskMetrics(("accuracy",), "accuracy"),
    "wnli": TaskMetrics(("accuracy",), "accuracy"),
}


def task_metrics(task: str) -> TaskMetrics:
    """The metrics of GLUE task ``task`` (``rte``, ``SST-2``, ``sts-b``: case and ``-`` ignored)."""
    key = task.lower().replace("-", "").replace("_", "")
    if key not in TASK_METRICS:
        raise ValueError(f"unknown GLUE task {task!r}: expected one of {', '.join(TASK_METRICS)}")
    return TASK_METRICS[key]


def glue_scores(task: str, pred, target) -> dict[str, float]:
    """Every metric of ``task`` in percent, plus ``average`` (ATTEMPT's ``average_metrics``: their mean, its model
    selection score) and ``primary`` (the table's number). Classification: class indices (-1 or any other
    non-class value for an invalid prediction); STS-B: scores."""
    spec = task_metrics(task)
    out = {name: METRICS[name](pred, target) for name in spec.metrics}
    out["average"] = float(np.mean([out[n] for n in spec.metrics]))
    out["primary"] = out[spec.primary]
    return out


def string_to_float(text: str, default: float = -1.0) -> float:
    """``float(text)``, or ``default`` where it is not a number (ATTEMPT's ``postprocessors.string_to_float``)."""
    try:
        return float(text)
    except ValueError:
        return default


def attempt_scores(task: str, generated: Sequence[str], targets: Sequence[str]) -> dict[str, float]:
    """:func:`glue_scores` from decoded strings, as ATTEMPT computes them (``run_seq2seq.py:415-424``): both sides
    stripped; classes compared as strings (a generation that is no label string is wrong, and an MCC class of its
    own); STS-B's strings parsed with :func:`string_to_float` (-1 where not a number)."""
    spec = task_metrics(task)
    g = np.asarray([s.strip() for s in generated], dtype=object)
    t = np.asarray([s.strip() for s in targets], dtype=object)
    if "pearson" in spec.metrics:
        g = np.asarray([string_to_float(s) for s in g], dtype=np.float64)
        t = np.asarray([string_to_float(s) for s in t], dtype=np.float64)
    out = {}
    for name in spec.metrics:
        out[name] = f1(g, t, positive="1", negative="0") if name == "f1" else METRICS[name](g, t)
    out["average"] = float(np.mean([out[n] for n in spec.metrics]))
    out["primary"] = out[spec.primary]
    return out
