"""LineageRecord: validation and the exact round trip through MLflow tags (no MLflow store needed)."""

from __future__ import annotations

import doctest
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from importlib import metadata

import pytest

from lineage import LineageError, LineageRecord, installed_library_versions
from tests.lineage.lineage_helpers import T0, make_record


def test_round_trip_is_exact_for_every_field():
    record = make_record(
        parent_version="7",
        strategy="finetune",
        trigger="concept_drift",
        chain_depth=3,
        holdout_metrics={"accuracy": 0.1 + 0.2, "tiny": 1e-300, "denormal": 5e-324},
        champion_metrics={"accuracy": 2 / 3},
        extra={"fallback": None, "reason": "ADWIN fired at 5087", "nested": {"k": [1, 2.5, True]}},
    )
    back = LineageRecord.from_tags(record.to_tags())
    assert back == record
    assert back.holdout_metrics["accuracy"] == 0.30000000000000004  # repr-exact float, not rounded
    assert back.champion_metrics["accuracy"] == 2 / 3
    assert back.window_end == T0 - timedelta(hours=1, microseconds=250)  # microseconds survive


def test_tags_are_prefixed_strings_with_iso_utc_datetimes():
    cet = timezone(timedelta(hours=1))
    record = make_record(
        window_start=datetime(2026, 2, 1, 13, 0, tzinfo=cet), window_end=datetime(2026, 2, 2)
    )
    tags = record.to_tags()
    assert all(k.startswith("driftpilot.") and isinstance(v, str) for k, v in tags.items())
    assert tags["driftpilot.window_start"] == "2026-02-01T12:00:00+00:00"  # converted to UTC
    assert tags["driftpilot.window_end"] == "2026-02-02T00:00:00+00:00"  # naive taken as UTC
    assert "driftpilot.parent_version" not in tags  # bootstrap: no parent
    assert tags["driftpilot.strategy"] == "bootstrap"
    assert tags["driftpilot.lib.mlflow"] == metadata.version("mlflow")
    assert record.window_start.tzinfo is UTC


def test_library_versions_are_filled_from_the_installed_packages():
    versions = make_record().library_versions
    assert set(versions) == {"python", "scikit-learn", "river", "mlflow"}
    assert versions["river"] == metadata.version("river")
    assert versions["scikit-learn"] == metadata.version("scikit-learn")
    assert versions == installed_library_versions()


def test_caller_dicts_are_copied_not_shared():
    metrics = {"accuracy": 0.5}
    record = make_record(holdout_metrics=metrics)
    metrics["accuracy"] = 0.9
    assert record.holdout_metrics == {"accuracy": 0.5}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"strategy": "retrain"},
            "strategy 'retrain' is not one of bootstrap, stateless, finetune, incremental",
        ),
        ({"trigger": "drift"}, "trigger 'drift' is not one of manual, schedule"),
        ({"parent_version": "2"}, "a bootstrap version has no parent"),
        (
            {"strategy": "finetune", "trigger": "data_drift", "chain_depth": 1},
            "parent_version is required",
        ),
        (
            {
                "strategy": "finetune",
                "trigger": "data_drift",
                "parent_version": "1",
                "chain_depth": 0,
            },
            "chain_depth = parent's chain_depth + 1",
        ),
        (
            {"strategy": "stateless", "trigger": "schedule", "chain_depth": 2},
            "chain_depth must be 0",
        ),
        (
            {"trigger": "manual", "strategy": "stateless", "window_rows": -1},
            "window_rows must be an int >= 0",
        ),
        ({"decision_id": ""}, "decision_id must be a non-empty string"),
        (
            {"holdout_metrics": {"accuracy": "high"}},
            "holdout_metrics values must be finite numbers",
        ),
        ({"extra": {"when": datetime(2026, 1, 1)}}, "extra must hold JSON values"),
        (
            {"window_end": T0 - timedelta(days=30)},
            "window_end 2026-01-30T12:00:00+00:00 is before window_start",
        ),
        ({"strategy": "stateless"}, "trigger 'bootstrap' only goes with strategy 'bootstrap'"),
    ],
)
def test_invalid_records_are_refused_with_a_teaching_message(overrides, expected):
    with pytest.raises(LineageError, match="invalid lineage record") as info:
        make_record(**overrides)
    assert expected in str(info.value)


