"""Performance on matured labels: exact metrics on hand-checkable windows, verdicts and their thresholds."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from monitors import PerformanceConfig, PerformanceMonitor
from tests.monitors.conftest import make_window


def monitor(task: str = "classification", **config) -> PerformanceMonitor:
    return PerformanceMonitor(
        PerformanceConfig.model_validate({"min_labels": 10, "window_rows": 100} | config), task
    )


def binary_window(rows: int = 200, accuracy: float = 0.9, seed: int = 0, **kwargs):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=rows)
    wrong = rng.random(rows) > accuracy
    predictions = np.where(wrong, 1 - labels, labels)
    p1 = np.clip(np.where(predictions == 1, 0.8, 0.2) + rng.normal(0, 0.05, size=rows), 0.01, 0.99)
    scores = pd.DataFrame({0: 1 - p1, 1: p1})
    return (
        make_window(labels.tolist(), predictions.tolist(), scores, **kwargs),
        labels,
        predictions,
        scores,
    )


def test_below_min_labels_there_is_no_verdict_and_the_signal_says_so():
    window, *_ = binary_window(rows=9, accuracy=0.0)
    signal = monitor().evaluate(window, reference_metric=0.95)
    assert signal.verdict == "insufficient_labels" and not signal.triggered
    assert signal.drop is None and signal.rows == 9 and "min_labels=10" in signal.reason
    enough = monitor().evaluate(binary_window(rows=10, accuracy=0.0)[0], reference_metric=0.95)
    assert enough.verdict == "degraded"


def test_metrics_are_computed_over_the_last_window_rows_and_match_sklearn():
    window, labels, predictions, scores = binary_window(rows=300)
    signal = monitor(metric="f1").evaluate(window, reference_metric=None)
    tail = slice(200, 300)  # window_rows=100: the newest 100 labeled predictions
    y, p = labels[tail], predictions[tail]
    assert signal.rows == 100 and signal.rows_available == 300 and signal.scored_rows == 100
    assert signal.metrics["accuracy"] == pytest.approx(np.mean(y == p))
    assert signal.metrics["f1"] == pytest.approx(f1_score(y, p))
    assert signal.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, scores[1].to_numpy()[tail]))
    assert signal.metrics["log_loss"] == pytest.approx(log_loss(y, scores.to_numpy()[tail]))
    assert signal.verdict == "no_reference" and signal.value == signal.metrics["f1"]
    assert signal.start == window.label_times.iloc[200].to_pydatetime()


@pytest.mark.parametrize(
    ("drop_kind", "reference", "verdict", "drop"),
    [
        ("relative", 0.95, "degraded", (0.95 - 0.88) / 0.95),
        ("relative", 0.92, "ok", (0.92 - 0.88) / 0.92),
        ("absolute", 0.95, "degraded", 0.07),
        ("absolute", 0.92, "ok", 0.04),
        ("absolute", 0.80, "ok", -0.08),  # better than the reference
    ],
)
def test_verdict_compares_the_drop_with_max_drop(drop_kind, reference, verdict, drop):
    labels = [1] * 100
    predictions = [1] * 88 + [0] * 12  # accuracy 0.88
    signal = monitor(drop=drop_kind, max_drop=0.05).evaluate(
        make_window(labels, predictions), reference
    )
    assert signal.value == pytest.approx(0.88)
    assert (signal.verdict, signal.drop_kind) == (verdict, drop_kind)
    assert signal.drop == pytest.approx(drop)
    assert signal.drop_absolute == pytest.approx(reference - 0.88)


def test_for_a_loss_metric_an_increase_is_the_drop():
    labels = [0.0] * 50 + [1.0] * 50
    predictions = [0.5] * 100  # MAE 0.5, RMSE 0.5
    signal = monitor("regression", metric="mae", max_drop=0.1).evaluate(
        make_window(labels, predictions), 0.4
    )
    assert signal.metrics == pytest.approx({"mae": 0.5, "rmse": 0.5, "r2": 0.0})
    assert signal.drop == pytest.approx(0.25) and signal.verdict == "degraded"


def test_multiclass_f1_is_macro_and_roc_auc_one_vs_rest():
    labels = ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"]
    predictions = ["a", "b", "b", "a", "c", "c", "a", "b", "a", "a"]
    rng = np.random.default_rng(1)
    proba = rng.dirichlet([1, 1, 1], size=10)
    scores = pd.DataFrame(proba, columns=["a", "b", "c"])
    signal = monitor(metric="roc_auc").evaluate(make_window(labels, predictions, scores), 0.5)
    assert signal.metrics["f1"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert signal.metrics["roc_auc"] == pytest.approx(
        roc_auc_score(labels, proba, multi_class="ovr", average="macro")
    )


def test_binary_f1_uses_the_configured_positive_class():
    labels = ["spam", "ham", "spam", "ham", "spam", "spam", "ham", "ham", "ham", "ham"]
    predictions = ["spam", "spam", "ham", "ham", "spam", "spam", "ham", "ham", "ham", "ham"]
    window = make_window(labels, predictions)
    spam = monitor(metric="f1", positive_class="spam").evaluate(window, 0.9)
    ham = monitor(metric="f1", positive_class="ham").evaluate(window, 0.9)
    assert spam.value == pytest.approx(f1_score(labels, predictions, pos_label="spam"))
    assert ham.value == pytest.approx(f1_score(labels, predictions, pos_label="ham"))
    # Without a positive class, a verdict on F1 is undefined and says what to set; it is no crash.
    unset = monitor(metric="f1").evaluate(window, 0.9)
    assert unset.verdict == "undefined_metric" and unset.value is None and not unset.triggered
    assert "set monitors.performance.positive_class in the policy to one of them" in unset.reason


def test_unknown_label_delays_are_carried_as_none():
    # Right after a bootstrap the store knows no delay of a served prediction: every percentile is None.
    window, *_ = binary_window(rows=20)
    signal = monitor().evaluate(window, 0.9, label_delay={"p50": None, "p90": None, "p99": None})
    assert signal.label_delay is None and signal.verdict == "ok"


def test_accuracy_of_binary_labels_without_a_positive_class_needs_none():
    # The Elec2 case: UP/DOWN, no positive_class in the policy, metric accuracy (the default).
    labels = ["UP", "DOWN"] * 10
    predictions = ["UP", "DOWN"] * 8 + ["DOWN", "UP"] * 2
    scores = pd.DataFrame({"UP": [0.7, 0.2] * 10, "DOWN": [0.3, 0.8] * 10})
    signal = monitor().evaluate(make_window(labels, predictions, scores), reference_metric=0.82)
    assert signal.metric == "accuracy" and signal.value == 0.8 and signal.verdict == "ok"
    assert signal.metrics["f1"] is None and signal.metrics["roc_auc"] is None
    assert signal.metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8] * 10)))


def test_undefined_metric_gives_no_verdict():
    window = make_window([1] * 20, [1] * 20, pd.DataFrame({0: [0.1] * 20, 1: [0.9] * 20}))
    signal = monitor(metric="roc_auc").evaluate(window, 0.9)  # one class only: AUC undefined
    assert signal.verdict == "undefined_metric" and signal.value is None and not signal.triggered
    no_scores = monitor(metric="log_loss").evaluate(make_window([1, 0] * 10, [1, 0] * 10), 0.3)
    assert no_scores.verdict == "undefined_metric" and no_scores.scored_rows is None


def test_rows_without_prediction_or_of_another_version_are_not_scored():
    labels = [1] * 30
    predictions = [None] * 5 + [0] * 10 + [1] * 15
    versions = ["1"] * 15 + ["2"] * 15
    window = make_window(labels, predictions, versions=versions)
    assert monitor().evaluate(window, 1.0).rows == 25
    champion = monitor().evaluate(window, 1.0, model_version="2")
    assert champion.rows == 15 and champion.value == 1.0 and champion.verdict == "ok"


def test_coverage_and_delay_are_carried_and_serialize():
    window, *_ = binary_window()
    signal = monitor().evaluate(
        window, 0.9, label_coverage=0.42, label_delay={"p50": 60.0, "p90": 3600.0, "p99": 86400.0}
    )
    body = json.loads(json.dumps(signal.to_dict()))
    assert body["label_coverage"] == 0.42 and body["label_delay"] == {
        "p50": 60.0,
        "p90": 3600.0,
        "p99": 86400.0,
    }
    assert body["kind"] == "performance" and body["verdict"] == signal.verdict
    with pytest.raises(ValueError, match="p99"):
        monitor().evaluate(window, 0.9, label_delay={"p50": 1.0, "p90": 2.0})


def test_regression_r2_is_undefined_for_constant_labels():
    signal = monitor("regression", metric="r2").evaluate(make_window([2.0] * 20, [1.0] * 20), 0.5)
    assert signal.metrics["r2"] is None and signal.verdict == "undefined_metric"
    assert math.isclose(signal.metrics["rmse"], 1.0)


def test_zero_reference_falls_back_to_absolute_drop_and_says_so():
    signal = monitor("regression", metric="r2").evaluate(
        make_window([0.0, 1.0] * 10, [1.0, 0.0] * 10), 0.0
    )
    assert signal.drop == pytest.approx(signal.drop_absolute) and "absolute" in signal.reason
    assert signal.drop_relative is None and signal.verdict == "degraded"


def test_string_score_columns_name_the_same_classes_as_integer_labels():
    # JSON turns class keys into strings: {"0": .., "1": ..} must still be a binary problem over 0/1.
    _, labels, predictions, scores = binary_window(rows=100)
    as_json = make_window(labels.tolist(), predictions.tolist(), scores.rename(columns=str))
    signal = monitor(metric="roc_auc").evaluate(as_json, 0.9)
    assert signal.metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores[1]))
    assert signal.metrics["f1"] == pytest.approx(f1_score(labels, predictions))
