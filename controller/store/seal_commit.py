"""Committing a prepared seal (:mod:`controller.store.seal_prepare`): in a short write transaction, under the model's
label and seal locks, check the block is still exact and move it (the segment and the ids in, the moved rows out).
:func:`seal_once` is one segment's two steps with their timings, wherever it runs
(:mod:`controller.store.seal_process`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from controller.store import segments as seg
from controller.store.db import advisory_xact_lock
from controller.store.rows import one_of
from controller.store.seal_prepare import PreparedSeal, SealJob, range_counts
from controller.store.sealed import ensure_model_id, seal_lock
from controller.store.tables import labels, predictions, sealed_ids, segments

Connect = Callable[[], AbstractContextManager[sa.Connection]]


@dataclass(frozen=True)
class SealResult:
    segment_id: int
    rows: int
    first_seq: int
    last_seq: int
    bytes: int


def commit_prepared(conn: sa.Connection, prepared: PreparedSeal, now: datetime) -> SealResult | None:
    """Move a prepared block into its segment: in a write transaction, under the model's label lock and its seal
    lock (as every writer of its rows takes them), check the block is still exact, then insert the segment and the
    ids, delete the moved rows. None: it is not exact any more (a label of it overwritten, its rows pruned or
    sealed by another process since the snapshot); prepare again."""
    model = prepared.model
    advisory_xact_lock(conn, f"labels:{model}")
    seal_lock(conn, model)
    if not still_exact(conn, prepared):
        return None
    mid = ensure_model_id(conn, model)
    metadata = {"model": model, **prepared.metadata, "created_at": now, "format": seg.FORMAT, "data": prepared.data}
    segment_id = conn.execute(segments.insert().values(**metadata).returning(segments.c.segment_id)).scalar_one()
    # The id rows: new for the predictions that move now, updated for ids already sealed (later labels of theirs).
    current = prepared.current
    if prepared.moved:
        insert_ids(conn, [(mid, pid, segment_id, segment_id, current.get(pid)) for pid in prepared.moved])
    for pid in prepared.already:
        values: dict[str, Any] = {"last_segment_id": segment_id}
        if pid in current:
            values["label_seq"] = current[pid]
        conn.execute(sealed_ids.update().where(sealed_ids.c.model_id == mid, sealed_ids.c.prediction_id == pid)
                     .values(**values))
    conn.execute(labels.delete().where(one_of(conn, labels.c.seq, prepared.seqs.tolist(), "seqs", sa.BigInteger)))
    if prepared.moved:
        conn.execute(predictions.delete().where(predictions.c.model == model,
                                                one_of(conn, predictions.c.prediction_id, prepared.moved)))
    return SealResult(segment_id, prepared.rows, metadata["first_seq"], metadata["last_seq"], len(prepared.data))


def still_exact(conn: sa.Connection, prepared: PreparedSeal) -> bool:
    """The label rows of the block's seq range are still those of the snapshot, and those in force still are.

    Counting is enough, under the label lock: no row ever enters a range the snapshot saw (seqs are handed out in
    commit order under that lock, so a newer label gets a larger seq), a row only goes from in force to superseded,
    and whatever else could make the block wrong removes rows (retention takes an id's label rows with its
    prediction; another sealer, the block's rows). Both counts only ever fall, so equal counts are equal rows. A
    prediction that arrived since for a label of the range that had none joins it in the row tables, as it would
    after this seal. (A label of the range without a prediction, overwritten since, fails the check needlessly: the
    block is prepared again.)"""
    counts = range_counts(conn, prepared.model, prepared.metadata)
    return counts == (prepared.range_rows, prepared.range_live)


def insert_ids(conn: sa.Connection, rows: list[tuple[int, str, int, int, int | None]]) -> None:
    columns = "model_id, prediction_id, segment_id, last_segment_id, label_seq"
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"INSERT INTO sealed_ids ({columns}) VALUES (?, ?, ?, ?, ?)", rows)
        return
    with conn.connection.driver_connection.cursor() as cursor, \
            cursor.copy(f"COPY sealed_ids ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


@dataclass(frozen=True)
class SealStep:
    """One segment's prepare and commit: ``result`` None when the prepared block was stale (prepare again)."""

    first_seq: int
    last_seq: int
    result: SealResult | None
    prepared_s: float
    held_s: float  # the write transaction, from its begin (on SQLite: the write lock taken) to its commit
    waited_s: float  # waiting for it to begin


def seal_once(prepare: Callable[[SealJob], PreparedSeal | None], transaction: Connect, job: SealJob,
              now: datetime) -> SealStep | None:
    """Prepare the job's next segment with ``prepare`` and commit it in ``transaction()`` (a write transaction);
    None when nothing is due."""
    began = time.perf_counter()
    prepared = prepare(job)
    if prepared is None:
        return None
    prepared_s = time.perf_counter() - began
    began = time.perf_counter()
    with transaction() as conn:
        locked = time.perf_counter()
        result = commit_prepared(conn, prepared, now)
    return SealStep(prepared.metadata["first_seq"], prepared.metadata["last_seq"], result, prepared_s,
                    time.perf_counter() - locked, locked - began)
