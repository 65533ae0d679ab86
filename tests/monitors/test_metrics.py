"""monitors.metrics, the one definition of every metric: exact values on hand-made rows, the undefined cases and
their reasons, and a contract test that the trainers, the performance monitor and the gate give the same numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from controller.loop.gate import GateConfig, PairedSample, PromotionGate
from monitors import PerformanceConfig, PerformanceMonitor
from monitors.metrics import (
    EPS,
    HIGHER_IS_BETTER,
    ROW_METRICS,
    classification_metrics,
    regression_metrics,
    resolve_positive_class,
    row_scores,
    task_metrics,
)
from tests.monitors.conftest import make_window
from trainers.metrics import evaluate

MAX_LOSS = -math.log(EPS)  # a probability of 0, clipped: about 34.54


def mean_log_loss(*probabilities: float) -> float:
    return -sum(math.log(p) for p in probabilities) / len(probabilities)


# ---------------------------------------------------------------------------------------------------------------
# Exact values


def test_binary_metrics_by_hand():
    proba = np.array([[0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.1, 0.9]])
    m = classification_metrics([1, 0, 1, 1], [1, 0, 0, 1], proba, [0, 1])
    assert m["accuracy"] == 0.75
    assert m["f1"] == pytest.approx(0.8)  # TP 2, FN 1, FP 0
    assert m["roc_auc"] == pytest.approx(2 / 3)  # positives 0.8, 0.3, 0.9 against the negative's 0.4
    assert m["log_loss"] == pytest.approx(mean_log_loss(0.8, 0.6, 0.3, 0.9))
    assert m.undefined == {} and m.scored_rows == 4 and list(m) == ["accuracy", "f1", "roc_auc", "log_loss"]


def test_regression_metrics_by_hand():
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.0, 5.0])  # errors -0.5, 0, 1, -1
    assert m.values == pytest.approx({"mae": 0.625, "rmse": 0.75, "r2": 1 - 2.25 / 5})
    assert task_metrics("regression", [1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.0, 5.0]).values == m.values


def test_nan_predictions_leave_every_regression_metric_undefined():
    m = regression_metrics([1.0, 2.0, 3.0], [1.0, np.nan, 3.0])
    assert m.values == {"mae": None, "rmse": None, "r2": None} and m.defined() == {}
    why = m.undefined["mae"]
    assert why.why == "the predictions are NaN or inf on 1 rows" and not why.more_rows_help
    # Per row, the NaN stays on its row: the other rows keep their value.
    assert np.isnan(row_scores("mae", [1.0, 2.0, 3.0], [1.0, np.nan, 3.0])).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="the labels contain NaN or inf on 1 rows"):
        regression_metrics([1.0, np.inf], [1.0, 2.0])


def test_a_class_missing_from_the_probabilities_had_probability_zero():
    scores = pd.DataFrame({"a": [0.5, 0.5], "b": [0.5, 0.5]})  # the model knows a and b; the second label is c
    m = classification_metrics(["a", "c"], ["a", "a"], scores)
    assert m["accuracy"] == 0.5
    assert m["log_loss"] == pytest.approx((math.log(2) + MAX_LOSS) / 2)
    assert m["f1"] == pytest.approx((2 / 3 + 0) / 2)  # three classes: macro over a and c (b occurs nowhere)
    assert m["roc_auc"] == 0.5  # a: tied scores; c: no column, probability 0 on every row
    assert row_scores("log_loss", ["a", "c"], None, scores).tolist() == pytest.approx([math.log(2), MAX_LOSS])


def test_text_and_integer_labels_are_one_class():
    # The store keeps JSON: score keys are text ("0", "1"); labels or predictions may be either.
    scores = pd.DataFrame({"0": [0.3, 0.6, 0.6, 0.9], "1": [0.7, 0.4, 0.4, 0.1]})
    text = classification_metrics(["1", "0", "1", "0"], [1, 0, 0, 0], scores)
    ints = classification_metrics([1, 0, 1, 0], ["1", "0", "0", "0"], scores.to_numpy(), [0, 1])
    assert text.values == ints.values == pytest.approx(
        {"accuracy": 0.75, "f1": 2 / 3, "roc_auc": 0.875, "log_loss": mean_log_loss(0.7, 0.6, 0.4, 0.9)})
    assert row_scores("accuracy", ["a", "b", 1], ["a", "c", "1"]).tolist() == [1.0, 0.0, 1.0]


def test_one_class_windows():
    proba = np.array([[0.1, 0.9], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics([1, 1, 1], [1, 1, 0], proba, [0, 1])
    assert m["accuracy"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(0.8)
    assert m["log_loss"] == pytest.approx(mean_log_loss(0.9, 0.8, 0.4))
    assert m["roc_auc"] is None and m.undefined["roc_auc"].why == "only one class (1) among the labels"
    assert m.undefined["roc_auc"].more_rows_help

    # Only 0 so far, and nothing says which class is positive: more rows (a 1) will tell.
    zeros = classification_metrics([0, 0], [0, 0])
    assert zeros["accuracy"] == 1.0 and zeros["f1"] is None
    assert zeros.undefined["f1"].more_rows_help and not zeros.undefined["f1"].needs_setting
    # Known to be 0/1: the positive class 1 occurs nowhere, so f1 is 0/0, not 0.
    known = classification_metrics([0, 0], [0, 0], classes=[0, 1])
    assert known["f1"] is None and "neither among the labels nor the predictions" in known.undefined["f1"].why

    constant = regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert constant["r2"] is None and constant.undefined["r2"].why == "the labels are constant"
    assert constant["mae"] == pytest.approx(2 / 3) and constant["rmse"] == pytest.approx(math.sqrt(2 / 3))


def test_binary_labels_without_a_resolvable_positive_class():
    labels, predictions = ["UP", "DOWN", "UP", "DOWN"], ["UP", "UP", "UP", "DOWN"]
    scores = pd.DataFrame({"DOWN": [0.2, 0.4, 0.3, 0.9], "UP": [0.8, 0.6, 0.7, 0.1]})
    m = classification_metrics(labels, predictions, scores)
    assert m["accuracy"] == 0.75 and m["log_loss"] == pytest.approx(mean_log_loss(0.8, 0.4, 0.7, 0.9))
    assert m["f1"] is None and m["roc_auc"] is None
    why = m.undefined["f1"]
    assert why.needs_setting and not why.more_rows_help
    assert why.why.startswith("cannot tell the positive class among ['DOWN', 'UP']")
    assert "set monitors.performance.positive_class in the policy to one of them" in why.why

    up = classification_metrics(labels, predictions, scores, positive_class="UP")
    assert (up["f1"], up["roc_auc"]) == (pytest.approx(0.8), 1.0)
    down = classification_metrics(labels, predictions, scores, positive_class="DOWN")
    assert (down["f1"], down["roc_auc"]) == (pytest.approx(2 / 3), 1.0)
    wrong = classification_metrics(labels, predictions, scores, positive_class="yes")
    assert wrong.undefined["f1"].needs_setting
    assert "positive_class 'yes' is not one of the classes ['DOWN', 'UP']" in wrong.undefined["f1"].why


def test_the_positive_class_resolver():
    assert resolve_positive_class([0, 1]) == 1 and resolve_positive_class([False, True]) is True
    assert resolve_positive_class(["0", "1"]) == "1"
    assert resolve_positive_class([0, 1], 0) == 0 and resolve_positive_class(["0", "1"], 1) == "1"
    assert resolve_positive_class(["ham"], "spam") == "spam"  # not occurred yet
    with pytest.raises(ValueError, match=r"cannot tell the positive class among \['DOWN', 'UP'\]"):
        resolve_positive_class(["DOWN", "UP"])


def test_rows_without_scores_are_not_scored_and_a_missing_cell_is_probability_zero():
    scores = pd.DataFrame({0: [0.9, np.nan, 0.2], 1: [0.1, np.nan, np.nan]})
    m = classification_metrics([0, 1, 1], [0, 1, 0], scores)
    assert m.scored_rows == 2 and m["accuracy"] == pytest.approx(2 / 3)
    assert m["log_loss"] == pytest.approx((-math.log(0.9) + MAX_LOSS) / 2)
    assert m["roc_auc"] == 0.0  # the positive row got 0, the negative 0.1
    none_scored = classification_metrics([0, 1], [0, 1], pd.DataFrame({0: [np.nan] * 2, 1: [np.nan] * 2}))
    assert none_scored["log_loss"] is None and none_scored.scored_rows == 0
    assert none_scored.undefined["log_loss"].why == "none of the 2 rows has class probabilities"
    no_proba = classification_metrics([0, 1], [0, 1])
    assert no_proba.scored_rows is None and "no class probabilities" in no_proba.undefined["roc_auc"].why


def test_no_rows_is_undefined_everywhere():
    for m in (classification_metrics([], []), regression_metrics([], [])):
        assert set(m.values.values()) == {None}
        assert {u.why for u in m.undefined.values()} == {"no rows to score"}


def test_multiclass_matches_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    proba = rng.dirichlet([1, 1, 1], 300)
    predictions = proba.argmax(axis=1)
    m = classification_metrics(labels, predictions, proba, [0, 1, 2])
    assert m["f1"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, proba, multi_class="ovr", average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(labels, proba))


# ---------------------------------------------------------------------------------------------------------------
# Per-row scores


def test_row_scores_are_the_per_row_values_whose_mean_is_the_metric():
    rng = np.random.default_rng(1)
    labels, proba = rng.integers(0, 2, 50), rng.dirichlet([1, 1], 50)
    predictions = rng.integers(0, 2, 50)
    m = classification_metrics(labels, predictions, proba, [0, 1])
    assert row_scores("accuracy", labels, predictions).mean() == m["accuracy"]
    assert row_scores("log_loss", labels, predictions, proba, [0, 1]).mean() == pytest.approx(m["log_loss"])
    y, p = rng.normal(size=50), rng.normal(size=50)
    r = regression_metrics(y, p)
    assert row_scores("mae", y, p).mean() == r["mae"]
    assert math.sqrt(row_scores("rmse", y, p).mean()) == r["rmse"]  # the squared error: its mean is the MSE
    assert row_scores("log_loss", [1, 0], None, np.array([[0.0, 1.0], [np.nan, np.nan]]), [0, 1]).tolist()[0] == 0.0
    assert ROW_METRICS == {"accuracy", "log_loss", "mae", "rmse"}
    assert HIGHER_IS_BETTER == {"accuracy", "f1", "roc_auc", "r2"}


@pytest.mark.parametrize(
    ("metric", "message"),
    [("f1", "f1 is not a mean of per-row values"), ("roc_auc", "roc_auc is not a mean"), ("r2", "r2 is not a mean"),
     ("bogus", "unknown metric 'bogus'; per-row metrics: accuracy, log_loss, mae, rmse")],
)
def test_row_scores_refuse_metrics_that_are_not_per_row(metric, message):
    with pytest.raises(ValueError, match=message):
        row_scores(metric, [1, 0], [1, 1])


def test_bad_input_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"proba has shape \(2, 3\), expected \(2, 2\)"):
        classification_metrics([0, 1], [0, 1], np.ones((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="name a class twice"):
        classification_metrics([0, 1], [0, 1], pd.DataFrame({1: [0.5, 0.5], "1": [0.5, 0.5]}))
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        classification_metrics([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="needs the class probabilities"):
        row_scores("log_loss", [0, 1], [0, 1])
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        task_metrics("ranking", [0], [0])


# ---------------------------------------------------------------------------------------------------------------
# Contract: the trainers, the performance monitor and the gate give the same number for the same rows


@pytest.mark.parametrize(("task", "names", "positive_class"), [
    ("classification", (0, 1), None),
    ("classification", ("DOWN", "UP"), "UP"),
    ("regression", None, None),
])
def test_trainers_monitor_and_gate_agree_on_every_metric(task, names, positive_class):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 3))
    signal = X @ np.array([1.0, -0.5, 0.2]) + rng.normal(0, 0.7, 300)
    if task == "classification":
        y = np.asarray(names)[(signal > 0).astype(int)]
        model = LogisticRegression().fit(X[:200], y[:200])
        proba = model.predict_proba(X[200:])
        predicted = model.classes_[proba.argmax(axis=1)]
        # The store keeps scores as JSON: their columns come back as text ("0", "1").
        scores = pd.DataFrame(proba, columns=[str(c) for c in model.classes_])
        classes = tuple(model.classes_)
    else:
        y = signal
        model = LinearRegression().fit(X[:200], y[:200])
        predicted, proba, scores, classes = model.predict(X[200:]), None, None, ()
    labels = y[200:]

    trainer = evaluate(model, X[200:], labels, task, positive_class=positive_class)
    monitor = PerformanceMonitor(PerformanceConfig(window_rows=100, min_labels=10, positive_class=positive_class),
                                 task).evaluate(make_window(labels.tolist(), predicted.tolist(), scores), None)
    gate = PromotionGate(GateConfig(min_rows=10, positive_class=positive_class), task).judge(
        PairedSample(labels, predicted, predicted, proba, proba, classes))

    expected = ["accuracy", "f1", "roc_auc", "log_loss"] if task == "classification" else ["mae", "rmse", "r2"]
    assert sorted(trainer) == sorted(expected)  # every metric is defined on these rows
    for metric in expected:
        assert trainer[metric] == monitor.metrics[metric] == gate.champion_metrics[metric], metric


def test_small_and_large_inputs_match_classes_the_same_way(monkeypatch) -> None:
    import monitors.metrics as metrics

    values = np.array([1, "1", 1.0, True, "x", None, 0, "0", 2], dtype=object)
    classes = [0, 1, "x"]
    small = metrics._codes(classes, values)
    monkeypatch.setattr(metrics, "_SMALL", -1)  # the pandas path for the same values
    assert small.tolist() == metrics._codes(classes, values).tolist() == [1, 1, 1, 1, 2, -1, 0, 0, -1]
