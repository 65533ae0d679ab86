"""The event store at scale (issue 13): sealed segments give exactly the answers of the row tables.

The main test is differential: the same seeded sequence of writes (predictions, labels before and after their
predictions, repeats, conflicts, overwrites of old and new labels, NaN and odd JSON values) goes to a store that seals
after nearly every write and to one that never seals; every read and every write's answer must be equal. On SQLite
and on the real PostgreSQL server.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from controller.clock import ManualClock
from controller.errors import LabelConflict, PredictionConflict
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store import segments as seg
from controller.store.events import Sealing
from controller.store.tables import labels as labels_table
from controller.store.tables import predictions as predictions_table
from controller.store.tables import sealed_ids, segments
from tests.conftest import POSTGRES_ADMIN_URL, T0

TYPES = {"x": "numeric", "n": "numeric", "color": "categorical", "flag": "boolean", "odd": "categorical"}


@pytest.fixture
def two_urls(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[str, str]]:
    """Two empty stores on one backend (separate databases, so their label seqs are equal)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"driftpilot_scale_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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


def frame_equal(a: pd.DataFrame | None, b: pd.DataFrame | None) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def windows_equal(a, b) -> None:
    frame_equal(a.features, b.features)
    frame_equal(a.scores, b.scores)
    for name in ("labels", "predictions", "prediction_ids", "event_times", "label_times", "model_versions",
                 "label_seqs"):
        pd.testing.assert_series_equal(getattr(a, name), getattr(b, name), check_exact=True)
    assert a.fingerprint == b.fingerprint
    assert (a.rows, a.start, a.end, a.last_seq) == (b.rows, b.start, b.end, b.last_seq)


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


# ------------------------------------------------------------------------------------------------------ codec


def test_the_segment_codec_keeps_every_json_type_exactly() -> None:
    values = [1, 1.0, -0.0, 2**53, 2**53 + 1, -(2**63), True, False, None, "NaN", "Infinity", "-Infinity", "x",
              "", "é☃", [1, "a"], {"k": [None]}, 1e300, 5e-324]
    n = len(values)
    features = [{"v": v, "w": float(i), **({"only": i} if i % 3 else {})} for i, v in enumerate(values)]
    block = seg.RowBlock(
        seq=np.arange(1, n + 1), prediction_id=[f"p{i}" for i in range(n)], value=values,
        arrived_at=np.arange(n, dtype=np.int64) * 1_000_000,
        superseded_at=np.full(n, seg.SUPERSEDED_NEVER), owner=np.ones(n, dtype=bool),
        event_time=np.zeros(n, dtype=np.int64), received_at=np.zeros(n, dtype=np.int64),
        model_version=[None] * n, source=["logged"] * n, prediction=values[::-1],
        scores=[None if i % 2 else {"a": 0.5, "b": i} for i in range(n)], features=features)
    part = seg.Part.of(seg.from_bytes(seg.to_bytes(seg.encode(block))))
    back = seg.block_rows(part)

    def typed(items: list[Any]) -> list[str]:
        return [f"{type(v).__name__}:{json.dumps(v)}" for v in items]

    assert typed(back.value) == typed(values)
    assert typed(back.prediction) == typed(values[::-1])
    assert [typed(list(d.items())) for d in back.features] == [typed(list(d.items())) for d in features]
    assert back.scores == block.scores
    # Each typed column on its own, also with every value of one kind.
    for column in ([1.5, None, 2.5] * 10, [1, 2, None] * 10, ["a", None] * 20, [True, None] * 20, [None] * 30,
                   [2**70, 1] * 10, [1.5, "NaN", 3] * 10):
        one = seg.RowBlock(**_block_of(column))
        again = seg.block_rows(seg.Part.of(seg.from_bytes(seg.to_bytes(seg.encode(one)))))
        assert typed(again.value) == typed(column)


def _block_of(values: list[Any]) -> dict[str, Any]:
    n = len(values)
    return {"seq": np.arange(n), "prediction_id": [str(i) for i in range(n)], "value": values,
            "arrived_at": np.zeros(n, dtype=np.int64), "superseded_at": np.full(n, seg.SUPERSEDED_NEVER),
            "owner": np.ones(n, dtype=bool), "event_time": np.zeros(n, dtype=np.int64),
            "received_at": np.zeros(n, dtype=np.int64), "model_version": [None] * n, "source": ["logged"] * n,
            "prediction": values, "scores": [None] * n, "features": [{"v": v} for v in values]}


