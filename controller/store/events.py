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

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from controller.clock import Clock, SystemClock, ensure_utc
from controller.errors import LabelConflict, PredictionConflict, Problem, StoreUnavailable
from controller.store import recent, sealed
from controller.store import segments as seg
from controller.store.db import (
    STAGE_TABLES,
    advisory_xact_lock,
    begin_write,
    create_store_engine,
    describe_failure,
    describe_unreachable,
    dumps_json,
    json_safe,
    upgrade,
)
from controller.store.rows import fetch_block, from_us, in_force, labeled_rows, to_us
from controller.store.recent import LoggedRows, MaturedRows
from controller.store.sealed import SealResult
from controller.store.tables import (
    UTCDateTime,
    controller_state,
    labels,
    predictions,
    race_outcomes,
    sealed_ids,
    sealed_supersessions,
    segments,
    store_models,
)

log = logging.getLogger("driftpilot.store")

# Pause between two segments sealed back to back on SQLite, so writers waiting for its write lock get it in between.
SQLITE_SEAL_PAUSE_S = 0.1


@dataclass(frozen=True)
class PredictionRecord:
    """One validated prediction to store. ``prediction_id=None`` means: generate one. ``event_time=None`` means: the
    client did not say; the store stamps its clock's time, and a re-sent copy that also omits it is a repeat."""

    features: Mapping[str, Any]
    event_time: datetime | None = None
    prediction: Any = None
    scores: Mapping[str, float] | None = None
    prediction_id: str | None = None
    model_version: str | None = None
    source: str = "logged"


@dataclass(frozen=True)
class LabelRecord:
    """One natural label for a prediction id. ``overwrite=True`` replaces a different stored value."""

    prediction_id: str
    value: Any
    overwrite: bool = False


@dataclass(frozen=True)
class LabelReceipt:
    """What a label batch did: new labels, exact repeats ignored, overwrites recorded, labels still waiting for
    their prediction."""

    inserted: int
    duplicates: int
    overwritten: int
    unmatched: int

    def to_dict(self) -> dict[str, int]:
        return {"inserted": self.inserted, "duplicates": self.duplicates, "overwritten": self.overwritten,
                "unmatched": self.unmatched}


@dataclass(frozen=True)
class LabelChange:
    """One entry of a prediction's label history: the value, when it arrived and, if replaced, when."""

    value: Any
    arrived_at: datetime
    superseded_at: datetime | None


@dataclass(frozen=True)
class LabelStats:
    """Label coverage of a model's traffic. ``predictions`` counts logged, served and batch predictions; the rows
    bootstrap stored as the reference window are counted apart (``reference_rows``) and left out of every other
    number, so coverage and delays describe live traffic only."""

    model: str
    as_of: datetime
    predictions: int
    labeled: int
    pending: int
    unmatched_labels: int
    delay_seconds: dict[str, float | None]
    by_source: dict[str, int] = field(default_factory=dict)
    reference_rows: int = 0

    @property
    def coverage(self) -> float | None:
        return self.labeled / self.predictions if self.predictions else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "as_of": self.as_of.isoformat(),
            "predictions": self.predictions,
            "by_source": self.by_source,
            "reference_rows": self.reference_rows,
            "labeled": self.labeled,
            "pending": self.pending,
            "unmatched_labels": self.unmatched_labels,
            "coverage": self.coverage,
            "label_delay_seconds": self.delay_seconds,
        }


@dataclass(frozen=True)
class LabeledWindow:
    """Labeled rows matured by ``as_of``, in label-arrival order. See the module docstring."""

    model: str
    as_of: datetime
    features: pd.DataFrame
    labels: pd.Series
    predictions: pd.Series
    scores: pd.DataFrame | None
    prediction_ids: pd.Series
    event_times: pd.Series
    label_times: pd.Series
    model_versions: pd.Series
    label_seqs: pd.Series
    fingerprint: str = field(repr=False)

    @property
    def rows(self) -> int:
        return len(self.labels)

    @property
    def start(self) -> datetime | None:
        return self.label_times.iloc[0].to_pydatetime() if self.rows else None

    @property
    def end(self) -> datetime | None:
        return self.label_times.iloc[-1].to_pydatetime() if self.rows else None

    @property
    def last_seq(self) -> int | None:
        return int(self.label_seqs.iloc[-1]) if self.rows else None

    def slice(self, start: int, stop: int | None = None) -> LabeledWindow:
        """Rows ``start:stop`` (arrival order) as a window of their own, with its own fingerprint.

        Used for time-ordered splits: the older part trains, the newer part is the holdout.
        """
        def cut(series: pd.Series) -> pd.Series:
            return series.iloc[start:stop].reset_index(drop=True)

        prediction_ids, labels, label_times = cut(self.prediction_ids), cut(self.labels), cut(self.label_times)
        return LabeledWindow(
            model=self.model, as_of=self.as_of,
            features=self.features.iloc[start:stop].reset_index(drop=True),
            labels=labels, predictions=cut(self.predictions),
            scores=self.scores.iloc[start:stop].reset_index(drop=True) if self.scores is not None else None,
            prediction_ids=prediction_ids, event_times=cut(self.event_times), label_times=label_times,
            model_versions=cut(self.model_versions), label_seqs=cut(self.label_seqs),
            fingerprint=_fingerprint(prediction_ids, labels, label_times),
        )


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


