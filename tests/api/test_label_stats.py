"""The label statistics of a model (GET /v1/models/{model}/stats, controller/api/routes/monitoring.py): coverage,
pending labels, label delay percentiles, reference rows counted apart from traffic.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from controller.store import LabelRecord, PredictionRecord
from tests.api.api_kit import Api, item
from tests.conftest import T0


def test_stats_count_coverage_pending_and_label_delay_percentiles(api: Api) -> None:
    api.predict(*(item(f"p-{i}") for i in range(4)))  # event_time = T0 for all four
    for pid, wait in (("p-0", 10), ("p-1", 20), ("p-2", 30)):
        api.clock.advance(seconds=wait)
        api.label({"prediction_id": pid, "label": "UP"})
    api.label({"prediction_id": "never-predicted", "label": "DOWN"})
    stats = api.client.get(f"/v1/models/{api.model}/stats").json()
    # Delays 10, 30, 60 s; numpy's linear percentiles: p90 = 30 + 0.8 * 30, p99 = 30 + 0.98 * 30.
    assert stats == {
        "model": api.model,
        "as_of": (T0 + timedelta(seconds=60)).isoformat(),
        "predictions": 4,
        "by_source": {"logged": 4},
        "reference_rows": 0,
        "labeled": 3,
        "pending": 1,
        "unmatched_labels": 1,
        "coverage": 0.75,
        "label_delay_seconds": {"p50": 30.0, "p90": pytest.approx(54.0), "p99": pytest.approx(59.4)},
    }


def test_stats_count_bootstrap_reference_rows_apart_from_served_and_logged_predictions(api: Api) -> None:
    """Issue 10 item 8: reference rows are labeled training data, not traffic; counting them made coverage ~100%."""
    api.store.add_predictions(api.model, [
        PredictionRecord(features={"x": 1.0, "c": "red", "b": True}, prediction_id=f"ref-{i}", source="reference")
        for i in range(5)])
    api.store.add_labels(api.model, [LabelRecord(f"ref-{i}", "UP") for i in range(5)])  # labeled at once: delay 0
    api.store.add_predictions(api.model, [
        PredictionRecord(features={"x": 1.0, "c": "red", "b": True}, prediction_id="s-1", source="served",
                         prediction="UP", model_version="1")])
    api.predict(item("p-1"), item("p-2"))
    api.clock.advance(seconds=40)
    api.label({"prediction_id": "p-1", "label": "DOWN"}, {"prediction_id": "not-yet", "label": "UP"})
    stats = api.client.get(f"/v1/models/{api.model}/stats").json()
    assert {k: stats[k] for k in ("predictions", "by_source", "reference_rows", "labeled", "pending",
                                  "unmatched_labels", "coverage")} == {
        "predictions": 3, "by_source": {"logged": 2, "served": 1}, "reference_rows": 5, "labeled": 1, "pending": 2,
        "unmatched_labels": 1, "coverage": pytest.approx(1 / 3)}
    # The delays are those of traffic only (the reference rows' zero delays would drag p50 to 0).
    assert stats["label_delay_seconds"] == {"p50": 40.0, "p90": 40.0, "p99": 40.0}


def test_stats_of_an_empty_model_have_no_coverage_and_no_delays(sqlite_api: Api) -> None:
    stats = sqlite_api.client.get(f"/v1/models/{sqlite_api.model}/stats").json()
    assert (stats["predictions"], stats["coverage"]) == (0, None)
    assert stats["label_delay_seconds"] == {"p50": None, "p90": None, "p99": None}