def reference_fingerprint(prediction_ids: pd.Series, labels: pd.Series, label_times: pd.Series) -> str:
    """The store's fingerprint as it was written first, row by row (lineage records hold such fingerprints)."""
    import hashlib

    digest = hashlib.sha256()
    for pid, value, arrived in zip(prediction_ids, labels, label_times, strict=True):
        value = value.item() if isinstance(value, np.generic) else value
        digest.update(f"{pid}\x1f{json.dumps(value)}\x1f{arrived.isoformat()}\x1e".encode())
    return digest.hexdigest()


@pytest.mark.parametrize("labels", [["UP", "DOWN", "UP"], [1, 0, 1], [0.5, 1e16, -0.0], ["a", None, 3],
                                    [{"k": 1}, [1, 2], "x"], []])
def test_the_vectorized_fingerprint_equals_the_row_by_row_one(labels: list[Any]) -> None:
    n = len(labels)
    ids = pd.Series([f"id-{i}-é" for i in range(n)], dtype=object)
    values = pd.Series(labels, dtype=object if not labels or not all(
        isinstance(v, (int, float)) for v in labels) else None)
    times = pd.Series(pd.to_datetime([T0 + timedelta(microseconds=7 * i, seconds=i) for i in range(n)], utc=True))
    expected = reference_fingerprint(ids, values, times)
    assert seg.fingerprint_columns(ids.to_numpy(dtype=object), values,
                                   pd.DatetimeIndex(times).as_unit("us").asi8) == expected


# -------------------------------------------------------------------------------------------------- invariants


@pytest.fixture
def sealing_store(store_url: str, clock: ManualClock) -> Iterator[EventStore]:
    store = EventStore.from_url(store_url, clock, sealing=Sealing(rows=5, keep_rows=0, mode="off"))
    yield store
    store.dispose()


def test_sealing_moves_rows_out_of_the_row_tables_and_reads_stay_equal(sealing_store: EventStore,
                                                                     clock: ManualClock, model_name: str) -> None:
    store = sealing_store
    store.add_predictions(model_name, [PredictionRecord({"x": float(i)}, T0, prediction=1, prediction_id=f"p{i}")
                                       for i in range(12)])
    store.add_labels(model_name, [LabelRecord(f"p{i}", i % 2) for i in range(12)] + [LabelRecord("early", 1)])
    before = store.labeled_window(model_name, clock.now(), feature_types={"x": "numeric"})
    results = store.seal(model_name)
    assert [(r.rows, r.last_seq - r.first_seq) for r in results] == [(5, 4), (5, 4)]
    with store.engine.connect() as conn:
        # 2 of 12 labeled rows stay (and the label still waiting for its prediction): the rest left the row tables.
        assert conn.execute(sa.select(sa.func.count()).select_from(labels_table)
                            .where(labels_table.c.model == model_name)).scalar_one() == 3
        assert conn.execute(sa.select(sa.func.count()).select_from(predictions_table)
                            .where(predictions_table.c.model == model_name)).scalar_one() == 2
    windows_equal(store.labeled_window(model_name, clock.now(), feature_types={"x": "numeric"}), before)
    # Writes still see sealed ids: a repeat is a no-op, a different payload a conflict, a label a repeat.
    assert store.add_predictions(model_name, [PredictionRecord({"x": 0.0}, T0, prediction=1,
                                                               prediction_id="p0")]) == ["p0"]
    with pytest.raises(PredictionConflict):
        store.add_predictions(model_name, [PredictionRecord({"x": 9.0}, T0, prediction=1, prediction_id="p0")])
    assert store.add_labels(model_name, [LabelRecord("p0", 0)]).duplicates == 1
    with pytest.raises(LabelConflict, match="already has label 0"):
        store.add_labels(model_name, [LabelRecord("p0", 1)])
    clock.advance(minutes=1)
    receipt = store.add_labels(model_name, [LabelRecord("p0", 1, overwrite=True)])
    assert (receipt.overwritten, receipt.unmatched) == (1, 0)
    window = store.labeled_window(model_name, clock.now(), feature_types={"x": "numeric"})
    assert window.prediction_ids.tolist()[-1] == "p0" and window.labels.tolist()[-1] == 1
    assert [c.value for c in store.label_history(model_name, "p0")] == [0, 1]
    assert store.labeled_window(model_name, clock.now() - timedelta(seconds=30)).labels.tolist()[0] == 0
    assert store.count_predictions(model_name) == 12


