"""GLUE's metrics in numpy against values worked out by hand (and scipy / sklearn where installed), and the per-task
table as ATTEMPT reports it (issue 20)."""

import math

import numpy as np
import pytest

from vpeft.metrics_text import (
    ATTEMPT_NAMES,
    TASK_METRICS,
    accuracy,
    attempt_scores,
    average_ranks,
    f1,
    glue_scores,
    mcc,
    pearson,
    spearman,
    string_to_float,
    task_metrics,
)

PRED = [1, 1, 0, 0, 1]
TARGET = [1, 0, 1, 0, 1]  # TP = 2 (items 0, 4), FP = 1 (item 1), FN = 1 (item 2), TN = 1 (item 3)


def test_accuracy_in_percent_or_raw():
    assert accuracy(PRED, TARGET) == pytest.approx(60.0) and accuracy(PRED, TARGET, percent=False) == 0.6
    assert accuracy(["1", "0", "x"], ["1", "1", "0"]) == pytest.approx(100 / 3)


def test_f1_by_hand():
    assert f1(PRED, TARGET) == pytest.approx(100 * 2 * 2 / (2 * 2 + 1 + 1))  # 66.67
    assert f1([0, 0], [0, 0]) == 0.0 and f1([1, 1], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="F1 targets must be 1 or 0"):
        f1([1], [2])


def test_f1_counts_an_invalid_prediction_as_the_opposite_of_its_target():
    """ATTEMPT's f1_score_with_invalid: -1 on a positive is a false negative, on a negative a false positive."""
    pred, target = [-1, -1, 1, 0], [1, 0, 1, 0]  # TP 1 (item 2), FN 1 (item 0), FP 1 (item 1)
    assert f1(pred, target) == pytest.approx(100 * 2 / (2 + 1 + 1))  # 50, not the 66.67 of ignoring item 1
    assert f1(["1", "yes", "0"], ["1", "0", "1"], positive="1", negative="0") == pytest.approx(100 * 2 / (2 + 1 + 1))


def test_mcc_by_hand():
    binary = (2 * 1 - 1 * 1) / math.sqrt((2 + 1) * (2 + 1) * (1 + 1) * (1 + 1))  # (TP TN - FP FN) / sqrt(...) = 1/6
    assert mcc(PRED, TARGET) == pytest.approx(100 * binary) and mcc(PRED, TARGET, percent=False) == pytest.approx(1 / 6)
    # three classes: 4 correct of 6; true counts (2, 2, 2), predicted (2, 3, 1)
    t, p = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    num, pp, tt = 4 * 6 - (2 * 2 + 2 * 3 + 2 * 1), 36 - (4 + 9 + 1), 36 - (4 + 4 + 4)
    assert mcc(p, t) == pytest.approx(100 * num / math.sqrt(pp * tt))  # 52.22
    # an invalid prediction is a class of its own, as sklearn scores ATTEMPT's decoded strings
    t, p = [1, 0, 1, 0], [1, -1, 1, 0]  # true (0: 2, 1: 2), predicted (-1: 1, 0: 1, 1: 2), 3 correct
    num, pp, tt = 3 * 4 - (0 * 1 + 2 * 1 + 2 * 2), 16 - (1 + 1 + 4), 16 - (4 + 4)
    assert mcc(p, t) == pytest.approx(100 * num / math.sqrt(pp * tt))
    assert mcc([1, 1, 1], [0, 1, 0]) == 0.0 and mcc([0, 1], [0, 1]) == pytest.approx(100.0)


def test_pearson_and_spearman_by_hand():
    # x mean 2.5, y mean 5: sum dx dy = 11, sum dx^2 = 5, sum dy^2 = 26
    assert pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(100 * 11 / math.sqrt(5 * 26))
    assert pearson([1, 2, 3, 4], [2, 4, 5, 9], percent=False) == pytest.approx(0.964764, abs=1e-6)
    assert average_ranks([10, 20, 20, 5, 20]) == pytest.approx([2, 4, 4, 1, 4])
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4), y ranks (1, 3, 2, 4); sum dx dy 4.5, dx^2 4.5, dy^2 5
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(100 * 4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-100.0)


def test_undefined_correlations_are_zero_as_attempt():
    assert pearson([3, 3, 3], [1, 2, 3]) == 0.0 and spearman([1, 2, 3], [2, 2, 2]) == 0.0
    assert pearson([1, float("nan"), 3], [1, 2, 3]) == 0.0 and spearman([1, float("nan"), 3], [1, 2, 3]) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        pearson([1], [1])
    with pytest.raises(ValueError, match="same length"):
        accuracy([1, 0], [1])


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 200) / 2  # many ties
    y = x + rng.normal(0, 1, 200)
    assert pearson(x, y, percent=False) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y, percent=False) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert average_ranks(x) == pytest.approx(stats.rankdata(x))


def test_against_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    p3 = np.where(rng.random(300) < 0.1, 2, p)
    assert f1(p, t, percent=False) == pytest.approx(metrics.f1_score(t, p))
    assert mcc(p, t, percent=False) == pytest.approx(metrics.matthews_corrcoef(t, p))
    assert mcc(p3, t, percent=False) == pytest.approx(metrics.matthews_corrcoef(t, p3))


def test_the_task_table():
    assert task_metrics("CoLA") == TASK_METRICS["cola"] and TASK_METRICS["cola"].metrics == ("mcc",)
    assert TASK_METRICS["mrpc"].metrics == TASK_METRICS["qqp"].metrics == ("accuracy", "f1")
    assert TASK_METRICS["stsb"].metrics == ("pearson", "spearman") and task_metrics("sts-b").primary == "pearson"
    assert {t for t, m in TASK_METRICS.items() if m.metrics == ("accuracy",)} == {"sst2", "mnli", "qnli", "rte", "wnli"}
    assert [ATTEMPT_NAMES[m] for m in ("mcc", "spearman")] == ["matthews_correlation", "spearmanr"]
    with pytest.raises(ValueError, match="unknown GLUE task 'ax'"):
        task_metrics("ax")


def test_glue_scores_average_the_task_metrics():
    got = glue_scores("mrpc", PRED, TARGET)
    assert got == pytest.approx({"accuracy": 60.0, "f1": 200 / 3, "average": (60 + 200 / 3) / 2, "primary": 60.0})
    assert glue_scores("cola", PRED, TARGET)["primary"] == pytest.approx(100 / 6)


def test_attempt_scores_from_decoded_strings():
    got = attempt_scores("qqp", [" 1", "0 ", "maybe", "1"], ["1", "1", "0", "1"])
    # accuracy 2/4; F1: TP 2, FN 1 (item 1), FP 1 ("maybe" on a negative)
    assert got["accuracy"] == pytest.approx(50.0) and got["f1"] == pytest.approx(100 * 4 / (4 + 1 + 1))
    stsb = attempt_scores("stsb", ["1.0", "2.0", "high", "4.0"], ["1.2", "1.8", "3.0", "4.0"])
    assert stsb["pearson"] == pytest.approx(pearson([1.0, 2.0, -1.0, 4.0], [1.2, 1.8, 3.0, 4.0]))
    assert string_to_float("x") == -1.0 and string_to_float(" 2.5 ") == 2.5
    cola = attempt_scores("cola", ["1", "0", "1", "none"], ["1", "0", "0", "0"])
    assert cola["mcc"] == pytest.approx(mcc([1, 0, 1, -1], [1, 0, 0, 0]))
