"""Config errors teach; the factory validates against the policy and turns disabled monitors into null objects."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from monitors import (
    ConceptDriftMonitor,
    DisabledMonitor,
    DisabledSignal,
    LastDuration,
    LastRows,
    MonitorsConfig,
    PerformanceMonitor,
    build_monitors,
)
from monitors.data_drift import DataDriftMonitor
from tests.monitors.conftest import T0, make_window

FEATURES = {"amount": "numeric", "country": "categorical", "is_new": "boolean"}


def build(config: dict, task: str = "classification", features=FEATURES):
    return build_monitors(MonitorsConfig.model_validate(config), task=task, feature_types=features)


def error_of(config: dict) -> str:
    with pytest.raises(ValidationError) as info:
        MonitorsConfig.model_validate(config)
    return str(info.value)


def test_defaults_build_all_three_monitors():
    monitors = build({})
    assert isinstance(monitors.data_drift, DataDriftMonitor)
    assert (
        isinstance(monitors.concept_drift, ConceptDriftMonitor)
        and monitors.concept_drift.loss == "zero_one"
    )
    assert (
        isinstance(monitors.performance, PerformanceMonitor)
        and monitors.performance.metric == "accuracy"
    )
    regression = build({}, task="regression")
    assert (regression.concept_drift.loss, regression.performance.metric) == ("absolute", "rmse")


def test_disabled_monitors_are_null_objects_that_never_trigger():
    monitors = build(
        {name: {"enabled": False} for name in ("data_drift", "concept_drift", "performance")}
    )
    frame = pd.DataFrame({"amount": [1.0]})
    signals = [
        monitors.data_drift.run(frame, frame, FEATURES),
        monitors.concept_drift.update([1.0, 1.0, 1.0]),
        monitors.performance.evaluate(make_window([1], [0]), 0.9),
    ]
    assert [s.kind for s in signals] == ["data_drift", "concept_drift", "performance"]
    assert all(isinstance(s, DisabledSignal) and not s.triggered and not s.enabled for s in signals)
    assert json.loads(json.dumps(signals[0].to_dict())) == {
        "kind": "data_drift",
        "enabled": False,
        "triggered": False,
    }
    assert isinstance(monitors.concept_drift, DisabledMonitor)
    assert monitors.concept_drift.dumps() == b"" and monitors.data_drift.save_html("x.html") is None


def test_unknown_detector_lists_the_valid_ones():
    message = error_of({"concept_drift": {"detector": "hddm"}})
    assert "unknown detector 'hddm'" in message
    assert "adwin, page_hinkley, kswin, ddm, eddm, hddm_a, hddm_w, fhddm" in message


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"concept_drift": {"detector": "ddm", "loss": "squared"}}, "loss must be zero_one"),
        (
            {"concept_drift": {"params": {"delta": 0.01, "window": 3}}},
            "has no parameter(s) window; accepted: delta",
        ),
        ({"concept_drift": {"detector": "kswin", "params": {"alpha": 2.0}}}, "refused params"),
        ({"concept_drift": {"extra": 1}}, "Extra inputs are not permitted"),
        ({"data_drift": {"method": "ks"}}, "does not apply to categorical features"),
        ({"data_drift": {"method": {"numeric": "chisquare"}}}, "use one of: ks, wasserstein"),
        (
            {"data_drift": {"per_feature": {"amount": {"method": "kolmogorov"}}}},
            "unknown drift method 'kolmogorov'",
        ),
        ({"data_drift": {"current": {"last_duration": "yesterday"}}}, "e.g. '30m', '1d'"),
        ({"data_drift": {"current": {"last_rows": 10, "last_duration": "1d"}}}, "exactly one of"),
        ({"data_drift": {"drift_share": 0}}, "greater than 0"),
        ({"performance": {"metric": "auc"}}, "'roc_auc'"),
        (
            {"performance": {"min_labels": 500, "window_rows": 100}},
            "min_labels (500) is larger than window_rows",
        ),
    ],
)
def test_config_errors_name_the_problem_and_the_fix(config, fragment):
    assert fragment in error_of(config)


@pytest.mark.parametrize(
    ("config", "task", "fragment"),
    [
        ({"concept_drift": {"loss": "log_loss"}}, "regression", "does not fit a regression model"),
        ({"concept_drift": {"detector": "ddm"}}, "regression", "needs 0/1 errors"),
        (
            {"performance": {"metric": "mae"}},
            "classification",
            "use one of: accuracy, f1, roc_auc, log_loss",
        ),
        (
            {"data_drift": {"per_feature": {"amout": {"threshold": 0.2}}}},
            "classification",
            "did you mean 'amount'",
        ),
        (
            {"data_drift": {"per_feature": {"country": {"method": "ks"}}}},
            "classification",
            "feature 'country'",
        ),
    ],
)
def test_factory_checks_the_config_against_the_policy(config, task, fragment):
    with pytest.raises(ValueError, match=None) as info:
        build(config, task=task)
    assert fragment in str(info.value)


def test_durations_and_per_type_shorthands():
    config = MonitorsConfig.model_validate(
        {
            "data_drift": {
                "current": {"last_duration": "36h"},
                "method": {"numeric": "ks"},
                "threshold": 0.01,
            }
        }
    ).data_drift
    assert config.current == LastDuration(last_duration=timedelta(hours=36))
    assert config.feature_test("amount", "numeric") == ("ks", 0.01)
    assert config.feature_test("country", "categorical") == ("jensenshannon", 0.01)
    # A JSON dump writes durations the way the policy file does, and loads back to the same config.
    assert config.model_dump(mode="json")["current"] == {"last_duration": "36h"}
    assert (
        MonitorsConfig.model_validate(
            json.loads(MonitorsConfig(data_drift=config).model_dump_json())
        ).data_drift
        == config
    )


def test_current_window_selection():
    frame = pd.DataFrame({"x": np.arange(10)})
    times = pd.Series(pd.date_range(T0, periods=10, freq="1h", tz="UTC"))
    as_of = T0 + timedelta(hours=7, minutes=30)  # rows 0..7 exist as of then
    assert LastRows(last_rows=3).select(frame, times, as_of)["x"].tolist() == [5, 6, 7]
    assert LastDuration(last_duration=timedelta(hours=2)).select(frame, times, as_of)[
        "x"
    ].tolist() == [6, 7]


@pytest.mark.parametrize("enabled", [True, False])
def test_every_monitor_and_its_null_object_honour_the_same_contract(enabled):
    monitors = build(
        {name: {"enabled": enabled} for name in ("data_drift", "concept_drift", "performance")}
    )
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=200),
            "country": rng.choice(["fr", "de"], size=200).astype(object),
            "is_new": pd.Series(rng.random(200) < 0.5, dtype=object),
        }
    )
    window = make_window(rng.integers(0, 2, 300).tolist(), rng.integers(0, 2, 300).tolist())
    signals = {
        "data_drift": monitors.data_drift.run(frame, frame, FEATURES),
        "concept_drift": monitors.concept_drift.update_rows(window),
        "performance": monitors.performance.evaluate(window, 0.5),
    }
    for kind, signal in signals.items():
        body = json.loads(json.dumps(signal.to_dict()))
        assert (body["kind"], body["enabled"]) == (kind, enabled)
        assert body["triggered"] is False  # same data on both sides, coin-flip labels vs 0.5
    state = monitors.concept_drift.dumps()
    monitors.concept_drift.reset()
    monitors.concept_drift.loads(state)
