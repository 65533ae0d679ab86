"""Event store semantics (controller/store/events.py and the writes and reads behind it), run on SQLite and on the
real PostgreSQL server (the `store_url` fixture)."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from controller.clock import ManualClock
from controller.errors import LabelConflict, PredictionConflict
from controller.store import EventStore, LabelRecord, PredictionRecord
from tests.conftest import T0

TYPES = {"x": "numeric", "color": "categorical", "flag": "boolean"}


def prediction(pid: str, x: float = 1.0, *, when=T0, prediction=1, **kw) -> PredictionRecord:
    return PredictionRecord({"x": x, "color": "red", "flag": True}, when, prediction=prediction,
                            scores={"0": 0.3, "1": 0.7}, prediction_id=pid, **kw)


def test_label_before_prediction_is_kept_and_joins_later(store: EventStore, clock: ManualClock, model_name) -> None:
    receipt = store.add_labels(model_name, [LabelRecord("p1", 1)])
    assert receipt.to_dict() == {"inserted": 1, "duplicates": 0, "overwritten": 0, "unmatched": 1}
    assert store.labeled_window(model_name, clock.now()).rows == 0
    clock.advance(minutes=1)
    store.add_predictions(model_name, [prediction("p1")])
    window = store.labeled_window(model_name, clock.now(), feature_types=TYPES)
    assert window.prediction_ids.tolist() == ["p1"]
    assert window.labels.tolist() == [1]
    assert window.features.to_dict("records") == [{"x": 1.0, "color": "red", "flag": True}]
    stats = store.label_stats(model_name)
    assert (stats.predictions, stats.labeled, stats.pending, stats.unmatched_labels) == (1, 1, 0, 0)


def test_same_label_twice_is_a_noop(store: EventStore, clock: ManualClock, model_name) -> None:
    store.add_predictions(model_name, [prediction("p1")])
    store.add_labels(model_name, [LabelRecord("p1", 0)])
    clock.advance(minutes=1)
    receipt = store.add_labels(model_name, [LabelRecord("p1", 0), LabelRecord("p1", 0)])
    assert (receipt.inserted, receipt.duplicates) == (0, 2)
    assert len(store.label_history(model_name, "p1")) == 1


def test_conflicting_label_refuses_the_whole_batch(store: EventStore, clock: ManualClock, model_name) -> None:
    store.add_predictions(model_name, [prediction("p1"), prediction("p2")])
    store.add_labels(model_name, [LabelRecord("p1", 0)])
    with pytest.raises(LabelConflict) as info:
        store.add_labels(model_name, [LabelRecord("p2", 1), LabelRecord("p1", 1)])
    assert [(p.index, p.field) for p in info.value.problems] == [(1, "label")]
    assert "already has label 0, got 1; send overwrite: true" in info.value.problems[0].problem
    # Nothing of the batch was stored: p2 is still unlabeled, p1 still 0.
    assert store.label_history(model_name, "p2") == []
    assert store.labeled_window(model_name, clock.now()).labels.tolist() == [0]


def test_overwrite_is_recorded_and_invisible_before_it_happened(store: EventStore, clock: ManualClock,
                                                              model_name) -> None:
    store.add_predictions(model_name, [prediction("p1")])
    store.add_labels(model_name, [LabelRecord("p1", 0)])
    first = clock.now()
    clock.advance(hours=1)
    receipt = store.add_labels(model_name, [LabelRecord("p1", 1, overwrite=True)])
    assert receipt.overwritten == 1
    history = store.label_history(model_name, "p1")
    assert [(h.value, h.arrived_at, h.superseded_at) for h in history] == [
        (0, first, clock.now()),
        (1, clock.now(), None),
    ]
    assert store.labeled_window(model_name, first + timedelta(minutes=30)).labels.tolist() == [0]
    assert store.labeled_window(model_name, clock.now()).labels.tolist() == [1]


def test_as_of_only_sees_labels_that_had_arrived(store: EventStore, clock: ManualClock, model_name) -> None:
    store.add_predictions(model_name, [prediction(f"p{i}", x=i) for i in range(5)])
    arrivals = []
    for i in (3, 0, 4):  # labels arrive out of prediction order
        clock.advance(minutes=10)
        store.add_labels(model_name, [LabelRecord(f"p{i}", i % 2)])
        arrivals.append(clock.now())
    window = store.labeled_window(model_name, arrivals[1], feature_types=TYPES)
    assert window.prediction_ids.tolist() == ["p3", "p0"]  # arrival order, not prediction order
    assert window.features["x"].tolist() == [3.0, 0.0]
    assert window.start == arrivals[0] and window.end == arrivals[1]
    assert window.as_of == arrivals[1]
    assert store.labeled_window(model_name, arrivals[0] - timedelta(seconds=1)).rows == 0
    assert store.labeled_window(model_name, arrivals[2]).rows == 3


def test_window_limits_rows_time_and_sequence(store: EventStore, clock: ManualClock, model_name) -> None:
    store.add_predictions(model_name, [prediction(f"p{i}") for i in range(6)])
    times = []
    for i in range(6):
        clock.advance(minutes=1)
        store.add_labels(model_name, [LabelRecord(f"p{i}", 1)])
        times.append(clock.now())
    now = clock.now()
    assert store.labeled_window(model_name, now, max_rows=2).prediction_ids.tolist() == ["p4", "p5"]
    assert store.labeled_window(model_name, now, since=times[3]).prediction_ids.tolist() == ["p3", "p4", "p5"]
    first = store.labeled_window(model_name, times[2])
    assert store.labeled_window(model_name, now, after_seq=first.last_seq).prediction_ids.tolist() == \
        ["p3", "p4", "p5"]
    assert store.labeled_window(model_name, now, max_rows=0).rows == 0
    with pytest.raises(ValueError, match="max_rows must be >= 0"):
        store.labeled_window(model_name, now, max_rows=-1)


def test_window_has_typed_columns_and_a_stable_fingerprint(store: EventStore, clock: ManualClock,
                                                           model_name) -> None:
    store.add_predictions(model_name, [
        prediction("p1"),
        PredictionRecord({"x": None, "color": None}, T0, prediction=0, prediction_id="p2", model_version="3"),
    ])
    clock.advance(minutes=5)
    store.add_labels(model_name, [LabelRecord("p1", 1), LabelRecord("p2", 0)])
    window = store.labeled_window(model_name, clock.now(), feature_types=TYPES)
    assert window.features.dtypes.to_dict() == {"x": "float64", "color": "object", "flag": "object"}
    assert pd.isna(window.features.loc[1, "x"]) and window.features.loc[1, "color"] is None
    assert window.features.loc[1, "flag"] is None
    assert window.labels.dtype == "int64"
    assert window.model_versions.tolist() == [None, "3"]
    assert window.scores.loc[0].to_dict() == {"0": 0.3, "1": 0.7}
    assert window.event_times.dt.tz is not None and window.label_times.iloc[0] == pd.Timestamp(clock.now())
    again = store.labeled_window(model_name, clock.now(), feature_types=TYPES)
    assert again.fingerprint == window.fingerprint and len(window.fingerprint) == 64
    clock.advance(minutes=1)
    store.add_labels(model_name, [LabelRecord("p2", 1, overwrite=True)])
    assert store.labeled_window(model_name, clock.now()).fingerprint != window.fingerprint


def test_prediction_retry_is_idempotent_but_a_different_payload_conflicts(store: EventStore, model_name) -> None:
    assert store.add_predictions(model_name, [prediction("p1")]) == ["p1"]
    assert store.add_predictions(model_name, [prediction("p1"), prediction("p2")]) == ["p1", "p2"]
    assert store.count_predictions(model_name) == 2
    with pytest.raises(PredictionConflict, match="already stored with different content"):
        store.add_predictions(model_name, [prediction("p3"), prediction("p1", x=9.0)])
    assert store.count_predictions(model_name) == 2  # p3 not stored either


def test_generated_ids_are_unique(store: EventStore, model_name) -> None:
    records = [PredictionRecord({"x": 1.0}, T0, prediction=1) for _ in range(3)]
    ids = store.add_predictions(model_name, records)
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)


def test_models_are_isolated(store: EventStore, clock: ManualClock, model_name) -> None:
    store.add_predictions(model_name, [prediction("p1")])
    store.add_predictions(model_name + "-other", [prediction("p1", x=5.0)])
    store.add_labels(model_name, [LabelRecord("p1", 1)])
    assert store.labeled_window(model_name + "-other", clock.now()).rows == 0
    assert store.labeled_window(model_name, clock.now(), feature_types=TYPES).features["x"].tolist() == [1.0]


def test_label_stats_delay_percentiles(store: EventStore, clock: ManualClock, model_name) -> None:
    store.add_predictions(model_name, [prediction(f"p{i}") for i in range(11)])
    for i in range(10):  # label i arrives (i+1) minutes after the prediction's event time T0
        clock.set(T0 + timedelta(minutes=i + 1))
        store.add_labels(model_name, [LabelRecord(f"p{i}", 1)])
    stats = store.label_stats(model_name)
    assert (stats.predictions, stats.labeled, stats.pending) == (11, 10, 1)
    assert stats.coverage == pytest.approx(10 / 11)
    assert stats.delay_seconds == {"p50": pytest.approx(330.0), "p90": pytest.approx(546.0),
                                   "p99": pytest.approx(594.6)}
    early = store.label_stats(model_name, as_of=T0 + timedelta(minutes=2))
    assert early.labeled == 2 and early.delay_seconds["p50"] == pytest.approx(90.0)


def test_acknowledged_writes_are_durable_across_reopen(store_url: str, clock: ManualClock, model_name) -> None:
    store = EventStore.from_url(store_url, clock)
    store.add_predictions(model_name, [prediction("p1")])
    store.add_labels(model_name, [LabelRecord("p1", 1)])
    store.dispose()
    reopened = EventStore.from_url(store_url, clock)
    assert reopened.labeled_window(model_name, clock.now()).prediction_ids.tolist() == ["p1"]
    reopened.dispose()


def test_large_batches_with_repeats_and_overwrites(store: EventStore, clock: ManualClock, model_name) -> None:
    """Batches far above any per-statement parameter limit: ids are bound as one array, not one bind each."""
    n = 3000
    store.add_predictions(model_name, [prediction(f"p{i}", x=i) for i in range(n)])
    assert store.add_predictions(model_name, [prediction(f"p{i}", x=i) for i in range(n)]) == \
        [f"p{i}" for i in range(n)]  # a full retry is a no-op
    first = store.add_labels(model_name, [LabelRecord(f"p{i}", i % 2) for i in range(n)])
    assert (first.inserted, first.unmatched) == (n, 0)
    clock.advance(minutes=1)
    again = store.add_labels(model_name, [LabelRecord(f"p{i}", (i + 1) % 2, overwrite=True) for i in range(n)])
    assert (again.inserted, again.overwritten) == (0, n)
    window = store.labeled_window(model_name, clock.now())
    assert window.rows == n and window.labels.tolist() == [(i + 1) % 2 for i in range(n)]
    assert store.count_predictions(model_name) == n