class EventStore:
    """Predictions and natural labels for any number of models, on one database."""

    def __init__(self, engine: sa.Engine, clock: Clock | None = None, *, sealing: Sealing | None = None) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self.sealing = sealing or Sealing.from_environment()
        self._since_check: dict[str, int] = {}
        self._sealer: _Sealer | None = None
        self._sealer_lock = threading.Lock()

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
        now = self.clock.now()
        ids = [r.prediction_id or uuid.uuid4().hex for r in records]
        rows = [
            {
                "model": model,
                "prediction_id": pid,
                "model_version": r.model_version,
                "event_time": ensure_utc(r.event_time) if r.event_time is not None else now,
                "received_at": now,
                "features": r.features,
                "prediction": r.prediction,
                "scores": dict(r.scores) if r.scores is not None else None,
                "source": r.source,
            }
            for pid, r in zip(ids, records, strict=True)
        ]
        with self._transaction() as conn:
            mid = self._prediction_writer(conn, model)
            # Ids whose prediction was sealed are stored already: compared below, never inserted again.
            found = sealed.lookup(conn, mid, [ids[i] for i, r in enumerate(records) if r.prediction_id is not None]
                                  ) if mid is not None else {}
            insert_rows = [row for row in rows if row["prediction_id"] not in found] if found else rows
            if conn.dialect.name == "postgresql":
                # Concurrent batches with overlapping ids lock those ids in one order, so they wait, never deadlock.
                insert_rows = sorted(insert_rows, key=lambda row: row["prediction_id"])
            inserted = _bulk_insert(conn, predictions, insert_rows, conflict=("model", "prediction_id"))
            if inserted < len(rows):
                # Some ids were stored already (a retry) or by a writer that committed first: compare contents.
                self._check_repeats(conn, model, records, rows, found)
        return ids

    def _prediction_writer(self, conn: sa.Connection, model: str) -> int | None:
        """First statements of a prediction transaction: the shared seal lock (PostgreSQL), then the model's key."""
        sealed.seal_lock(conn, model, shared=True)
        return sealed.model_id(conn, model)

    def _check_repeats(self, conn: sa.Connection, model: str, records: Sequence[PredictionRecord],
                       rows: list[dict[str, Any]], found: Mapping[str, sealed.SealedId]) -> None:
        given = [i for i, r in enumerate(records) if r.prediction_id is not None]
        stored = self._existing_predictions(conn, model, [rows[i]["prediction_id"] for i in given
                                                          if rows[i]["prediction_id"] not in found])
        if found:
            stored.update(sealed.predictions_of(conn, found))
        problems = []
        for index in given:
            pid = rows[index]["prediction_id"]
            # The same id twice in one batch compares with what is stored: the first copy, or someone else's row.
            if not _same_prediction(stored[pid], rows[index], event_time=records[index].event_time is not None):
                problems.append(Problem(index, "prediction_id",
                                        f"{pid!r} is already stored with different content; prediction ids must be "
                                        "unique per model"))
        if problems:
            raise PredictionConflict(problems)

    def add_labels(self, model: str, records: Sequence[LabelRecord]) -> LabelReceipt:
        """Store a batch of natural labels atomically, stamped with the store clock's arrival time.

        A label may arrive before its prediction (it is kept and joins when the prediction arrives). The same value
        twice is a no-op. A different value for an already-labeled prediction is a :class:`LabelConflict` (nothing
        stored) unless the record says ``overwrite=True``; the old row is then kept, marked superseded, as the audit
        record of the change. Items apply in order, as if sent one by one (see the module docstring).
        """
        with self._transaction() as conn:
            now, mid = self._label_arrival_time(conn, model)
            ids = [r.prediction_id for r in records]
            current = self._current_labels(conn, model, ids)
            # Ids whose prediction is sealed; their current label too when it is (a repeat or an overwrite of it).
            found = sealed.lookup(conn, mid, ids) if mid is not None else {}
            sealed_current = sealed.current_values(conn, model, {pid: where for pid, where in found.items()
                                                                 if pid not in current}) if found else {}
            current.update(sealed_current)
            inserts: list[dict[str, Any]] = []
            superseded: list[str] = []  # ids whose stored current label this batch replaces
            superseded_sealed: list[str] = []  # the same, for sealed current labels
            problems: list[Problem] = []
            in_batch: dict[str, int] = {}  # id -> position in `inserts` of this batch's newest row for it
            given_by: dict[str, int] = {}  # id -> index of the item that gave its current value in this batch
            duplicates = overwritten = 0
            for index, record in enumerate(records):
                pid = record.prediction_id
                if pid in current:
                    old = current[pid]
                    if _same_value(old, record.value):
                        duplicates += 1
                        continue
                    if not record.overwrite:
                        where = (f" by item {given_by[pid]} of this batch" if pid in given_by else "")
                        problems.append(Problem(index, "label",
                                                f"prediction {pid!r} already has label {old!r}{where}, got "
                                                f"{record.value!r}; send overwrite: true to replace it (the change is "
                                                "recorded)"))
                        continue
                    overwritten += 1
                    if pid in in_batch:
                        # Replaced within this batch: in force at no instant, kept as the record of what was sent.
                        inserts[in_batch[pid]]["superseded_at"] = now
                    elif pid in sealed_current:
                        superseded_sealed.append(pid)
                    else:
                        superseded.append(pid)
                in_batch[pid] = len(inserts)
                given_by[pid] = index
                inserts.append({"model": model, "prediction_id": pid, "value": record.value, "arrived_at": now})
                current[pid] = record.value
            if problems:
                raise LabelConflict(problems)
            if len(in_batch) < len(inserts):
                for row in inserts:  # one column set for the whole executemany
                    row.setdefault("superseded_at", None)
            if superseded:
                conn.execute(
                    labels.update()
                    .where(labels.c.model == model, _one_of(conn, labels.c.prediction_id, superseded),
                           labels.c.superseded_at.is_(None))
                    .values(superseded_at=now)
                )
            if superseded_sealed:
                self._supersede_sealed(conn, model, mid, {pid: found[pid] for pid in superseded_sealed}, now)
            _bulk_insert(conn, labels, inserts)
            unmatched = self._count_unmatched(conn, model, [row["prediction_id"] for row in inserts], found)
        self._labels_written(model, len(inserts))
        return LabelReceipt(inserted=len(inserts) - overwritten, duplicates=duplicates, overwritten=overwritten,
                            unmatched=unmatched)

    def _supersede_sealed(self, conn: sa.Connection, model: str, mid: int | None,
                          found: Mapping[str, sealed.SealedId], now: datetime) -> None:
        conn.execute(sealed_supersessions.insert(), [
            {"seq": int(where.label_seq), "model": model, "superseded_at": now}  # type: ignore[arg-type]
            for where in found.values()])
        conn.execute(sealed_ids.update().where(sealed_ids.c.model_id == mid,
                                               _one_of(conn, sealed_ids.c.prediction_id, list(found)))
                     .values(label_seq=None))

    def _label_arrival_time(self, conn: sa.Connection, model: str) -> tuple[datetime, int | None]:
        """Serialize this model's label transactions; return the arrival time to stamp (module docstring) and the
        model's sealed key (None: nothing sealed).

        Must run first in the transaction: the lock makes ``seq`` order equal commit order, and the newest arrival is
        read under it (also from segments: the row tables may hold none of the model's labels any more).
        """
        advisory_xact_lock(conn, f"labels:{model}")
        now = self.clock.now()
        newest_row = sa.select(sa.func.max(labels.c.arrived_at)).where(labels.c.model == model).scalar_subquery()
        newest_sealed = (sa.select(sa.func.max(segments.c.last_arrival)).where(segments.c.model == model)
                         .scalar_subquery())
        key = sa.select(store_models.c.model_id).where(store_models.c.model == model).scalar_subquery()
        newest, newest_block, mid = conn.execute(sa.select(sa.type_coerce(newest_row, UTCDateTime()),
                                                           sa.type_coerce(newest_sealed, UTCDateTime()), key)).one()
        for when in (newest, newest_block):
            if when is not None and when > now:
                now = when
        return now, mid

    def seal(self, model: str, *, keep_rows: int | None = None, min_rows: int | None = None) -> list[SealResult]:
        """Move the model's oldest labeled rows into segments of ``sealing.rows`` rows while more than ``keep_rows``
        (default ``sealing.keep_rows``) would stay in the row tables; ``min_rows`` allows a last, smaller segment.
        Reads return exactly what they returned before; only their speed and the database's size change."""
        keep = self.sealing.keep_rows if keep_rows is None else keep_rows
        results: list[SealResult] = []
        while True:
            # Looked at in a read transaction first: the write lock (all of SQLite's) is taken only when there is work.
            with self._read() as conn:
                if not sealed.seal_size(conn, model, sealed.model_id(conn, model), self.sealing.rows, keep=keep,
                                        min_rows=min_rows):
                    return results
            if results and self.engine.dialect.name == "sqlite":
                # SQLite's write lock is not handed over fairly: a waiting writer polls with growing sleeps (up to
                # 100 ms), so segment after segment back to back could hold it off past its busy timeout.
                time.sleep(SQLITE_SEAL_PAUSE_S)
            with self._transaction() as conn:
                result = sealed.seal_oldest(conn, model, self.sealing.rows, self.clock.now(), keep=keep,
                                            min_rows=min_rows)
            if result is None:
                return results
            log.info("sealed %d rows of %s (seqs %d-%d) into segment %d: %d bytes", result.rows, model,
                     result.first_seq, result.last_seq, result.segment_id, result.bytes)
            results.append(result)

    def _labels_written(self, model: str, rows: int) -> None:
        """Count label rows written by this store; past a quarter segment, look whether sealing is due."""
        if self.sealing.mode == "off" or rows == 0:
            return
        written = self._since_check.get(model, 0) + rows
        if written < max(1, self.sealing.rows // 4):
            self._since_check[model] = written
            return
        self._since_check[model] = 0
        if self.sealing.mode == "inline":
            self._seal_quietly(model)
            return
        with self._sealer_lock:
            if self._sealer is None:
                self._sealer = _Sealer(self)
            self._sealer.request(model)

    def _seal_quietly(self, model: str) -> None:
        """Sealing is maintenance: a failure is logged (and retried after the next quarter segment), never raised into
        the writer whose batch is committed already."""
        try:
            self.seal(model)
        except Exception:
            log.exception("sealing %s failed; its rows stay in the row tables and sealing is retried later", model)

    def wait_for_sealing(self, timeout_s: float = 60.0) -> None:
        """Block until the background sealer has nothing left to do (tests, benchmarks, a graceful stop)."""
        sealer = self._sealer
        if sealer is not None:
            sealer.drain(timeout_s)

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
        limits = _Limits(as_of, ensure_utc(since) if since is not None else None, after_seq, through_seq, max_rows)
        with self._read() as conn:
            parts = self._labeled_parts(conn, model, limits, None)
        columns = seg.assemble_window(parts, feature_types)
        return LabeledWindow(model=model, as_of=as_of, **vars(columns))  # WindowColumns: the same fields

    def _labeled_parts(self, conn: sa.Connection, model: str, limits: _Limits,
                       logical: Sequence[str] | None) -> list[seg.Part]:
        """The rows of a labeled-window read as parts: the row tables' and each sealed segment's (filtered)."""
        mid = sealed.model_id(conn, model)
        where = [in_force(model, limits.as_of), *self._window_filters(conn, model, mid, limits)]
        query = labeled_rows(conn, mid, where, order="seq", descending=limits.max_rows is not None,
                             limit=limits.max_rows)
        block = fetch_block(conn, query, sealed.payload_source(conn, model, mid))
        if limits.max_rows is not None:
            block = seg.take_block(block, np.arange(len(block))[::-1])
        hot = seg.Part.of(seg.encode(block))
        if mid is None:
            return [hot]
        found = sealed.metas(conn, model, after_seq=limits.after_seq, through_seq=limits.through_seq,
                             since=limits.since, as_of=limits.as_of)
        cold: list[seg.Part] = []
        collected = 0
        floor_seq: int | None = None  # with max_rows: the smallest seq that can still be among the newest rows
        if limits.max_rows is not None:
            found = sorted(found, key=lambda m: m.last_seq)
            if len(hot) >= limits.max_rows and len(hot):
                floor_seq = int(hot.ints("seq")[0])
        for meta, part, superseded in sealed.parts(conn, model, found, logical,
                                                   newest_first=limits.max_rows is not None):
            if floor_seq is not None and meta.last_seq < floor_seq:
                break
            keep = np.flatnonzero(limits.mask(part, superseded))
            if keep.size:
                cold.append(part.take(keep))
                collected += keep.size
            if limits.max_rows is not None and collected + len(hot) >= limits.max_rows:
                seqs = np.concatenate([p.ints("seq") for p in [*cold, hot]])
                floor_seq = int(np.sort(seqs)[-limits.max_rows]) if limits.max_rows else None
        parts = [*cold[::-1], hot] if limits.max_rows is not None else [*cold, hot]
        if limits.max_rows is not None:
            parts = _newest(parts, limits.max_rows)
        return parts

    def _window_filters(self, conn: sa.Connection, model: str, mid: int | None,
                        limits: _Limits) -> list[sa.ColumnElement[bool]]:
        where = []
        if limits.since is not None:
            where.append(labels.c.arrived_at >= limits.since)
        if limits.after_seq is not None:
            where.append(labels.c.seq > limits.after_seq)
        if limits.through_seq is not None:
            where.append(labels.c.seq <= limits.through_seq)
        if limits.after_seq is not None and limits.since is None:
            # Implied by seq > after_seq (arrival never decreases along a model's seq); stated so the index reads only
            # the rows after the cursor, not the model's whole history (see _arrival_floor).
            floor = self._arrival_floor(conn, model, limits.after_seq, mid)
            if floor is not None:
                where.append(labels.c.arrived_at >= floor)
        return where

    def predictions_frame(self, model: str, as_of: datetime, *, since: datetime | None = None,
                          max_rows: int | None = None,
                          feature_types: Mapping[str, str] | None = None) -> pd.DataFrame:
        """Logged features of predictions known by ``as_of`` (labeled or not), oldest first: the "current" side of
        data drift. Reference rows (a bootstrap file) are not traffic and are left out. ``since`` keeps event times
        at or after it; ``max_rows`` keeps the newest rows."""
        as_of = ensure_utc(as_of)
        since = ensure_utc(since) if since is not None else None
        query = sa.select(predictions.c.features, predictions.c.event_time).where(
            predictions.c.model == model, predictions.c.received_at <= as_of, predictions.c.source != "reference")
        if since is not None:
            query = query.where(predictions.c.event_time >= since)
        query = query.order_by(predictions.c.event_time.desc())
        if max_rows is not None:
            query = query.limit(max_rows)
        with self._read() as conn:
            rows = conn.execute(query).all()
            mid = sealed.model_id(conn, model)
            cold = self._sealed_predictions(conn, model, as_of, since, max_rows) if mid is not None else []
        rows.reverse()
        if not cold:
            return features_frame([r.features for r in rows], feature_types)
        # Merge by event time (newest max_rows), then oldest first like the row tables' read.
        hot = seg.features_part([r.features for r in rows])
        hot_times = np.array([to_us(r.event_time) for r in rows], dtype=np.int64)
        pieces = [*cold, (hot, hot_times)]
        times = np.concatenate([t for _, t in pieces])
        order = np.argsort(times, kind="stable")
        if max_rows is not None:
            order = order[max(0, len(order) - max_rows):] if max_rows else order[:0]
        return seg.features_frame_of([p for p, _ in pieces], order, feature_types)

    def _sealed_predictions(self, conn: sa.Connection, model: str, as_of: datetime, since: datetime | None,
                            max_rows: int | None) -> list[tuple[seg.Part, np.ndarray]]:
        found = sealed.metas(conn, model, owners=True,
                             event_after=since - timedelta(microseconds=1) if since is not None else None)
        found = sorted(found, key=lambda m: m.max_event_time)  # type: ignore[arg-type, return-value]
        as_of_us = to_us(as_of)
        since_us = to_us(since) if since is not None else None
        out: list[tuple[seg.Part, np.ndarray]] = []
        newest: list[np.ndarray] = []
        for meta, part, _ in sealed.parts(conn, model, found, ["event_time", "received_at", "source", "owner",
                                                                "features"], newest_first=True):
            if max_rows is not None and newest:
                times = np.concatenate(newest)
                if times.size >= max_rows and (max_rows == 0 or to_us(meta.max_event_time) <
                                               np.sort(times)[-max_rows]):  # type: ignore[arg-type]
                    break
            mask = (part.table.column("owner").to_numpy() & (part.ints("received_at") <= as_of_us)
                    & (part.objects("source") != "reference"))
            if since_us is not None:
                mask &= part.ints("event_time") >= since_us
            keep = np.flatnonzero(mask)
            if keep.size:
                picked = part.take(keep)
                out.append((picked, picked.ints("event_time")))
                newest.append(out[-1][1])
        return out

    def label_history(self, model: str, prediction_id: str) -> list[LabelChange]:
        """Every value a prediction's label has had, oldest first (the overwrite audit trail)."""
        query = (
            sa.select(labels.c.seq, labels.c.value, labels.c.arrived_at, labels.c.superseded_at)
            .where(labels.c.model == model, labels.c.prediction_id == prediction_id)
            .order_by(labels.c.seq)
        )
        with self._read() as conn:
            changes = [(r.seq, LabelChange(r.value, r.arrived_at, r.superseded_at)) for r in conn.execute(query)]
            mid = sealed.model_id(conn, model)
            where = sealed.lookup(conn, mid, [prediction_id]).get(prediction_id) if mid is not None else None
            if where is not None:
                found = [m for m in sealed.metas(conn, model)
                         if where.segment_id <= m.segment_id <= where.last_segment_id]
                for _, part, superseded in sealed.parts(conn, model, found, ["prediction_id", "value",
                                                                              "arrived_at"]):
                    rows = np.flatnonzero(part.objects("prediction_id") == prediction_id)
                    values = part.value_column("value").objects()
                    arrived, seqs = part.ints("arrived_at"), part.ints("seq")
                    for i in rows:
                        changes.append((int(seqs[i]), LabelChange(
                            values[i], from_us(int(arrived[i])),
                            None if superseded[i] == seg.SUPERSEDED_NEVER else from_us(int(superseded[i])))))
        return [change for _, change in sorted(changes, key=lambda c: c[0])]

    def get_prediction(self, model: str, prediction_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(predictions).where(predictions.c.model == model,
                                             predictions.c.prediction_id == prediction_id)
            ).first()
            if row is not None:
                return dict(row._mapping)
            mid = sealed.model_id(conn, model)
            found = sealed.lookup(conn, mid, [prediction_id]) if mid is not None else {}
            if not found:
                return None
            record = sealed.predictions_of(conn, found)[prediction_id]
        return {"model": model, **record}

    def known_prediction_ids(self, model: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already stored for ``model``."""
        with self._read() as conn:
            known = set(self._existing_predictions(conn, model, list(ids), content=False))
            mid = sealed.model_id(conn, model)
            if mid is not None:
                known |= set(sealed.lookup(conn, mid, [pid for pid in ids if pid not in known]))
        return known

    def count_predictions(self, model: str) -> int:
        with self._read() as conn:
            hot = conn.execute(
                sa.select(sa.func.count()).select_from(predictions).where(predictions.c.model == model)
            ).scalar_one()
            cold = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(segments.c.owner_count), 0))
                                .where(segments.c.model == model)).scalar_one()
        return int(hot) + int(cold)

    # ------------------------------------------------------------------------------------- cheap reads of the loop
    # The controller ticks often; these cost what arrived after a cursor, never the whole history.

    def recent_events(self, model: str, *, logged_from: datetime, logged_before: datetime, labels_after: int | None,
                      as_of: datetime, max_labels: int | None = None) -> tuple[LoggedRows, MaturedRows]:
        """One race tick's reads in one snapshot: predictions logged in ``[logged_from, logged_before)`` (store
        arrival time, reference rows excluded) and labels after seq ``labels_after`` in force at ``as_of`` with their
        features (see :mod:`controller.store.recent`; ``complete`` False: read those labels with
        :meth:`labeled_window`, some of them are sealed)."""
        with self._read() as conn:
            logged = recent.logged_rows(conn, model, ensure_utc(logged_from), ensure_utc(logged_before))
            matured = recent.matured_rows(conn, model, ensure_utc(as_of), labels_after, max_labels)
        return logged, matured

    def labeled_count(self, model: str, as_of: datetime, *, after_seq: int | None = None,
                      since: datetime | None = None) -> tuple[int, int | None]:
        """Labeled rows ``labeled_window(model, as_of, after_seq=..., since=...)`` would return: (count, newest
        seq). With ``after_seq`` it reads the rows after the cursor only, however long the history."""
        as_of = ensure_utc(as_of)
        since = ensure_utc(since) if since is not None else None
        with self._read() as conn:
            mid = sealed.model_id(conn, model)
            where = [in_force(model, as_of)]
            hot_since = since
            if after_seq is not None:
                where.append(labels.c.seq > after_seq)
                floor = self._arrival_floor(conn, model, after_seq, mid)
                if floor is not None and (hot_since is None or floor > hot_since):
                    hot_since = floor
            if hot_since is not None:
                where.append(labels.c.arrived_at >= hot_since)
            sub = labeled_rows(conn, mid, where, shape="seq").subquery()
            count, newest = conn.execute(sa.select(sa.func.count(), sa.func.max(sub.c.seq))).one()
            count, newest = int(count), (int(newest) if newest is not None else None)
            if mid is not None:
                limits = _Limits(as_of, since, after_seq, None, None)
                found = sealed.metas(conn, model, after_seq=after_seq, since=since, as_of=as_of)
                for _, part, superseded in sealed.parts(conn, model, found, ["arrived_at"]):
                    seqs = part.ints("seq")[limits.mask(part, superseded)]
                    if seqs.size:
                        count += int(seqs.size)
                        newest = max(newest or 0, int(seqs.max()))
        return count, newest

    def tail_start(self, model: str, as_of: datetime, rows: int) -> datetime | None:
        """The arrival time of the oldest of the newest ``rows`` labeled rows as of ``as_of`` (None when there are
        fewer). ``labeled_window(model, as_of, since=tail_start(...), max_rows=rows)`` returns the same rows as
        ``labeled_window(model, as_of, max_rows=rows)``, but reads only the tail of the history: a model's
        ``arrived_at`` never decreases along ``seq``, so the newest rows by seq are the newest by arrival."""
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        as_of = ensure_utc(as_of)
        with self._read() as conn:
            mid = sealed.model_id(conn, model)
            if mid is None:
                query = (
                    sa.select(labels.c.arrived_at)
                    .select_from(labels.join(predictions, sa.and_(
                        predictions.c.model == labels.c.model, predictions.c.prediction_id == labels.c.prediction_id)))
                    .where(in_force(model, as_of))
                    # Walks the (model, arrived_at) index backwards from as_of and stops after `rows` matches.
                    .order_by(labels.c.arrived_at.desc()).offset(rows - 1).limit(1)
                )
                return conn.execute(query).scalar_one_or_none()
            parts = self._labeled_parts(conn, model, _Limits(as_of, None, None, None, rows), ["arrived_at"])
        arrived = np.concatenate([p.ints("arrived_at") for p in parts]) if parts else np.empty(0, np.int64)
        if arrived.size < rows:
            return None
        return from_us(int(arrived.min()))

    def _arrival_floor(self, conn: sa.Connection, model: str, seq: int, mid: int | None = None) -> datetime | None:
        """A lower bound of the arrival times of the model's labels after ``seq``: when label ``seq`` arrived (every
        later label of the model arrived at or after it: arrival times never decrease along a model's seq), or, once
        that row is sealed, what the segments at or before ``seq`` say. ``arrived_at >= floor`` is implied by
        ``seq > cursor``; stating it lets the (model, arrived_at) index read only the rows since the cursor. Without
        it, SQLite and PostgreSQL both walk the model's whole history in that index to filter on seq (measured:
        benchmarks/controller.py)."""
        floor = conn.execute(
            sa.select(labels.c.arrived_at).where(labels.c.seq == seq, labels.c.model == model)
        ).scalar_one_or_none()
        if floor is not None or mid is None:
            return floor
        bound = sa.case((segments.c.last_seq <= seq, segments.c.last_arrival), else_=segments.c.first_arrival)
        return conn.execute(sa.select(sa.type_coerce(sa.func.max(bound), UTCDateTime()))
                            .where(segments.c.model == model, segments.c.first_seq <= seq)).scalar()

    def traffic_since(self, model: str, as_of: datetime, after: datetime | None) -> tuple[int, datetime | None]:
        """Logged predictions (not reference rows) known by ``as_of`` with an event time after ``after``:
        (count, newest event time). The (model, event_time) index keeps this proportional to the new rows."""
        as_of = ensure_utc(as_of)
        after = ensure_utc(after) if after is not None else None
        query = sa.select(sa.func.count(), sa.func.max(predictions.c.event_time)).where(
            predictions.c.model == model, predictions.c.received_at <= as_of,
            predictions.c.source != "reference")
        if after is not None:
            query = query.where(predictions.c.event_time > after)
        with self._read() as conn:
            count, newest = conn.execute(query).one()
            if isinstance(newest, str):  # SQLite hands an aggregate back untyped
                newest = datetime.fromisoformat(newest)
            newest = ensure_utc(newest) if newest is not None else None
            mid = sealed.model_id(conn, model)
            if mid is not None:
                found = sealed.metas(conn, model, owners=True, event_after=after)
                for _, part, _ in sealed.parts(conn, model, found, ["event_time", "received_at", "source",
                                                                     "owner"]):
                    events = part.ints("event_time")
                    mask = (part.table.column("owner").to_numpy() & (part.ints("received_at") <= to_us(as_of))
                            & (part.objects("source") != "reference"))
                    if after is not None:
                        mask &= events > to_us(after)
                    if mask.any():
                        count += int(mask.sum())
                        latest = from_us(int(events[mask].max()))
                        newest = latest if newest is None or latest > newest else newest
        return int(count), newest

    def label_stats(self, model: str, as_of: datetime | None = None, *, delay_sample: int = 100_000) -> LabelStats:
        """Counts and label-delay percentiles as of ``as_of`` (default: now), of the model's traffic: bootstrap's
        reference rows are counted apart (``reference_rows``) and left out of coverage, pending and delays.

        Delay = label arrival - prediction event time, over the most recent ``delay_sample`` matured labels, so the
        cost stays bounded on a long history.
        """
        as_of = ensure_utc(as_of or self.clock.now())
        with self._read() as conn:
            mid = sealed.model_id(conn, model)
            if mid is None:
                by_source, labeled_by_source, all_labels, delays = self._row_stats(conn, model, as_of, delay_sample)
            else:
                by_source, labeled_by_source, all_labels, delays = self._merged_stats(conn, model, mid, as_of,
                                                                                       delay_sample)
        seconds = np.asarray(delays, dtype=float)
        percentiles = {
            name: (float(np.percentile(seconds, q)) if seconds.size else None)
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99))
        }
        reference_rows = by_source.pop("reference", 0)
        n_predictions = sum(by_source.values())
        labeled = sum(n for source, n in labeled_by_source.items() if source != "reference")
        return LabelStats(model=model, as_of=as_of, predictions=n_predictions, labeled=labeled,
                          pending=n_predictions - labeled,
                          unmatched_labels=all_labels - sum(labeled_by_source.values()),
                          delay_seconds=percentiles, by_source=dict(sorted(by_source.items())),
                          reference_rows=reference_rows)

    def _row_stats(self, conn: sa.Connection, model: str, as_of: datetime,
                   delay_sample: int) -> tuple[dict[str, int], dict[str, int], int, list[float]]:
        """label_stats' numbers from the row tables (nothing of the model is sealed)."""
        join_on = sa.and_(predictions.c.model == labels.c.model,
                          predictions.c.prediction_id == labels.c.prediction_id)
        received = predictions.c.received_at <= as_of
        by_source = dict(conn.execute(
            sa.select(predictions.c.source, sa.func.count()).select_from(predictions)
            .where(predictions.c.model == model, received).group_by(predictions.c.source)
        ).all())
        labeled_by_source = dict(conn.execute(
            sa.select(predictions.c.source, sa.func.count()).select_from(labels.join(predictions, join_on))
            .where(in_force(model, as_of), received).group_by(predictions.c.source)
        ).all())
        all_labels = conn.execute(sa.select(sa.func.count()).select_from(labels)
                                  .where(in_force(model, as_of))).scalar_one()
        delays = conn.execute(
            sa.select(labels.c.arrived_at, predictions.c.event_time)
            .select_from(labels.join(predictions, join_on))
            .where(in_force(model, as_of), received, predictions.c.source != "reference")
            .order_by(labels.c.seq.desc())
            .limit(delay_sample)
        ).all()
        return by_source, labeled_by_source, all_labels, [(a - e).total_seconds() for a, e in delays]

    def _merged_stats(self, conn: sa.Connection, model: str, mid: int, as_of: datetime,
                      delay_sample: int) -> tuple[dict[str, int], dict[str, int], int, list[float]]:
        """label_stats' numbers over the row tables and the segments."""
        as_of_us = to_us(as_of)
        by_source: dict[str, int] = dict(conn.execute(
            sa.select(predictions.c.source, sa.func.count()).select_from(predictions)
            .where(predictions.c.model == model, predictions.c.received_at <= as_of).group_by(predictions.c.source)
        ).all())
        all_labels = int(conn.execute(sa.select(sa.func.count()).select_from(labels)
                                      .where(in_force(model, as_of))).scalar_one())
        # Labeled rows with their prediction's source, receipt and event time: the row tables' (a sealed prediction
        # comes from its segment), then each segment's.
        block = fetch_block(conn, labeled_rows(conn, mid, [in_force(model, as_of)], order="seq"),
                            sealed.payload_source(conn, model, mid))
        seqs = [block.seq]
        sources = [np.asarray(block.source, dtype=object)]
        received = [block.received_at]
        delays = [(block.arrived_at - block.event_time) / 1e6]
        # Every segment: a prediction received by as_of counts even when its label arrived later.
        for _, part, superseded in sealed.parts(conn, model, sealed.metas(conn, model),
                                                ["arrived_at", "received_at", "event_time", "source", "owner"]):
            arrived = part.ints("arrived_at")
            source = part.objects("source")
            owner = part.table.column("owner").to_numpy()
            received_us = part.ints("received_at")
            for name, n in zip(*np.unique(source[owner & (received_us <= as_of_us)], return_counts=True),
                               strict=True):
                by_source[name] = by_source.get(name, 0) + int(n)
            live = (arrived <= as_of_us) & (superseded > as_of_us)
            all_labels += int(live.sum())
            seqs.append(part.ints("seq")[live])
            sources.append(source[live])
            received.append(received_us[live])
            delays.append((arrived[live] - part.ints("event_time")[live]) / 1e6)
        seq = np.concatenate(seqs)
        source = np.concatenate(sources)
        received_ok = np.concatenate(received) <= as_of_us
        labeled_by_source = {name: int(n) for name, n in zip(*np.unique(source[received_ok], return_counts=True),
                                                             strict=True)}
        traffic = received_ok & (source != "reference")
        delay = np.concatenate(delays)[traffic]
        newest = np.argsort(seq[traffic], kind="stable")[::-1][:delay_sample]
        return by_source, labeled_by_source, all_labels, delay[newest].tolist()

    # ---------------------------------------------------------------------------------------------------- state

    def put_state(self, model: str, key: str, value: bytes) -> None:
        """Durably store a named blob (detector or learner state) for ``model``, replacing the old one."""
        now = self.clock.now()
        with self._transaction() as conn:
            conn.execute(controller_state.delete().where(controller_state.c.model == model,
                                                         controller_state.c.key == key))
            conn.execute(controller_state.insert().values(model=model, key=key, value=value, updated_at=now))

    def put_states(self, model: str, values: Mapping[str, bytes], *,
                   outcome_block: Mapping[str, Any] | None = None) -> None:
        """Several named blobs, and optionally one block of the race's outcome log (``first_seq``, ``last_seq``,
        ``row_count``, ``racers``, ``data``), in one transaction: a crash keeps all of them or none."""
        now = self.clock.now()
        with self._transaction() as conn:
            for key, value in values.items():
                conn.execute(controller_state.delete().where(controller_state.c.model == model,
                                                             controller_state.c.key == key))
                conn.execute(controller_state.insert().values(model=model, key=key, value=value, updated_at=now))
            if outcome_block is not None:
                conn.execute(race_outcomes.insert().values(model=model, created_at=now, **outcome_block))

    def state_updated_at(self, model: str, key: str) -> datetime | None:
        """When a named blob was last written (None when it was never written)."""
        with self._connection() as conn:
            return conn.execute(sa.select(controller_state.c.updated_at).where(
                controller_state.c.model == model, controller_state.c.key == key)).scalar_one_or_none()

    def race_outcome_blocks(self, model: str, *, after_seq: int | None = None) -> list[dict[str, Any]]:
        """The race's outcome log of ``model`` (blocks holding a label seq after ``after_seq``), oldest first."""
        query = sa.select(race_outcomes.c.first_seq, race_outcomes.c.last_seq, race_outcomes.c.row_count,
                          race_outcomes.c.racers, race_outcomes.c.created_at, race_outcomes.c.data).where(
            race_outcomes.c.model == model)
        if after_seq is not None:
            query = query.where(race_outcomes.c.last_seq > after_seq)
        with self._read() as conn:
            return [dict(row._mapping) for row in conn.execute(query.order_by(race_outcomes.c.block_id))]

    def get_state(self, model: str, key: str) -> bytes | None:
        with self._connection() as conn:
            return conn.execute(
                sa.select(controller_state.c.value).where(controller_state.c.model == model,
                                                          controller_state.c.key == key)
            ).scalar_one_or_none()

    def get_states(self, model: str, keys: Sequence[str]) -> dict[str, bytes]:
        """Several of the model's state values in one query (the ones stored; missing keys are left out)."""
        with self._connection() as conn:
            rows = conn.execute(
                sa.select(controller_state.c.key, controller_state.c.value).where(
                    controller_state.c.model == model, controller_state.c.key.in_(list(keys)))
            ).all()
        return {key: value for key, value in rows}

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        with self._connection() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        sealer = self._sealer
        if sealer is not None:
            sealer.stop()
        self.engine.dispose()

    def transaction(self) -> Any:
        """A connection in a committed-on-exit transaction, with the store's error mapping (StoreUnavailable);
        for the store's other tables (decisions, leases in ``controller.store.control``). It is a write transaction:
        on SQLite it holds the database's write lock from its first statement (``BEGIN IMMEDIATE``), so a
        read-then-write inside it is not raced by another process."""
        return self._transaction()

    def connection(self) -> Any:
        """A connection with the store's error mapping; see :meth:`transaction`."""
        return self._connection()

    # ---------------------------------------------------------------------------------------------------- internals

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        with self._connection() as conn:
            try:
                with begin_write(conn):
                    yield conn
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                # Connected, then failed: say so, rather than "unreachable". The transaction was rolled back.
                raise StoreUnavailable(describe_failure(self.engine, exc)) from exc

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """A read transaction with one snapshot for all its statements (a read that spans the row tables and the
        segments must not see rows move between them): SQLite's read transaction, REPEATABLE READ on PostgreSQL."""
        with self._connection() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
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

    def _existing_predictions(self, conn: sa.Connection, model: str, ids: list[str], *,
                              content: bool = True) -> dict[str, dict]:
        columns = [predictions.c.prediction_id]
        if content:
            columns += [predictions.c.features, predictions.c.prediction, predictions.c.scores,
                        predictions.c.model_version, predictions.c.event_time]
        query = sa.select(*columns).where(predictions.c.model == model,
                                          _one_of(conn, predictions.c.prediction_id, ids))
        return {row.prediction_id: dict(row._mapping) for row in conn.execute(query)}

    def _count_unmatched(self, conn: sa.Connection, model: str, ids: list[str],
                         found: Mapping[str, sealed.SealedId]) -> int:
        """How many of ``ids`` (one per inserted label row, an id may repeat) have no stored prediction."""
        if not ids:
            return 0
        where = sa.and_(predictions.c.model == model, _one_of(conn, predictions.c.prediction_id, ids))
        if len(set(ids)) == len(ids) and not found:
            return len(ids) - conn.execute(sa.select(sa.func.count()).select_from(predictions).where(where)
                                           ).scalar_one()
        matched = set(conn.execute(sa.select(predictions.c.prediction_id).where(where)).scalars()) | set(found)
        return sum(pid not in matched for pid in ids)

    def _current_labels(self, conn: sa.Connection, model: str, ids: list[str]) -> dict[str, Any]:
        query = sa.select(labels.c.prediction_id, labels.c.value).where(
            labels.c.model == model, labels.c.superseded_at.is_(None), _one_of(conn, labels.c.prediction_id, ids))
        return {row.prediction_id: row.value for row in conn.execute(query)}


