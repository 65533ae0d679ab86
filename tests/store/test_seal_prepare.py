"""Sealing in two steps (controller/store/seal_prepare.py, seal_commit.py, seal_process.py): a segment
prepared from a snapshot is committed only while still exact (a label overwritten, or rows sealed by another store,
in between: detected and prepared again), the helper process and the thread prepare the same segment, and a failure
in the helper leaves every row in place and is logged. On SQLite and on the real PostgreSQL server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pytest
import sqlalchemy as sa

from controller.clock import ManualClock
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.events import Sealing
from controller.store.seal_commit import SealStep, commit_prepared
from controller.store.seal_prepare import PreparedSeal, SealJob
from controller.store.seal_process import ProcessSealer, ThreadSealer, seal_at, sealer_for
from controller.store.sealing import Sealer, seal_segments
from controller.store.tables import labels as labels_table
from controller.store.tables import segments
from tests.conftest import T0
from tests.store.store_kit import windows_equal


@pytest.fixture
def sealing_store(store_url: str, clock: ManualClock) -> Iterator[EventStore]:
    store = EventStore.from_url(store_url, clock, sealing=Sealing(rows=5, keep_rows=0, mode="off"))
    yield store
    store.dispose()


def write_pairs(store: EventStore, model: str, n: int) -> None:
    store.add_predictions(model, [PredictionRecord({"x": float(i), "c": f"k{i % 3}"}, T0, prediction=i % 2,
                                                   scores={"a": i / 10}, prediction_id=f"p{i}") for i in range(n)])
    store.add_labels(model, [LabelRecord(f"p{i}", i % 2) for i in range(n)])


def segment_count(store: EventStore, model: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(segments)
                            .where(segments.c.model == model)).scalar_one()


def label_rows(store: EventStore, model: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(labels_table)
                            .where(labels_table.c.model == model)).scalar_one()


class OverwriteAfterFirstPrepare(ThreadSealer):
    """Seals in the thread; after its first prepare, a writer overwrites a label of the prepared block (between the
    snapshot and the commit)."""

    def __init__(self, store: EventStore, model: str, clock: ManualClock) -> None:
        super().__init__(store.read, store.transaction)
        self.store, self.model, self.clock = store, model, clock
        self.prepared: list[PreparedSeal] = []

    def prepare(self, job: SealJob) -> PreparedSeal | None:
        prepared = super().prepare(job)
        if prepared is not None:
            self.prepared.append(prepared)
        if len(self.prepared) == 1:
            self.clock.advance(minutes=1)
            self.store.add_labels(self.model, [LabelRecord("p2", 1, overwrite=True)])
        return prepared


def test_an_overwrite_between_prepare_and_commit_is_detected_and_the_seal_redone(
        sealing_store: EventStore, clock: ManualClock, model_name: str) -> None:
    store = sealing_store
    write_pairs(store, model_name, 12)
    before_overwrite = clock.now()
    preparer = OverwriteAfterFirstPrepare(store, model_name, clock)
    results = seal_segments(store, model_name, where=preparer)
    # The first block (p0..p4, with p2's label in force) went stale; it was prepared again with p2's row superseded.
    first, second = preparer.prepared[0], preparer.prepared[1]
    assert first.metadata["first_seq"] == second.metadata["first_seq"]
    assert first.in_force.all() and not second.in_force[2] and second.in_force.sum() == 4
    # p2's overwrite is a new row after p11: 13 labeled rows, two segments of 5, 3 rows left in the table.
    assert [r.rows for r in results] == [5, 5] and label_rows(store, model_name) == 3
    # Reads are what the row tables said: p2's new label is the newest row, its old one in force before it.
    window = store.labeled_window(model_name, clock.now(), feature_types={"x": "numeric", "c": "categorical"})
    order = [f"p{i}" for i in range(12) if i != 2] + ["p2"]
    assert window.prediction_ids.tolist() == order
    assert window.labels.tolist() == [int(pid[1:]) % 2 if pid != "p2" else 1 for pid in order]
    assert window.features["x"].tolist() == [float(pid[1:]) for pid in order]
    old = store.labeled_window(model_name, before_overwrite)
    assert old.prediction_ids.tolist() == [f"p{i}" for i in range(12)] and old.labels.tolist() == [i % 2
                                                                                                   for i in range(12)]
    assert [c.value for c in store.label_history(model_name, "p2")] == [0, 1]
    assert store.label_stats(model_name, clock.now()).labeled == 12


def test_a_block_sealed_by_another_store_meanwhile_is_not_committed_twice(sealing_store: EventStore,
                                                                         clock: ManualClock, model_name: str) -> None:
    store = sealing_store
    write_pairs(store, model_name, 10)
    window = store.labeled_window(model_name, clock.now())
    prepared = ThreadSealer(store.read, store.transaction).prepare(SealJob(model_name, 5))
    assert prepared is not None
    assert [r.rows for r in store.seal(model_name)] == [5, 5]  # another sealer took the same rows first
    with store.transaction() as conn:
        assert commit_prepared(conn, prepared, clock.now()) is None
    assert segment_count(store, model_name) == 2
    windows_equal(store.labeled_window(model_name, clock.now()), window)


def test_the_helper_process_and_the_thread_prepare_the_same_segment(sealing_store: EventStore, clock: ManualClock,
                                                                    model_name: str) -> None:
    store = sealing_store
    write_pairs(store, model_name, 12)
    store.seal(model_name)  # a first segment, so the next block also carries copies of sealed predictions
    clock.advance(minutes=1)
    store.add_labels(model_name, [LabelRecord("p1", 0, overwrite=True), LabelRecord("p11", 0, overwrite=True)])
    window = store.labeled_window(model_name, clock.now())
    url = store.engine.url.render_as_string(hide_password=False)
    helper = sealer_for(store.engine, store.in_thread_sealer)
    assert isinstance(helper, ProcessSealer)
    try:
        job = SealJob(model_name, 5, min_rows=1)
        in_thread = ThreadSealer(store.read, store.transaction).prepare(job)
        in_helper = helper.prepare(job)
        assert in_thread is not None and in_helper is not None and in_thread.already  # p1: sealed prediction
        assert in_helper.data == in_thread.data and in_helper.metadata == in_thread.metadata
        for name in ("seqs", "in_force"):
            np.testing.assert_array_equal(getattr(in_helper, name), getattr(in_thread, name))
        assert (in_helper.moved, in_helper.already, in_helper.current) == (
            in_thread.moved, in_thread.already, in_thread.current)
        assert seal_segments(store, model_name, min_rows=1, where=helper)
        assert helper.url == url
    finally:
        helper.close()
    assert label_rows(store, model_name) == 0
    windows_equal(store.labeled_window(model_name, clock.now()), window)


def test_memory_databases_prepare_in_the_thread() -> None:
    store = EventStore.from_url("sqlite:///:memory:", ManualClock(T0), sealing=Sealing(mode="off"))
    try:
        assert isinstance(sealer_for(store.engine, store.in_thread_sealer), ThreadSealer)
    finally:
        store.dispose()


def failing_seal(url: str, job: SealJob, now: datetime) -> SealStep | None:
    """Runs in the helper process: a bug (or a database error) while sealing."""
    raise RuntimeError(f"helper failed sealing {job.model}")


def dying_seal(url: str, job: SealJob, now: datetime) -> SealStep | None:
    """Runs in the helper process: it dies (killed, out of memory) mid-seal."""
    os._exit(3)


def test_a_failure_in_the_helper_leaves_the_rows_in_place_and_is_logged(
        sealing_store: EventStore, clock: ManualClock, model_name: str, caplog: pytest.LogCaptureFixture) -> None:
    store = sealing_store
    write_pairs(store, model_name, 10)
    window = store.labeled_window(model_name, clock.now())
    url = store.engine.url.render_as_string(hide_password=False)
    helper = ProcessSealer(url, ThreadSealer(store.read, store.transaction), work=failing_seal)
    sealer = Sealer(Sealing(rows=5, keep_rows=0, mode="background"),
                    lambda model, where: seal_segments(store, model, where=where),
                    ThreadSealer(store.read, store.transaction), lambda: helper)
    try:
        with caplog.at_level(logging.ERROR, logger="driftpilot.store"):
            sealer.labels_written(model_name, 10)
            sealer.drain(120)
        assert f"sealing {model_name} failed" in caplog.text and "helper failed sealing" in caplog.text
        assert segment_count(store, model_name) == 0 and label_rows(store, model_name) == 10
        windows_equal(store.labeled_window(model_name, clock.now()), window)
        # A helper that dies fails that seal alone (logged the same way); the next seal starts a new helper.
        caplog.clear()
        helper.work = dying_seal
        with caplog.at_level(logging.ERROR, logger="driftpilot.store"):
            sealer.labels_written(model_name, 10)
            sealer.drain(120)
        assert f"sealing {model_name} failed" in caplog.text and segment_count(store, model_name) == 0
        helper.work = seal_at
        sealer.labels_written(model_name, 10)
        sealer.drain(120)
        assert segment_count(store, model_name) == 2 and label_rows(store, model_name) == 0
        windows_equal(store.labeled_window(model_name, clock.now()), window)
    finally:
        sealer.stop()
