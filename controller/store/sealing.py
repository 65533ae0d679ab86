"""Sealing: moving a model's oldest labeled rows from the row tables into a new segment, and when a store does it.

* :class:`Sealing`: the settings (segment size, rows kept in the row tables, background | inline | off), also from
  the environment (docs/deployment.md);
* :func:`seal_segments`: a store's model sealed segment by segment while enough rows are due, each segment in two
  steps: prepared from a read snapshot with no lock held (:mod:`controller.store.seal_prepare`, in a helper process
  or the thread: :mod:`controller.store.seal_process`), then :func:`commit_prepared` in a short write transaction
  that checks the block is still exact and moves it (or finds it stale: prepared again);
* :class:`Sealer`: a store's trigger: counts the label rows it writes and, past a quarter segment, seals inline (in
  the writer's thread) or asks its background thread (one per store, coalescing requests; it prepares in the
  store's helper process).

Reads return exactly what they returned before a seal; only their speed and the database's size change. The sealed
tier's lookups (segments, ids, overwrites) are :mod:`controller.store.sealed`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from controller.store import segments as seg
from controller.store.db import advisory_xact_lock
from controller.store.rows import one_of
from controller.store.seal_prepare import PreparedSeal, SealJob, range_counts
from controller.store.seal_process import Preparer, ThreadPreparer
from controller.store.sealed import ensure_model_id, seal_lock
from controller.store.tables import labels, predictions, sealed_ids, segments

if TYPE_CHECKING:
    from controller.store.events import EventStore

log = logging.getLogger("driftpilot.store")

# Pause between two segments sealed back to back on SQLite, so writers waiting for its write lock get it in between.
SQLITE_SEAL_PAUSE_S = 0.1


@dataclass(frozen=True)
class Sealing:
    """When a model's labeled rows move from the row tables into segments (docs/architecture.md).

    Each segment holds ``rows`` label rows; a model keeps at least ``keep_rows`` labeled rows in the row tables (its
    newest, where overwrites and the loop's cursors mostly are). ``mode``: ``"background"`` (after label writes,
    a thread of this store seals what is due), ``"inline"`` (the writer seals after its commit; deterministic, for
    tests and benchmarks), ``"off"`` (only :meth:`EventStore.seal` does)."""

    rows: int = 20_000
    keep_rows: int = 10_000
    mode: str = "background"

    def __post_init__(self) -> None:
        if self.rows < 1 or self.keep_rows < 0:
            raise ValueError(f"Sealing needs rows >= 1 and keep_rows >= 0, got rows={self.rows}, "
                             f"keep_rows={self.keep_rows}")
        if self.mode not in ("background", "inline", "off"):
            raise ValueError(f"Sealing mode must be 'background', 'inline' or 'off', got {self.mode!r}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Sealing:
        """The defaults, or ``DRIFTPILOT_SEGMENT_ROWS`` / ``DRIFTPILOT_SEGMENT_KEEP_ROWS`` / ``DRIFTPILOT_SEALING``
        (background | inline | off) when set: every process that opens the store reads them (docs/deployment.md)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for key, name in (("rows", "DRIFTPILOT_SEGMENT_ROWS"), ("keep_rows", "DRIFTPILOT_SEGMENT_KEEP_ROWS")):
            if environ.get(name):
                try:
                    values[key] = int(environ[name])
                except ValueError:
                    raise ValueError(f"{name}={environ[name]!r} is not a whole number of rows; unset it for the "
                                     f"default ({getattr(cls, key)})") from None
        if environ.get("DRIFTPILOT_SEALING"):
            values["mode"] = environ["DRIFTPILOT_SEALING"]
        return cls(**values)


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
        _insert_ids(conn, [(mid, pid, segment_id, segment_id, current.get(pid)) for pid in prepared.moved])
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
    counts = range_counts(conn, prepared.model, prepared.metadata["first_seq"], prepared.metadata["last_seq"])
    return counts == (prepared.range_rows, prepared.range_live)


