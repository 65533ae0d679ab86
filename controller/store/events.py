"""The event store: predictions, the natural labels that arrive later, decisions and small controller state.

Two rules make everything downstream honest:

* **Label maturity.** :meth:`EventStore.labeled_window` is the one accessor for labeled data. ``as_of=T`` returns only
  labels that had arrived by ``T``, with the value in force at ``T`` (a later overwrite is invisible), in arrival
  order. Training, monitoring and the promotion gate all read through it.
* **Atomic, durable batches.** A batch is checked completely first and written in one transaction; any problem refuses
  the whole batch and nothing is written. A method that returns has committed.

Arrival times are stamped by the store's injected clock, never taken from the client, so a decision made at ``T``
can be replayed exactly: nobody can insert a label "in the past".

**Concurrent writers** (several API replicas or processes on one database) get the same answers as one writer would:

* Predictions are inserted with ``ON CONFLICT DO NOTHING``; when a row was already there (a retry, or another writer
  inserting the same id at the same moment), the stored content is compared in the same transaction: identical is a
  no-op, different is a :class:`PredictionConflict` for this batch, never a database error. A prediction whose
  ``event_time`` the client did not give is stamped with the store clock and compared on everything else, so
  re-sending it is a no-op too.
* Label transactions of one model run one at a time: on PostgreSQL each takes a transaction-scoped advisory lock
  (``pg_advisory_xact_lock``, keyed by ``'labels:' || model``) as its first statement; SQLite serializes writers by
  itself (``BEGIN IMMEDIATE``). So the decision "duplicate / conflict / overwrite" is made on the committed state,
  and **a model's label ``seq`` order is its commit order**: a reader paging with ``labeled_window(after_seq=
  cursor)`` never sees seq n+1 before seq n is visible, so a cursor skips nothing. Arrival times are stamped inside
  that transaction as ``max(clock.now(), newest arrival of the model)``, so ``arrived_at`` never decreases along
  ``seq`` and an ``as_of`` cut is a prefix in ``seq`` order, even when the writers' clocks disagree.
* Items of one label batch apply in order, as if sent one by one: the same id twice with different values needs
  ``overwrite`` on the later item, and the earlier value is recorded as immediately superseded (in force at no
  instant).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from controller.clock import Clock, SystemClock, ensure_utc
from controller.errors import StoreUnavailable
from controller.store import recent, row_reads, sealed, sealed_reads, state_blobs, writes
from controller.store import segments as seg
from controller.store.db import (
    begin_snapshot,
    begin_write,
    create_store_engine,
    describe_failure,
    describe_unreachable,
    upgrade,
)
from controller.store.frames import assemble_window, features_frame, newest_features_frame
from controller.store.limits import TrafficLimits, WindowLimits
from controller.store.recent import LoggedRows, MaturedRows
from controller.store.records import (
    LabelChange,
    LabeledWindow,
    LabelReceipt,
    LabelRecord,
    LabelStats,
    PredictionRecord,
)
from controller.store.rows import from_us, to_us
from controller.store.seal_process import ThreadSealer, sealer_for
from controller.store.sealing import Sealer, Sealing, SealResult, seal_segments
from controller.store.statistics import PlannerStatistics

# Names other modules import from here; they live in the modules above.
__all__ = [
    "EventStore", "LabelChange", "LabelReceipt", "LabelRecord", "LabelStats", "LabeledWindow", "PredictionRecord",
    "SealResult", "Sealing", "features_frame",
]


class EventStore:
    """Predictions and natural labels for any number of models, on one database.

    A thin front: writes are :mod:`~controller.store.writes`; each read is its row tables' half
    (:mod:`~controller.store.row_reads`) and, once something of the model is sealed, its segments' half
    (:mod:`~controller.store.sealed_reads`) in one snapshot; sealing is :mod:`~controller.store.sealing`.
    """

    def __init__(self, engine: sa.Engine, clock: Clock | None = None, *, sealing: Sealing | None = None) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self.sealing = sealing or Sealing.from_environment()
        self.statistics = PlannerStatistics(engine)
        # Seals in the calling thread: EventStore.seal, inline mode, and where the helper process cannot run.
        self.in_thread_sealer = ThreadSealer(self.read, self.transaction)
        self._sealer = Sealer(self.sealing, lambda model, where: seal_segments(self, model, where=where),
                              self.in_thread_sealer,
                              lambda: sealer_for(self.engine, self.in_thread_sealer))

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None, *, migrate: bool = True,
                 sealing: Sealing | None = None) -> EventStore:
        """Open the store at ``url``, applying pending schema migrations first (``migrate=False`` to skip)."""
        engine = create_store_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine, clock, sealing=sealing)

    # ---------------------------------------------------------------------------------------------------- writing

    def add_predictions(self, model: str, records: Sequence[PredictionRecord]) -> list[str]:
        """Store a batch of predictions atomically and return their ids (generated where not given).

        Re-sending a prediction with the same id and the same content is a no-op (safe client retries, also when
        another writer sends it at the same moment); the same id with different content refuses the whole batch with
        :class:`PredictionConflict`. A record without ``event_time`` is compared on everything but the event time.
        """
        ids, rows = writes.prediction_rows(model, records, self.clock.now())
        with self.transaction() as conn:
            writes.insert_predictions(conn, model, records, rows)
        return ids

    def add_labels(self, model: str, records: Sequence[LabelRecord]) -> LabelReceipt:
        """Store a batch of natural labels atomically, stamped with the store clock's arrival time.

        A label may arrive before its prediction (it is kept and joins when the prediction arrives). The same value
        twice is a no-op. A different value for an already-labeled prediction is a :class:`LabelConflict` (nothing
        stored) unless the record says ``overwrite=True``; the old row is then kept, marked superseded, as the audit
        record of the change. Items apply in order, as if sent one by one (see the module docstring).
        """
        with self.transaction() as conn:
            receipt = writes.insert_labels(conn, model, records, self.clock)
        self._sealer.labels_written(model, receipt.inserted + receipt.overwritten)
        return receipt

    def seal(self, model: str, *, keep_rows: int | None = None, min_rows: int | None = None) -> list[SealResult]:
        """Move the model's oldest labeled rows into segments of ``sealing.rows`` rows while more than ``keep_rows``
        (default ``sealing.keep_rows``) would stay in the row tables; ``min_rows`` allows a last, smaller segment.
        Reads return exactly what they returned before; only their speed and the database's size change."""
        return seal_segments(self, model, keep_rows=keep_rows, min_rows=min_rows)

    def wait_for_sealing(self, timeout_s: float = 60.0) -> None:
        """Block until the background sealer has nothing left to do (tests, benchmarks, a graceful stop)."""
        self._sealer.drain(timeout_s)

    # ---------------------------------------------------------------------------------------------------- reading

    def labeled_window(
        self,
        model: str,
        as_of: datetime,
        *,
        since: datetime | None = None,
        after_seq: int | None = None,
        through_seq: int | None = None,
        max_rows: int | None = None,
        feature_types: Mapping[str, str] | None = None,
    ) -> LabeledWindow:
        """Joined prediction+label rows whose label had arrived by ``as_of``, oldest arrival first.

        ``since`` keeps labels that arrived at or after it; ``after_seq`` / ``through_seq`` keep labels with
        ``after_seq < seq <= through_seq`` (a previous window's ``last_seq`` marks where it ended); ``max_rows`` keeps
        the most recent rows. ``feature_types`` (name -> numeric |
        categorical | boolean) fixes the feature columns and their dtypes; without it, columns come from the data.
        """
        as_of = ensure_utc(as_of)
        if max_rows is not None and max_rows < 0:
            raise ValueError(f"max_rows must be >= 0, got {max_rows}")
        limits = WindowLimits(as_of, ensure_utc(since) if since is not None else None, after_seq, through_seq,
                              max_rows)
        with self.read(model) as conn:
            parts = self._window_parts(conn, model, limits, None)
        columns = assemble_window(parts, feature_types)
        return LabeledWindow(model=model, as_of=as_of, **vars(columns))  # WindowColumns: the same fields

    def _window_parts(self, conn: sa.Connection, model: str, limits: WindowLimits,
                      logical: Sequence[str] | None) -> list[seg.Part]:
        mid = sealed.model_id(conn, model)
        hot = row_reads.window_part(conn, model, mid, limits)
        return [hot] if mid is None else sealed_reads.window_parts(conn, model, limits, logical, hot)

    def predictions_frame(self, model: str, as_of: datetime, *, since: datetime | None = None,
                          max_rows: int | None = None,
                          feature_types: Mapping[str, str] | None = None) -> pd.DataFrame:
        """Logged features of predictions known by ``as_of`` (labeled or not), oldest first: the "current" side of
        data drift. Reference rows (a bootstrap file) are not traffic and are left out. ``since`` keeps event times
        at or after it; ``max_rows`` keeps the newest rows."""
        limits = TrafficLimits(ensure_utc(as_of), since=ensure_utc(since) if since is not None else None)
        with self.read() as conn:
            rows = row_reads.traffic_features(conn, model, limits, max_rows)
            mid = sealed.model_id(conn, model)
            cold = sealed_reads.traffic_parts(conn, model, limits, max_rows) if mid is not None else []
        if not cold:
            return features_frame([r.features for r in rows], feature_types)
        hot = (seg.features_part([r.features for r in rows]),
               np.array([to_us(r.event_time) for r in rows], dtype=np.int64))
        return newest_features_frame([*cold, hot], max_rows, feature_types)

    def label_history(self, model: str, prediction_id: str) -> list[LabelChange]:
        """Every value a prediction's label has had, oldest first (the overwrite audit trail)."""
        with self.read() as conn:
            changes = row_reads.label_history(conn, model, prediction_id)
            mid = sealed.model_id(conn, model)
            if mid is not None:
                changes += sealed_reads.label_history(conn, model, mid, prediction_id)
        return [change for _, change in sorted(changes, key=lambda c: c[0])]

    def get_prediction(self, model: str, prediction_id: str) -> dict[str, Any] | None:
        with self.read() as conn:
            found = row_reads.prediction(conn, model, prediction_id)
            if found is not None:
                return found
            mid = sealed.model_id(conn, model)
            record = sealed_reads.prediction(conn, mid, prediction_id) if mid is not None else None
        return {"model": model, **record} if record is not None else None

    def known_prediction_ids(self, model: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already stored for ``model``."""
        with self.read() as conn:
            known = set(row_reads.stored_predictions(conn, model, list(ids), content=False))
            mid = sealed.model_id(conn, model)
            if mid is not None:
                known |= set(sealed.lookup(conn, mid, [pid for pid in ids if pid not in known]))
        return known

    def count_predictions(self, model: str) -> int:
        with self.read() as conn:
            return row_reads.count_predictions(conn, model) + sealed_reads.count_predictions(conn, model)

    # ------------------------------------------------------------------------------------- cheap reads of the loop
    # The controller ticks often; these cost what arrived after a cursor, never the whole history.

    def recent_events(self, model: str, *, logged_from: datetime, logged_before: datetime, labels_after: int | None,
                      as_of: datetime, max_labels: int | None = None) -> tuple[LoggedRows, MaturedRows]:
        """One race tick's reads in one snapshot: predictions logged in ``[logged_from, logged_before)`` (store
        arrival time, reference rows excluded) and labels after seq ``labels_after`` in force at ``as_of`` with their
        features (see :mod:`controller.store.recent`; ``complete`` False: read those labels with
        :meth:`labeled_window`, some of them are sealed)."""
        with self.read(model) as conn:
            logged = recent.logged_rows(conn, model, ensure_utc(logged_from), ensure_utc(logged_before))
            matured = recent.matured_rows(conn, model, ensure_utc(as_of), labels_after, max_labels)
        return logged, matured

    def labeled_count(self, model: str, as_of: datetime, *, after_seq: int | None = None,
                      since: datetime | None = None) -> tuple[int, int | None]:
        """Labeled rows ``labeled_window(model, as_of, after_seq=..., since=...)`` would return: (count, newest
        seq). With ``after_seq`` it reads the rows after the cursor only, however long the history."""
        limits = WindowLimits(ensure_utc(as_of), ensure_utc(since) if since is not None else None, after_seq)
        with self.read(model) as conn:
            mid = sealed.model_id(conn, model)
            count, newest = row_reads.window_count(conn, model, mid, limits)
            if mid is not None:
                cold_count, cold_newest = sealed_reads.window_count(conn, model, limits)
                count += cold_count
                if cold_newest is not None:
                    newest = max(newest or 0, cold_newest)
        return count, newest

    def tail_start(self, model: str, as_of: datetime, rows: int) -> datetime | None:
        """The arrival time of the oldest of the newest ``rows`` labeled rows as of ``as_of`` (None when there are
        fewer). ``labeled_window(model, as_of, since=tail_start(...), max_rows=rows)`` returns the same rows as
        ``labeled_window(model, as_of, max_rows=rows)``, but reads only the tail of the history: a model's
        ``arrived_at`` never decreases along ``seq``, so the newest rows by seq are the newest by arrival."""
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        as_of = ensure_utc(as_of)
        with self.read(model) as conn:
            if sealed.model_id(conn, model) is None:
                return row_reads.tail_start(conn, model, as_of, rows)
            parts = self._window_parts(conn, model, WindowLimits(as_of, max_rows=rows), ["arrived_at"])
        arrived = np.concatenate([p.ints("arrived_at") for p in parts]) if parts else np.empty(0, np.int64)
        if arrived.size < rows:
            return None
        return from_us(int(arrived.min()))

    def traffic_since(self, model: str, as_of: datetime, after: datetime | None) -> tuple[int, datetime | None]:
        """Logged predictions (not reference rows) known by ``as_of`` with an event time after ``after``:
        (count, newest event time). The (model, event_time) index keeps this proportional to the new rows."""
        limits = TrafficLimits(ensure_utc(as_of), after=ensure_utc(after) if after is not None else None)
        with self.read() as conn:
            count, newest = row_reads.traffic_count(conn, model, limits)
            if sealed.model_id(conn, model) is not None:
                cold_count, cold_newest = sealed_reads.traffic_count(conn, model, limits)
                count += cold_count
                if cold_newest is not None and (newest is None or cold_newest > newest):
                    newest = cold_newest
        return count, newest

    def label_stats(self, model: str, as_of: datetime | None = None, *, delay_sample: int = 100_000) -> LabelStats:
        """Counts and label-delay percentiles as of ``as_of`` (default: now), of the model's traffic: bootstrap's
        reference rows are counted apart (``reference_rows``) and left out of coverage, pending and delays.

        Delay = label arrival - prediction event time, over the most recent ``delay_sample`` matured labels, so the
        cost stays bounded on a long history.
        """
        as_of = ensure_utc(as_of or self.clock.now())
        with self.read(model) as conn:
            mid = sealed.model_id(conn, model)
            tally = row_reads.label_tally(conn, model, mid, as_of, delay_sample)
            if mid is not None:
                sealed_reads.add_label_tally(conn, model, as_of, tally)
        return tally.stats(model, as_of, delay_sample)

    # ---------------------------------------------------------------------------------------------------- state

    def put_state(self, model: str, key: str, value: bytes) -> None:
        """Durably store a named blob (detector or learner state) for ``model``, replacing the old one."""
        self.put_states(model, {key: value})

    def put_states(self, model: str, values: Mapping[str, bytes], *,
                   outcome_block: Mapping[str, Any] | None = None) -> None:
        """Several named blobs, and optionally one block of the race's outcome log (``first_seq``, ``last_seq``,
        ``row_count``, ``racers``, ``data``), in one transaction: a crash keeps all of them or none."""
        now = self.clock.now()
        with self.transaction() as conn:
            state_blobs.put(conn, model, values, now, outcome_block=outcome_block)

    def state_updated_at(self, model: str, key: str) -> datetime | None:
        """When a named blob was last written (None when it was never written)."""
        with self.connection() as conn:
            return state_blobs.updated_at(conn, model, key)

    def race_outcome_blocks(self, model: str, *, after_seq: int | None = None) -> list[dict[str, Any]]:
        """The race's outcome log of ``model`` (blocks holding a label seq after ``after_seq``), oldest first."""
        with self.read() as conn:
            return state_blobs.outcome_blocks(conn, model, after_seq)

    def get_state(self, model: str, key: str) -> bytes | None:
        with self.connection() as conn:
            return state_blobs.value(conn, model, key)

    def get_states(self, model: str, keys: Sequence[str]) -> dict[str, bytes]:
        """Several of the model's state values in one query (the ones stored; missing keys are left out)."""
        with self.connection() as conn:
            return state_blobs.values(conn, model, keys)

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        with self.connection() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self._sealer.stop()
        self.engine.dispose()

    # ------------------------------------------------------------------------------------------------ connections

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A connection in a committed-on-exit transaction, with the store's error mapping (StoreUnavailable);
        for the store's other tables (decisions, leases in ``controller.store.control``) and its maintenance
        (retention). It is a write transaction: on SQLite it holds the database's write lock from its first statement
        (``BEGIN IMMEDIATE``), so a read-then-write inside it is not raced by another process."""
        with self.connection() as conn:
            try:
                with begin_write(conn):
                    yield conn
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                # Connected, then failed: say so, rather than "unreachable". The transaction was rolled back.
                raise StoreUnavailable(describe_failure(self.engine, exc)) from exc

    @contextmanager
    def read(self, model: str | None = None) -> Iterator[sa.Connection]:
        """A read transaction with one snapshot for all its statements (a read that spans the row tables and the
        segments must not see rows move between them): SQLite's read transaction, REPEATABLE READ on PostgreSQL.
        With the store's error mapping, like :meth:`transaction`. ``model``: a read that joins the model's label and
        prediction rows, which first makes sure PostgreSQL's planner knows its size
        (:mod:`controller.store.statistics`)."""
        if model is not None:
            self.statistics.ensure(model)
        with self.connection() as conn, begin_snapshot(conn):
            yield conn

    @contextmanager
    def connection(self) -> Iterator[sa.Connection]:
        """A connection with the store's error mapping (no transaction begun); see :meth:`transaction`."""
        try:
            conn = self.engine.connect()
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreUnavailable(describe_unreachable(self.engine, exc)) from exc
        with conn:
            try:
                yield conn
            except StoreUnavailable:
                raise
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                raise StoreUnavailable(describe_failure(self.engine, exc)) from exc