def test_oversized_extra_is_refused_with_the_limit_and_a_way_out():
    make_record(extra={"evidence": "x" * 9000})  # longer than an MLflow tag: fine, the record is an artifact
    with pytest.raises(LineageError, match="at most 64000.*run artifact"):
        make_record(extra={"evidence": "x" * 65_000})


def test_json_round_trip_is_exact_including_event_times_and_nan():
    record = make_record(
        parent_version="7", strategy="finetune", trigger="concept_drift", chain_depth=3,
        holdout_metrics={"accuracy": 0.1 + 0.2, "roc_auc": math.nan, "denormal": 5e-324},
        champion_metrics={"accuracy": 2 / 3},
        extra={"reason": "ADWIN fired at 5087", "long": "x" * 9000, "nested": {"k": [1, 2.5, True, None]}},
        event_time_start=datetime(1996, 5, 7, tzinfo=UTC),
        event_time_end=datetime(1997, 8, 20, 23, 30, tzinfo=UTC),
    )
    back = LineageRecord.from_json(record.to_json())
    assert math.isnan(back.holdout_metrics["roc_auc"])
    assert {k: v for k, v in back.holdout_metrics.items() if k != "roc_auc"} == {
        "accuracy": 0.30000000000000004, "denormal": 5e-324}
    assert back.champion_metrics == {"accuracy": 2 / 3}
    assert (back.event_time_start, back.event_time_end) == (record.event_time_start, record.event_time_end)
    clean = make_record(event_time_start=datetime(1996, 5, 7, tzinfo=UTC), event_time_end=datetime(1996, 6, 1))
    assert LineageRecord.from_json(clean.to_json()) == clean
    assert LineageRecord.from_tags(clean.to_tags()) == clean  # the old tag layout carries them too


def test_summary_tags_are_a_handful_of_short_values():
    record = make_record(parent_version="3", strategy="stateless", trigger="data_drift",
                         event_time_start=datetime(1996, 5, 7, tzinfo=UTC),
                         event_time_end=datetime(1997, 8, 20, 23, 30, tzinfo=UTC))
    assert record.summary_tags() == {
        "driftpilot.schema": "2",
        "driftpilot.parent_version": "3",
        "driftpilot.strategy": "stateless",
        "driftpilot.trigger": "data_drift",
        "driftpilot.window": "1996-05-07 00:00 → 1997-08-20 23:30",
        "driftpilot.window_rows": "300",
        "driftpilot.chain_depth": "0",
        "driftpilot.decision_id": "dec-0001",
    }
    # Without event times the window is the label-arrival range.
    assert make_record().summary_tags()["driftpilot.window"] == "2026-02-22 12:00 → 2026-03-01 10:59"


def test_event_times_go_in_pairs_and_json_names_a_foreign_document():
    with pytest.raises(LineageError, match="event_time_start and event_time_end go together"):
        make_record(event_time_start=datetime(1996, 5, 7, tzinfo=UTC))
    with pytest.raises(LineageError, match="no driftpilot lineage record of schema 2"):
        LineageRecord.from_json('{"schema": "1"}')
    with pytest.raises(LineageError, match="lacks the field 'strategy'"):
        body = json.loads(make_record().to_json())
        del body["strategy"]
        LineageRecord.from_json(json.dumps(body))


def test_from_tags_names_what_is_missing_or_foreign():
    tags = make_record().to_tags()
    del tags["driftpilot.window_rows"]
    with pytest.raises(LineageError, match="missing: driftpilot.window_rows"):
        LineageRecord.from_tags(tags)
    with pytest.raises(LineageError, match="no driftpilot lineage record"):
        LineageRecord.from_tags({"mlflow.user": "someone"})


def test_the_module_docstring_example_runs():
    import lineage.record

    assert doctest.testmod(lineage.record).failed == 0