@dataclass(frozen=True)
class _Limits:
    """The limits of a labeled-window read, applied to the row tables in SQL and to segments with numpy."""

    as_of: datetime
    since: datetime | None
    after_seq: int | None
    through_seq: int | None
    max_rows: int | None

    def mask(self, part: seg.Part, superseded: np.ndarray) -> np.ndarray:
        as_of = to_us(self.as_of)
        arrived = part.ints("arrived_at")
        mask = (arrived <= as_of) & (superseded > as_of)
        seqs = part.ints("seq")
        if self.since is not None:
            mask &= arrived >= to_us(self.since)
        if self.after_seq is not None:
            mask &= seqs > self.after_seq
        if self.through_seq is not None:
            mask &= seqs <= self.through_seq
        return mask


def _newest(parts: list[seg.Part], max_rows: int) -> list[seg.Part]:
    """The parts cut to the ``max_rows`` largest seqs among them."""
    seqs = np.concatenate([p.ints("seq") for p in parts]) if parts else np.empty(0, np.int64)
    if seqs.size <= max_rows:
        return parts
    if max_rows == 0:
        return [p.take(np.empty(0, dtype=np.int64)) for p in parts[-1:]]
    floor = np.sort(seqs)[-max_rows]
    return [p.take(np.flatnonzero(p.ints("seq") >= floor)) for p in parts]


