"""Sealing (controller/store/sealing.py): rows move out of the row tables and every read stays equal, writes still
see the sealed ids, a sealed newest seq is never handed out again, background sealing after writes, and sealing
while writers write. On SQLite and on the real PostgreSQL server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from controller.clock import ManualClock
from controller.errors import LabelConflict, PredictionConflict
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.events import Sealing
from controller.store.tables import labels as labels_table
from controller.store.tables import predictions as predictions_table
from controller.store.tables import segments
from tests.conftest import T0
from tests.store.store_kit import windows_equal


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