def _insert_ids(conn: sa.Connection, rows: list[tuple[int, str, int, int, int | None]]) -> None:
    columns = "model_id, prediction_id, segment_id, last_segment_id, label_seq"
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"INSERT INTO sealed_ids ({columns}) VALUES (?, ?, ?, ?, ?)", rows)
        return
    with conn.connection.driver_connection.cursor() as cursor, \
            cursor.copy(f"COPY sealed_ids ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


# A prepared block found stale this many times in a row: give up until the next trigger (writers keep overwriting
# the model's oldest labels; rows stay in the row tables meanwhile, reads are exact either way).
MAX_STALE = 3


def seal_segments(store: EventStore, model: str, *, keep_rows: int | None = None, min_rows: int | None = None,
                  preparer: Preparer | None = None) -> list[SealResult]:
    """:meth:`EventStore.seal <controller.store.events.EventStore.seal>`: segments of ``store.sealing.rows`` rows
    while more than ``keep_rows`` would stay, each prepared from a snapshot by ``preparer`` (default: in this
    thread) and committed in its own short write transaction."""
    keep = store.sealing.keep_rows if keep_rows is None else keep_rows
    preparer = preparer or ThreadPreparer(store.read)
    job = SealJob(model, store.sealing.rows, keep, min_rows)
    results: list[SealResult] = []
    stale = 0
    while True:
        began = time.perf_counter()
        prepared = preparer.prepare(job)
        if prepared is None:
            return results
        prepared_s = time.perf_counter() - began
        if results and store.engine.dialect.name == "sqlite":
            # SQLite's write lock is not handed over fairly: a waiting writer polls with growing sleeps (up to
            # 100 ms), so commits back to back could hold it off past its busy timeout.
            time.sleep(SQLITE_SEAL_PAUSE_S)
        began = time.perf_counter()
        with store.transaction() as conn:
            result = commit_prepared(conn, prepared, store.clock.now())
        committed_s = time.perf_counter() - began
        if result is None:
            stale += 1
            log.info("the prepared segment of %s (seqs %d-%d) changed before its commit (%d of %d); preparing again",
                     model, prepared.metadata["first_seq"], prepared.metadata["last_seq"], stale, MAX_STALE)
            if stale >= MAX_STALE:
                log.warning("sealing %s gave up after %d stale prepares; retried after the next label writes",
                            model, stale)
                return results
            continue
        stale = 0
        log.info("sealed %d rows of %s (seqs %d-%d) into segment %d: %d bytes; prepared in %.0f ms, committed in "
                 "%.0f ms", result.rows, model, result.first_seq, result.last_seq, result.segment_id, result.bytes,
                 prepared_s * 1e3, committed_s * 1e3)
        results.append(result)


class Sealer:
    """When a store seals: label rows written by this store are counted per model; past a quarter segment,
    ``seal(model, preparer)`` runs inline with a :class:`ThreadPreparer` (mode ``inline``) or on the store's
    background thread with the preparer ``helper()`` makes (``background``; both started on first use); mode
    ``off`` never seals here."""

    def __init__(self, sealing: Sealing, seal: Callable[[str, Preparer], Any], in_thread: Preparer,
                 helper: Callable[[], Preparer]) -> None:
        self.sealing = sealing
        self.seal = seal
        self.in_thread = in_thread
        self.helper = helper
        self._since_check: dict[str, int] = {}
        self._thread: _SealThread | None = None
        self._helper: Preparer | None = None
        self._lock = threading.Lock()

    def labels_written(self, model: str, rows: int) -> None:
        """Count label rows written by this store; past a quarter segment, look whether sealing is due."""
        if self.sealing.mode == "off" or rows == 0:
            return
        written = self._since_check.get(model, 0) + rows
        if written < max(1, self.sealing.rows // 4):
            self._since_check[model] = written
            return
        self._since_check[model] = 0
        if self.sealing.mode == "inline":
            self.seal_quietly(model, self.in_thread)
            return
        with self._lock:
            if self._thread is None:
                self._helper = self.helper()
                helper = self._helper
                self._thread = _SealThread(lambda name: self.seal_quietly(name, helper))
            self._thread.request(model)

    def seal_quietly(self, model: str, preparer: Preparer) -> None:
        """Sealing is maintenance: a failure is logged (and retried after the next quarter segment), never raised into
        the writer whose batch is committed already."""
        try:
            self.seal(model, preparer)
        except Exception:
            log.exception("sealing %s failed; its rows stay in the row tables and sealing is retried later", model)

    def drain(self, timeout_s: float) -> None:
        """Block until the background thread has nothing left to do."""
        thread = self._thread
        if thread is not None:
            thread.drain(timeout_s)

    def stop(self) -> None:
        thread, helper = self._thread, self._helper
        if thread is not None:
            thread.stop()
        if helper is not None:
            helper.close()


class _SealThread:
    """The background thread of one store that seals models after label writes (one at a time, coalescing requests).
    A daemon thread: a process that exits mid-seal rolls that transaction back; nothing is half-moved."""

    def __init__(self, work: Callable[[str], None]) -> None:
        self.work = work
        self._pending: dict[str, None] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="driftpilot-sealer", daemon=True)
        self._thread.start()

    def request(self, model: str) -> None:
        with self._cond:
            self._pending[model] = None
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                model = next(iter(self._pending))
                del self._pending[model]
                self._busy = True
            try:
                self.work(model)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def drain(self, timeout_s: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: (not self._pending and not self._busy) or self._stopped,
                                       timeout=timeout_s):
                raise TimeoutError(f"the store's sealer still busy after {timeout_s:g} s")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
