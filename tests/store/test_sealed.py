"""The sealed tier (controller/store/sealed.py, sealed_reads.py) at scale (issue 13): sealed segments give exactly
the answers of the row tables.

The main test is differential: the same seeded sequence of writes (predictions, labels before and after their
predictions, repeats, conflicts, overwrites of old and new labels, NaN and odd JSON values) goes to a store that seals
after nearly every write and to one that never seals; every read and every write's answer must be equal. On SQLite
and on the real PostgreSQL server.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from controller.clock import ManualClock
from controller.errors import LabelConflict, PredictionConflict
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.events import Sealing
from controller.store.tables import sealed_ids, segments
from tests.conftest import T0, scratch_database
from tests.store.store_kit import windows_equal

TYPES = {"x": "numeric", "n": "numeric", "color": "categorical", "flag": "boolean", "odd": "categorical"}


@pytest.fixture
def two_urls(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[str, str]]:
    """Two empty stores on one backend (separate databases, so their label seqs are equal)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    with scratch_database("driftpilot_scale", count=2) as (first, second):
        yield first, second


BACKENDS = pytest.mark.parametrize("two_urls", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                                   indirect=True)


def random_features(rng: random.Random, i: int) -> dict[str, Any]:
    features: dict[str, Any] = {"x": round(rng.uniform(-5, 5), 4), "color": rng.choice(["red", "green", "blue"])}
    roll = rng.random()
    if roll < 0.1:
        features["x"] = "NaN"  # how the store keeps a NaN feature
    elif roll < 0.2:
        features["x"] = rng.randint(-3, 3)  # an int where floats are usual
    if rng.random() < 0.8:
        features["n"] = rng.choice([None, 1.5, 2, "Infinity", 0.25])
    if rng.random() < 0.7:
        features["flag"] = rng.choice([True, False, None])
    if rng.random() < 0.1:
        features["odd"] = rng.choice([[1, 2], {"a": "é"}, 2**60, "ünï", ""])
    return features


def random_prediction(rng: random.Random, pid: str) -> PredictionRecord:
    scores = rng.choice([None, {"a": 0.25, "b": 0.75}, {"b": 0.5}, {}])
    # Distinct event times: which of equal-time rows a max_rows cut keeps is the database's choice, either way.
    return PredictionRecord(random_features(rng, 0), T0 + timedelta(seconds=rng.randint(0, 10_000),
                                                                    microseconds=rng.randint(0, 999_999)),
                            prediction=rng.choice(["a", "b", None, 1]), scores=scores, prediction_id=pid,
                            model_version=rng.choice([None, "1", "2"]), source=rng.choice(["logged", "served",
                                                                                            "reference"]))


def label_value(rng: random.Random) -> Any:
    return rng.choice(["a", "b"])


def outcome(call) -> Any:
    try:
        result = call()
    except (LabelConflict, PredictionConflict) as exc:
        return (type(exc).__name__, [(p.index, p.field, p.problem) for p in exc.problems])
    return result.to_dict() if hasattr(result, "to_dict") else result


