"""Sealing: moving a model's oldest labeled rows from the row tables into a new segment, and when a store does it.

* :class:`Sealing`: the settings (segment size, rows kept in the row tables, background | inline | off), also from
  the environment (docs/deployment.md);
* :func:`seal_oldest`: one segment's move, in one write transaction; :func:`seal_segments`: a store's model
  sealed segment by segment while enough rows are due;
* :class:`Sealer`: a store's trigger: counts the label rows it writes and, past a quarter segment, seals inline or
  asks its background thread (one per store, coalescing requests).

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
from controller.store.rows import fetch_block, from_us, labeled_rows, one_of
from controller.store.sealed import ensure_model_id, model_id, payload_source, seal_lock
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


def hot_matched_count(conn: sa.Connection, model: str, mid: int | None, limit: int | None = None) -> int:
    """Label rows of the model in the row tables that have a prediction (what sealing can move); counting stops at
    ``limit``."""
    query = labeled_rows(conn, mid, [labels.c.model == model], shape="seq", limit=limit)
    return int(conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one())


def seal_size(conn: sa.Connection, model: str, mid: int | None, rows: int, *, keep: int = 0,
              min_rows: int | None = None) -> int:
    """How many rows the next segment would take (0: not enough to seal); see :func:`seal_oldest`."""
    available = hot_matched_count(conn, model, mid, limit=rows + keep) - keep
    size = min(rows, available)
    if size < 1 or (size < rows and (min_rows is None or size < min_rows)):
        return 0
    return size


def seal_oldest(conn: sa.Connection, model: str, rows: int, now: datetime, *, keep: int = 0,
                min_rows: int | None = None) -> SealResult | None:
    """Move the model's oldest labeled rows of the row tables into one new segment: ``rows`` of them, or fewer (at
    least ``min_rows``) when that is all there is beyond ``keep`` newest ones. Call in a write transaction; it takes
    the model's label lock and its seal lock first, so the count is exact even when several processes seal. None when
    there is not enough to seal."""
    advisory_xact_lock(conn, f"labels:{model}")
    seal_lock(conn, model)
    mid = model_id(conn, model)
    size = seal_size(conn, model, mid, rows, keep=keep, min_rows=min_rows)
    if size == 0:
        return None
    if mid is None:
        mid = ensure_model_id(conn, model)
    # The oldest rows in seq order. Arrival never decreases along a model's seq, so (arrived_at, seq) is seq order,
    # and it is the order of the (model, arrived_at) index: no sort of the model's whole table.
    query = labeled_rows(conn, mid, [labels.c.model == model], order="arrival", limit=size)
    block = fetch_block(conn, query, payload_source(conn, model, mid))
    if len(block) < size:
        return None
    table = seg.encode(block)
    data = seg.to_bytes(table)
    owner = block.owner
    metadata = {"model": model, **segment_metadata(block), "created_at": now, "format": seg.FORMAT, "data": data}
    segment_id = conn.execute(segments.insert().values(**metadata).returning(segments.c.segment_id)).scalar_one()
    # The id rows: new for the predictions that move now, updated for ids already sealed (later labels of theirs).
    current = {pid: int(s) for pid, s, sup in zip(block.prediction_id, block.seq, block.superseded_at, strict=True)
               if sup == seg.SUPERSEDED_NEVER}
    moved = [pid for pid, own in zip(block.prediction_id, owner, strict=True) if own]
    moved_set = set(moved)
    if moved:
        _insert_ids(conn, [(mid, pid, segment_id, segment_id, current.get(pid)) for pid in moved])
    already = list(dict.fromkeys(pid for pid in block.prediction_id if pid not in moved_set))
    for pid in already:
        values: dict[str, Any] = {"last_segment_id": segment_id}
        if pid in current:
            values["label_seq"] = current[pid]
        conn.execute(sealed_ids.update().where(sealed_ids.c.model_id == mid, sealed_ids.c.prediction_id == pid)
                     .values(**values))
    conn.execute(labels.delete().where(one_of(conn, labels.c.seq, [int(s) for s in block.seq], "seqs",
                                              sa.BigInteger)))
    if moved:
        conn.execute(predictions.delete().where(predictions.c.model == model,
                                                one_of(conn, predictions.c.prediction_id, moved)))
    return SealResult(segment_id, len(block), metadata["first_seq"], metadata["last_seq"], len(data))


def segment_metadata(block: seg.RowBlock) -> dict[str, Any]:
    """The ``segments`` row's metadata of a block (seq and arrival range, counts, the owned predictions' event and
    receipt times): what :func:`controller.store.sealed.metas` selects segments by."""
    owner = block.owner
    owned_events = block.event_time[owner]
    return {
        "first_seq": int(block.seq.min()), "last_seq": int(block.seq.max()), "row_count": len(block),
        "owner_count": int(owner.sum()), "first_arrival": from_us(int(block.arrived_at.min())),
        "last_arrival": from_us(int(block.arrived_at.max())),
        "min_event_time": from_us(int(owned_events.min())) if owned_events.size else None,
        "max_event_time": from_us(int(owned_events.max())) if owned_events.size else None,
        "max_received_at": from_us(int(block.received_at[owner].max())) if owned_events.size else None,
    }


def _insert_ids(conn: sa.Connection, rows: list[tuple[int, str, int, int, int | None]]) -> None:
    columns = "model_id, prediction_id, segment_id, last_segment_id, label_seq"
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"INSERT INTO sealed_ids ({columns}) VALUES (?, ?, ?, ?, ?)", rows)
        return
    with conn.connection.driver_connection.cursor() as cursor, \
            cursor.copy(f"COPY sealed_ids ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def seal_segments(store: EventStore, model: str, *, keep_rows: int | None = None,
                  min_rows: int | None = None) -> list[SealResult]:
    """:meth:`EventStore.seal <controller.store.events.EventStore.seal>`: segments of ``store.sealing.rows`` rows
    while more than ``keep_rows`` would stay, each in its own write transaction."""
    keep = store.sealing.keep_rows if keep_rows is None else keep_rows
    results: list[SealResult] = []
    while True:
        # Looked at in a read transaction first: the write lock (all of SQLite's) is taken only when there is work.
        with store.read() as conn:
            if not seal_size(conn, model, model_id(conn, model), store.sealing.rows, keep=keep, min_rows=min_rows):
                return results
        if results and store.engine.dialect.name == "sqlite":
            # SQLite's write lock is not handed over fairly: a waiting writer polls with growing sleeps (up to
            # 100 ms), so segment after segment back to back could hold it off past its busy timeout.
            time.sleep(SQLITE_SEAL_PAUSE_S)
        with store.transaction() as conn:
            result = seal_oldest(conn, model, store.sealing.rows, store.clock.now(), keep=keep, min_rows=min_rows)
        if result is None:
            return results
        log.info("sealed %d rows of %s (seqs %d-%d) into segment %d: %d bytes", result.rows, model,
                 result.first_seq, result.last_seq, result.segment_id, result.bytes)
        results.append(result)


class Sealer:
    """When a store seals: label rows written by this store are counted per model; past a quarter segment,
    ``seal(model)`` runs inline (mode ``inline``) or on the store's background thread (``background``, started on
    first use); mode ``off`` never seals here."""

    def __init__(self, sealing: Sealing, seal_model: Callable[[str], Any]) -> None:
        self.sealing = sealing
        self.seal_model = seal_model
        self._since_check: dict[str, int] = {}
        self._thread: _SealThread | None = None
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
            self.seal_quietly(model)
            return
        with self._lock:
            if self._thread is None:
                self._thread = _SealThread(self.seal_quietly)
            self._thread.request(model)

    def seal_quietly(self, model: str) -> None:
        """Sealing is maintenance: a failure is logged (and retried after the next quarter segment), never raised into
        the writer whose batch is committed already."""
        try:
            self.seal_model(model)
        except Exception:
            log.exception("sealing %s failed; its rows stay in the row tables and sealing is retried later", model)

    def drain(self, timeout_s: float) -> None:
        """Block until the background thread has nothing left to do."""
        thread = self._thread
        if thread is not None:
            thread.drain(timeout_s)

    def stop(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.stop()


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