class _Sealer:
    """The background thread of one store that seals models after label writes (one at a time, coalescing requests).
    A daemon thread: a process that exits mid-seal rolls that transaction back; nothing is half-moved."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
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
                self.store._seal_quietly(model)
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


def _one_of(conn: sa.Connection, column: sa.Column, ids: list[str]) -> sa.ColumnElement[bool]:
    """``column IN ids`` with the ids as ONE bound parameter (a JSON array on SQLite, an array on PostgreSQL).

    A thousand separate binds cost more to compile than the lookup itself, and on PostgreSQL a generic plan for an
    IN-list of binds cannot use the (model, prediction_id) index (docs/benchmarks.md).
    """
    unique = list(dict.fromkeys(ids))
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam("ids", unique, type_=postgresql.ARRAY(sa.String)))
    listed = sa.func.json_each(sa.bindparam("ids", json.dumps(unique))).table_valued("value")
    return column.in_(sa.select(listed.c.value))


# -------------------------------------------------------------------------------------------------------- helpers


_JSON_COLUMNS = {"features", "prediction", "scores", "value"}
_TIME_COLUMNS = {"event_time", "received_at", "arrived_at", "superseded_at"}


def _bulk_insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], *,
                 conflict: tuple[str, ...] | None = None) -> int:
    """Insert plain rows through the DB-API ``executemany``, with JSON and times encoded once, here; return how many
    rows were inserted.

    This is the ingestion hot path: SQLAlchemy Core's per-row parameter processing was about half of the store's
    time (docs/benchmarks.md), so values are encoded exactly as the column types would encode them and handed to the
    driver directly. Reads still go through the column types, which decode them. ``conflict`` names a unique key:
    rows whose key is already stored are skipped (``ON CONFLICT DO NOTHING``, SQLite and PostgreSQL alike) instead of
    failing the statement.
    """
    if not rows:
        return 0
    columns = list(rows[0])
    sqlite = conn.dialect.name == "sqlite"
    if not sqlite:
        return _copy_insert(conn, table, rows, columns, conflict)
    if sqlite:
        placeholders = ", ".join("?" for _ in columns)
    else:
        placeholders = ", ".join("%s::jsonb" if c in _JSON_COLUMNS else "%s" for c in columns)
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    encoders = [_encoder(column, sqlite) for column in columns]
    # Column by column: one tight comprehension per column beats a generator per row (the hot spot measured here).
    encoded = [[encode(row[c]) for row in rows] for encode, c in zip(encoders, columns, strict=True)]
    params = list(zip(*encoded, strict=True))
    return conn.exec_driver_sql(sql, params).rowcount


def _copy_insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], columns: list[str],
                 conflict: tuple[str, ...] | None) -> int:
    """PostgreSQL: the rows through ``COPY ... FROM STDIN`` (about twice the rate of a pipelined executemany at
    batches of 1,000; docs/benchmarks-store.md). COPY cannot skip existing keys, so with ``conflict`` the rows go to
    the connection's staging table first and from there into the table with ``ON CONFLICT DO NOTHING``, in key order
    (two batches with overlapping ids lock them in one order: they wait for each other, never deadlock)."""
    encoders = [_encoder(column, False) for column in columns]
    encoded = [[encode(row[c]) for row in rows] for encode, c in zip(encoders, columns, strict=True)]
    names = ", ".join(columns)
    target = STAGE_TABLES[table.name] if conflict else table.name
    with conn.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
            for row in zip(*encoded, strict=True):
                copy.write_row(row)
        if not conflict:
            return len(rows)
        order = ", ".join(conflict)
        cursor.execute(f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {target} ORDER BY {order} "
                       f"ON CONFLICT ({order}) DO NOTHING")
        inserted = cursor.rowcount
        cursor.execute(f"TRUNCATE {target}")
    return inserted


def _encoder(column: str, sqlite: bool) -> Any:
    """A per-call encoder for one column. Times and scalar labels repeat within a batch (one arrival time, a few
    classes), so each distinct value is encoded once."""
    if column in _JSON_COLUMNS:
        cache: dict[tuple, str] = {}

        def encode_json(value: Any) -> str:
            if isinstance(value, (dict, list)):
                return dumps_json(value)
            key = (type(value), value)
            if key not in cache:
                cache[key] = dumps_json(value)
            return cache[key]

        return encode_json
    if column in _TIME_COLUMNS:
        times: dict[datetime, Any] = {}

        def encode_time(when: datetime | None) -> Any:
            if when is None:
                return None
            if when not in times:
                utc = when.astimezone(UTC)
                # UTCDateTime's storage form: naive UTC text on SQLite (text order = time order), aware on PostgreSQL.
                times[when] = utc.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else utc
            return times[when]

        return encode_time
    return lambda value: value


def _same_value(a: Any, b: Any) -> bool:
    # JSON round-trips make 1 and 1.0 equal and keep True distinct from 1 only by type; compare as JSON does.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _same_prediction(stored: Mapping[str, Any], row: Mapping[str, Any], *, event_time: bool = True) -> bool:
    """Whether a stored prediction and a row to store have the same content; ``event_time=False`` leaves the event
    time out (the client did not give one, so the store's stamp is not part of what it sent)."""
    if event_time and ensure_utc(stored["event_time"]) != ensure_utc(row["event_time"]):
        return False
    if stored["model_version"] != row["model_version"]:
        return False
    # NaN is compared in the form it is stored in ("NaN"), so a retried NaN prediction is a repeat.
    return all(_same_json(stored[key], json_safe(row[key])) for key in ("features", "prediction", "scores"))


def _same_json(stored: Any, sent: Any) -> bool:
    """JSON equality as the store keeps values: numbers by value (PostgreSQL's JSONB gives 1e16 back as the integer
    10000000000000000), booleans apart from numbers, objects by keys in any order."""
    if isinstance(stored, bool) or isinstance(sent, bool):
        return type(stored) is type(sent) and stored == sent
    if isinstance(stored, dict) and isinstance(sent, Mapping):
        return stored.keys() == sent.keys() and all(_same_json(stored[k], sent[k]) for k in stored)
    if isinstance(stored, list) and isinstance(sent, (list, tuple)):
        return len(stored) == len(sent) and all(_same_json(a, b) for a, b in zip(stored, sent, strict=True))
    if isinstance(stored, (int, float)) and isinstance(sent, (int, float)):
        return stored == sent
    return type(stored) is type(sent) and stored == sent


def features_frame(feature_rows: list[Mapping[str, Any]], feature_types: Mapping[str, str] | None) -> pd.DataFrame:
    """Feature dicts as a DataFrame: numeric -> float64 (None/missing -> NaN; stored "NaN"/"Infinity" -> floats),
    categorical and boolean -> object (None where missing). Built column by column with plain lists: this runs on
    every /predict request, where pandas' per-row construction cost more than the model (docs/benchmarks-serve.md)."""
    if feature_types is None:
        frame = pd.DataFrame.from_records(feature_rows) if feature_rows else pd.DataFrame()
        return frame.reset_index(drop=True)
    columns: dict[str, Any] = {}
    for name, kind in feature_types.items():
        values = [row.get(name) for row in feature_rows]
        if kind == "numeric":
            columns[name] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        else:
            columns[name] = np.fromiter(values, dtype=object, count=len(values))  # a list value stays one object
    return pd.DataFrame(columns, index=pd.RangeIndex(len(feature_rows)))


def _fingerprint(prediction_ids: pd.Series, labels: pd.Series, label_times: pd.Series) -> str:
    """sha256 over (prediction id, label, arrival time) rows: equal windows, equal fingerprints
    (:func:`controller.store.segments.fingerprint_columns`)."""
    times = pd.DatetimeIndex(label_times).as_unit("us").asi8 if len(label_times) else np.empty(0, np.int64)
    return seg.fingerprint_columns(prediction_ids.to_numpy(dtype=object), labels, times)