def test_a_sealed_newest_seq_is_never_handed_out_again(sealing_store: EventStore, clock: ManualClock,
                                                      model_name: str) -> None:
    """Sealing deletes the newest label rows from the table; on SQLite (AUTOINCREMENT since migration 0003) as on
    PostgreSQL the next label still gets a larger seq, and its arrival is not before the sealed ones'."""
    store = sealing_store
    store.add_predictions(model_name, [PredictionRecord({"x": 1.0}, T0, prediction_id=f"p{i}") for i in range(6)])
    store.add_labels(model_name, [LabelRecord(f"p{i}", 1) for i in range(5)])
    last = store.labeled_window(model_name, clock.now()).last_seq
    store.seal(model_name, min_rows=1)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(labels_table)
                            .where(labels_table.c.model == model_name)).scalar_one() == 0
    late = ManualClock(T0 - timedelta(hours=1))  # a writer whose clock is behind
    behind = EventStore(store.engine, late, sealing=Sealing(mode="off"))
    behind.add_labels(model_name, [LabelRecord("p5", 0)])
    window = store.labeled_window(model_name, clock.now())
    assert window.last_seq > last and window.label_times.iloc[-1] == window.label_times.iloc[-2]
    assert store.labeled_window(model_name, clock.now(), after_seq=last).prediction_ids.tolist() == ["p5"]


def test_background_sealing_after_writes(store_url: str, clock: ManualClock, model_name: str) -> None:
    store = EventStore.from_url(store_url, clock, sealing=Sealing(rows=40, keep_rows=20))
    try:
        for batch in range(10):
            ids = [f"p{batch}-{i}" for i in range(20)]
            store.add_predictions(model_name, [PredictionRecord({"x": 1.0}, T0, prediction_id=p) for p in ids])
            store.add_labels(model_name, [LabelRecord(p, 1) for p in ids])
        store.wait_for_sealing()
        with store.engine.connect() as conn:
            sealed_rows = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(segments.c.row_count), 0))
                                       .where(segments.c.model == model_name)).scalar_one()
        assert 120 <= sealed_rows <= 180 and sealed_rows % 40 == 0
        assert store.labeled_window(model_name, clock.now()).rows == 200
    finally:
        store.dispose()


def test_sealing_while_writers_write(store_url: str, model_name: str) -> None:
    """Threads write predictions and labels (with repeats of sealed ids) while another seals: every id is stored
    once, every label once, and the window is the row tables' answer."""
    clock = ManualClock(T0)
    writers = [EventStore.from_url(store_url, clock, sealing=Sealing(mode="off")) for _ in range(3)]
    sealer = EventStore.from_url(store_url, clock, sealing=Sealing(rows=25, keep_rows=0, mode="off"))
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for b in range(12):
                ids = [f"w{k}-{b}-{i}" for i in range(20)]
                records = [PredictionRecord({"x": float(i), "k": k}, T0, prediction=1, prediction_id=p)
                           for i, p in enumerate(ids)]
                writers[k].add_predictions(model_name, records)
                writers[k].add_labels(model_name, [LabelRecord(p, i % 2) for i, p in enumerate(ids)])
                # A retry of the whole batch, maybe after its rows were sealed: repeats everywhere.
                writers[k].add_predictions(model_name, records)
                assert writers[k].add_labels(model_name, [LabelRecord(p, i % 2) for i, p in enumerate(ids)]
                                             ).duplicates == 20
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def seal() -> None:
        try:
            while not stop.is_set():
                sealer.seal(model_name)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(3)]
    sealing = threading.Thread(target=seal)
    sealing.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sealing.join()
    try:
        assert errors == []
        sealer.seal(model_name, min_rows=1)
        window = sealer.labeled_window(model_name, clock.now(), feature_types={"x": "numeric", "k": "numeric"})
        assert window.rows == 3 * 12 * 20 and window.prediction_ids.is_unique
        assert window.label_seqs.is_monotonic_increasing
        assert sealer.count_predictions(model_name) == 3 * 12 * 20
        assert window.labels.tolist() == [int(x) % 2 for x in window.features["x"]]
    finally:
        for store in [*writers, sealer]:
            store.dispose()