def compare_reads(sealed: EventStore, rows: EventStore, model: str, rng: random.Random, ids: list[str],
                  times: list) -> None:
    now = sealed.clock.now()
    cuts = [now, *rng.sample(times, min(3, len(times)))]
    seqs = rows.labeled_window(model, now).label_seqs.tolist()
    for as_of in cuts:
        for kwargs in ({}, {"feature_types": TYPES}, {"max_rows": rng.randint(0, 12)},
                       {"since": rng.choice(times)} if times else {},
                       {"after_seq": rng.choice(seqs)} if seqs else {},
                       {"after_seq": rng.choice(seqs), "through_seq": rng.choice(seqs)} if seqs else {},
                       {"since": rng.choice(times), "max_rows": 3, "feature_types": TYPES} if times else {}):
            windows_equal(sealed.labeled_window(model, as_of, **kwargs), rows.labeled_window(model, as_of, **kwargs))
        cursor = rng.choice(seqs) if seqs else None
        assert sealed.labeled_count(model, as_of, after_seq=cursor) == rows.labeled_count(model, as_of,
                                                                                        after_seq=cursor)
        assert sealed.labeled_count(model, as_of) == rows.labeled_count(model, as_of)
        since = rng.choice(times) if times else None
        assert sealed.labeled_count(model, as_of, since=since) == rows.labeled_count(model, as_of, since=since)
        for n in (1, 3, 50):
            assert sealed.tail_start(model, as_of, n) == rows.tail_start(model, as_of, n)
        after = T0 + timedelta(seconds=rng.randint(0, 10_000))
        assert sealed.traffic_since(model, as_of, after) == rows.traffic_since(model, as_of, after)
        assert sealed.traffic_since(model, as_of, None) == rows.traffic_since(model, as_of, None)
        for kwargs in ({}, {"max_rows": 5}, {"since": after}, {"max_rows": 0}):
            a = sealed.predictions_frame(model, as_of, feature_types=TYPES, **kwargs)
            b = rows.predictions_frame(model, as_of, feature_types=TYPES, **kwargs)
            # Rows with the same event time may come in either order: compare as sorted records.
            assert sorted(map(repr, a.to_dict("records"))) == sorted(map(repr, b.to_dict("records")))
            assert list(a.columns) == list(b.columns) and (a.dtypes == b.dtypes).all()
        stats_a, stats_b = sealed.label_stats(model, as_of).to_dict(), rows.label_stats(model, as_of).to_dict()
        assert stats_a == stats_b
    assert sealed.count_predictions(model) == rows.count_predictions(model)
    probe = rng.sample(ids, min(10, len(ids))) + ["never-sent"]
    assert sealed.known_prediction_ids(model, probe) == rows.known_prediction_ids(model, probe)
    for pid in probe:
        assert sealed.label_history(model, pid) == rows.label_history(model, pid)
        a, b = sealed.get_prediction(model, pid), rows.get_prediction(model, pid)
        assert (a is None) == (b is None)
        if a is not None:
            assert json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)


@BACKENDS
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sealed_segments_answer_exactly_like_the_row_tables(two_urls: tuple[str, str], seed: int) -> None:
    rng = random.Random(seed)
    clock_a, clock_b = ManualClock(T0), ManualClock(T0)
    sealed_store = EventStore.from_url(two_urls[0], clock_a, sealing=Sealing(rows=7, keep_rows=rng.randint(0, 3),
                                                                             mode="inline"))
    rows_store = EventStore.from_url(two_urls[1], clock_b, sealing=Sealing(mode="off"))
    model = "m"
    ids: list[str] = []
    times: list = []
    try:
        for step in range(70):
            action = rng.random()
            if action < 0.35:  # new predictions, sometimes with repeats and conflicts of old ones
                batch = [random_prediction(rng, f"p{len(ids) + i}") for i in range(rng.randint(1, 6))]
                if ids and rng.random() < 0.4:
                    old = rng.choice(ids)
                    stored = rows_store.get_prediction(model, old)
                    if stored is not None and rng.random() < 0.5:
                        batch.append(PredictionRecord(stored["features"], stored["event_time"],
                                                      prediction=stored["prediction"], scores=stored["scores"],
                                                      prediction_id=old, model_version=stored["model_version"],
                                                      source=stored["source"]))
                    else:
                        batch.append(random_prediction(rng, old))
                ids.extend(r.prediction_id for r in batch if r.prediction_id not in ids)
                assert outcome(lambda b=batch: sealed_store.add_predictions(model, b)) == \
                    outcome(lambda b=batch: rows_store.add_predictions(model, b))
            else:  # labels: new ones, for ids not predicted yet, repeats, conflicts and overwrites of any age
                candidates = ids + [f"p{len(ids) + k}" for k in range(3)]
                batch = [LabelRecord(rng.choice(candidates), label_value(rng), overwrite=rng.random() < 0.3)
                         for _ in range(rng.randint(1, 8))]
                assert outcome(lambda b=batch: sealed_store.add_labels(model, b)) == \
                    outcome(lambda b=batch: rows_store.add_labels(model, b))
            step_s = rng.choice([0, 1, 30])
            for clock in (clock_a, clock_b):
                clock.advance(seconds=step_s)
            times.append(clock_a.now())
            if step % 10 == 9:
                compare_reads(sealed_store, rows_store, model, rng, ids, times)
        sealed_store.seal(model, keep_rows=0, min_rows=1)
        compare_reads(sealed_store, rows_store, model, rng, ids, times)
        with sealed_store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(segments)).scalar_one() >= 3
            assert conn.execute(sa.select(sa.func.count()).select_from(sealed_ids)).scalar_one() > 10
    finally:
        sealed_store.dispose()
        rows_store.dispose()
