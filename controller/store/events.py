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

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from controller.clock import Clock, SystemClock, ensure_utc
from controller.errors import LabelConflict, PredictionConflict, Problem, StoreUnavailable
from controller.store.db import (
    advisory_xact_lock,
    begin_write,
    create_store_engine,
    describe_failure,
    describe_unreachable,
    dumps_json,
    json_safe,
    upgrade,
)
from controller.store.tables import controller_state, labels, predictions


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


class EventStore:
    """Predictions and natural labels for any number of models, on one database."""

    def __init__(self, engine: sa.Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None, *, migrate: bool = True) -> EventStore:
        """Open the store at ``url``, applying pending schema migrations first (``migrate=False`` to skip)."""
        engine = create_store_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine, clock)

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
            if conn.dialect.name == "postgresql":
                # Concurrent batches with overlapping ids lock those ids in one order, so they wait, never deadlock.
                insert_rows = sorted(rows, key=lambda row: row["prediction_id"])
            else:
                insert_rows = rows
            inserted = _bulk_insert(conn, predictions, insert_rows, conflict=("model", "prediction_id"))
            if inserted < len(rows):
                # Some ids were stored already (a retry) or by a writer that committed first: compare contents.
                self._check_repeats(conn, model, records, rows)
        return ids

    def _check_repeats(self, conn: sa.Connection, model: str, records: Sequence[PredictionRecord],
                       rows: list[dict[str, Any]]) -> None:
        given = [i for i, r in enumerate(records) if r.prediction_id is not None]
        stored = self._existing_predictions(conn, model, [rows[i]["prediction_id"] for i in given])
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
            now = self._label_arrival_time(conn, model)
            current = self._current_labels(conn, model, [r.prediction_id for r in records])
            inserts: list[dict[str, Any]] = []
            superseded: list[str] = []  # ids whose stored current label this batch replaces
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
            _bulk_insert(conn, labels, inserts)
            unmatched = self._count_unmatched(conn, model, [row["prediction_id"] for row in inserts])
        return LabelReceipt(inserted=len(inserts) - overwritten, duplicates=duplicates, overwritten=overwritten,
                            unmatched=unmatched)

    def _label_arrival_time(self, conn: sa.Connection, model: str) -> datetime:
        """Serialize this model's label transactions and return the arrival time to stamp (module docstring).

        Must run first in the transaction: the lock makes ``seq`` order equal commit order, and the newest arrival is
        read under it.
        """
        advisory_xact_lock(conn, f"labels:{model}")
        now = self.clock.now()
        newest = conn.execute(sa.select(sa.func.max(labels.c.arrived_at)).where(labels.c.model == model)).scalar()
        return max(now, newest) if newest is not None else now

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
        in_force = sa.and_(
            labels.c.model == model,
            labels.c.arrived_at <= as_of,
            sa.or_(labels.c.superseded_at.is_(None), labels.c.superseded_at > as_of),
        )
        query = (
            sa.select(
                labels.c.seq, labels.c.prediction_id, labels.c.value, labels.c.arrived_at,
                predictions.c.features, predictions.c.prediction, predictions.c.scores,
                predictions.c.event_time, predictions.c.model_version,
            )
            .join(predictions, sa.and_(predictions.c.model == labels.c.model,
                                       predictions.c.prediction_id == labels.c.prediction_id))
            .where(in_force)
        )
        if since is not None:
            query = query.where(labels.c.arrived_at >= ensure_utc(since))
        if after_seq is not None:
            query = query.where(labels.c.seq > after_seq)
        if through_seq is not None:
            query = query.where(labels.c.seq <= through_seq)
        if max_rows is not None:
            if max_rows < 0:
                raise ValueError(f"max_rows must be >= 0, got {max_rows}")
            query = query.order_by(labels.c.seq.desc()).limit(max_rows)
        else:
            query = query.order_by(labels.c.seq)
        with self._connection() as conn:
            if after_seq is not None and since is None:
                # Implied by seq > after_seq (arrival never decreases along a model's seq); stated so the index reads
                # only the rows after the cursor, not the model's whole history (see _arrival_floor).
                floor = self._arrival_floor(conn, model, after_seq)
                if floor is not None:
                    query = query.where(labels.c.arrived_at >= floor)
            rows = conn.execute(query).all()
        if max_rows is not None:
            rows.reverse()
        return _window_from_rows(model, as_of, rows, feature_types)

    def predictions_frame(self, model: str, as_of: datetime, *, since: datetime | None = None,
                          max_rows: int | None = None,
                          feature_types: Mapping[str, str] | None = None) -> pd.DataFrame:
        """Logged features of predictions known by ``as_of`` (labeled or not), oldest first: the "current" side of
        data drift. Reference rows (a bootstrap file) are not traffic and are left out. ``since`` keeps event times
        at or after it; ``max_rows`` keeps the newest rows."""
        query = sa.select(predictions.c.features).where(predictions.c.model == model,
                                                        predictions.c.received_at <= ensure_utc(as_of),
                                                        predictions.c.source != "reference")
        if since is not None:
            query = query.where(predictions.c.event_time >= ensure_utc(since))
        query = query.order_by(predictions.c.event_time.desc())
        if max_rows is not None:
            query = query.limit(max_rows)
        with self._connection() as conn:
            rows = conn.execute(query).all()
        rows.reverse()
        return features_frame([r.features for r in rows], feature_types)

    def label_history(self, model: str, prediction_id: str) -> list[LabelChange]:
        """Every value a prediction's label has had, oldest first (the overwrite audit trail)."""
        query = (
            sa.select(labels.c.value, labels.c.arrived_at, labels.c.superseded_at)
            .where(labels.c.model == model, labels.c.prediction_id == prediction_id)
            .order_by(labels.c.seq)
        )
        with self._connection() as conn:
            return [LabelChange(r.value, r.arrived_at, r.superseded_at) for r in conn.execute(query)]

    def get_prediction(self, model: str, prediction_id: str) -> dict[str, Any] | None:
        with self._connection() as conn:
            row = conn.execute(
                sa.select(predictions).where(predictions.c.model == model,
                                             predictions.c.prediction_id == prediction_id)
            ).first()
        return dict(row._mapping) if row is not None else None

    def known_prediction_ids(self, model: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already stored for ``model``."""
        with self._connection() as conn:
            return set(self._existing_predictions(conn, model, list(ids), content=False))

    def count_predictions(self, model: str) -> int:
        with self._connection() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(predictions).where(predictions.c.model == model)
            ).scalar_one()

    # ------------------------------------------------------------------------------------- cheap reads of the loop
    # The controller ticks often; these cost what arrived after a cursor, never the whole history.

    def labeled_count(self, model: str, as_of: datetime, *, after_seq: int | None = None,
                      since: datetime | None = None) -> tuple[int, int | None]:
        """Labeled rows ``labeled_window(model, as_of, after_seq=..., since=...)`` would return: (count, newest
        seq). With ``after_seq`` it reads the rows after the cursor only, however long the history."""
        as_of = ensure_utc(as_of)
        query = (
            sa.select(sa.func.count(), sa.func.max(labels.c.seq))
            .select_from(labels.join(predictions, sa.and_(predictions.c.model == labels.c.model,
                                                          predictions.c.prediction_id == labels.c.prediction_id)))
            .where(labels.c.model == model, labels.c.arrived_at <= as_of,
                   sa.or_(labels.c.superseded_at.is_(None), labels.c.superseded_at > as_of))
        )
        with self._connection() as conn:
            if after_seq is not None:
                query = query.where(labels.c.seq > after_seq)
                floor = self._arrival_floor(conn, model, after_seq)
                if floor is not None and (since is None or floor > ensure_utc(since)):
                    since = floor
            if since is not None:
                query = query.where(labels.c.arrived_at >= ensure_utc(since))
            count, newest = conn.execute(query).one()
        return int(count), (int(newest) if newest is not None else None)

    def tail_start(self, model: str, as_of: datetime, rows: int) -> datetime | None:
        """The arrival time of the oldest of the newest ``rows`` labeled rows as of ``as_of`` (None when there are
        fewer). ``labeled_window(model, as_of, since=tail_start(...), max_rows=rows)`` returns the same rows as
        ``labeled_window(model, as_of, max_rows=rows)``, but reads only the tail of the history: a model's
        ``arrived_at`` never decreases along ``seq``, so the newest rows by seq are the newest by arrival."""
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        as_of = ensure_utc(as_of)
        query = (
            sa.select(labels.c.arrived_at)
            .select_from(labels.join(predictions, sa.and_(predictions.c.model == labels.c.model,
                                                          predictions.c.prediction_id == labels.c.prediction_id)))
            .where(labels.c.model == model, labels.c.arrived_at <= as_of,
                   sa.or_(labels.c.superseded_at.is_(None), labels.c.superseded_at > as_of))
            # Walks the (model, arrived_at) index backwards from as_of and stops after `rows` matches.
            .order_by(labels.c.arrived_at.desc())
            .offset(rows - 1)
            .limit(1)
        )
        with self._connection() as conn:
            return conn.execute(query).scalar_one_or_none()

    def _arrival_floor(self, conn: sa.Connection, model: str, seq: int) -> datetime | None:
        """When label ``seq`` of ``model`` arrived. Every later label of the model arrived at or after it (arrival
        times never decrease along a model's seq), so ``arrived_at >= floor`` is implied by ``seq > cursor``; stating
        it lets the (model, arrived_at) index read only the rows since the cursor. Without it, SQLite and PostgreSQL
        both walk the model's whole history in that index to filter on seq (measured: benchmarks/controller.py)."""
        return conn.execute(
            sa.select(labels.c.arrived_at).where(labels.c.seq == seq, labels.c.model == model)
        ).scalar_one_or_none()

    def traffic_since(self, model: str, as_of: datetime, after: datetime | None) -> tuple[int, datetime | None]:
        """Logged predictions (not reference rows) known by ``as_of`` with an event time after ``after``:
        (count, newest event time). The (model, event_time) index keeps this proportional to the new rows."""
        query = sa.select(sa.func.count(), sa.func.max(predictions.c.event_time)).where(
            predictions.c.model == model, predictions.c.received_at <= ensure_utc(as_of),
            predictions.c.source != "reference")
        if after is not None:
            query = query.where(predictions.c.event_time > ensure_utc(after))
        with self._connection() as conn:
            count, newest = conn.execute(query).one()
        if isinstance(newest, str):  # SQLite hands an aggregate back untyped
            newest = datetime.fromisoformat(newest)
        return int(count), (ensure_utc(newest) if newest is not None else None)

    def label_stats(self, model: str, as_of: datetime | None = None, *, delay_sample: int = 100_000) -> LabelStats:
        """Counts and label-delay percentiles as of ``as_of`` (default: now), of the model's traffic: bootstrap's
        reference rows are counted apart (``reference_rows``) and left out of coverage, pending and delays.

        Delay = label arrival - prediction event time, over the most recent ``delay_sample`` matured labels, so the
        cost stays bounded on a long history.
        """
        as_of = ensure_utc(as_of or self.clock.now())
        in_force = sa.and_(
            labels.c.model == model,
            labels.c.arrived_at <= as_of,
            sa.or_(labels.c.superseded_at.is_(None), labels.c.superseded_at > as_of),
        )
        join_on = sa.and_(predictions.c.model == labels.c.model,
                          predictions.c.prediction_id == labels.c.prediction_id)
        received = predictions.c.received_at <= as_of
        with self._connection() as conn:
            by_source = dict(conn.execute(
                sa.select(predictions.c.source, sa.func.count()).select_from(predictions)
                .where(predictions.c.model == model, received).group_by(predictions.c.source)
            ).all())
            labeled_by_source = dict(conn.execute(
                sa.select(predictions.c.source, sa.func.count()).select_from(labels.join(predictions, join_on))
                .where(in_force, received).group_by(predictions.c.source)
            ).all())
            all_labels = conn.execute(sa.select(sa.func.count()).select_from(labels).where(in_force)).scalar_one()
            delays = conn.execute(
                sa.select(labels.c.arrived_at, predictions.c.event_time)
                .select_from(labels.join(predictions, join_on))
                .where(in_force, received, predictions.c.source != "reference")
                .order_by(labels.c.seq.desc())
                .limit(delay_sample)
            ).all()
        seconds = np.array([(a - e).total_seconds() for a, e in delays], dtype=float)
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

    # ---------------------------------------------------------------------------------------------------- state

    def put_state(self, model: str, key: str, value: bytes) -> None:
        """Durably store a named blob (detector or learner state) for ``model``, replacing the old one."""
        now = self.clock.now()
        with self._transaction() as conn:
            conn.execute(controller_state.delete().where(controller_state.c.model == model,
                                                         controller_state.c.key == key))
            conn.execute(controller_state.insert().values(model=model, key=key, value=value, updated_at=now))

    def get_state(self, model: str, key: str) -> bytes | None:
        with self._connection() as conn:
            return conn.execute(
                sa.select(controller_state.c.value).where(controller_state.c.model == model,
                                                          controller_state.c.key == key)
            ).scalar_one_or_none()

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        with self._connection() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
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

    def _count_unmatched(self, conn: sa.Connection, model: str, ids: list[str]) -> int:
        """How many of ``ids`` (one per inserted label row, an id may repeat) have no stored prediction."""
        if not ids:
            return 0
        where = sa.and_(predictions.c.model == model, _one_of(conn, predictions.c.prediction_id, ids))
        if len(set(ids)) == len(ids):
            return len(ids) - conn.execute(sa.select(sa.func.count()).select_from(predictions).where(where)
                                           ).scalar_one()
        matched = set(conn.execute(sa.select(predictions.c.prediction_id).where(where)).scalars())
        return sum(pid not in matched for pid in ids)

    def _current_labels(self, conn: sa.Connection, model: str, ids: list[str]) -> dict[str, Any]:
        query = sa.select(labels.c.prediction_id, labels.c.value).where(
            labels.c.model == model, labels.c.superseded_at.is_(None), _one_of(conn, labels.c.prediction_id, ids))
        return {row.prediction_id: row.value for row in conn.execute(query)}


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
            columns[name] = np.array(values, dtype=object)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(feature_rows)))


def _window_from_rows(model: str, as_of: datetime, rows: list, feature_types: Mapping[str, str] | None
                      ) -> LabeledWindow:
    features = features_frame([r.features for r in rows], feature_types)
    score_rows = [r.scores for r in rows]
    scores = (pd.DataFrame.from_records([s or {} for s in score_rows]).astype("float64")
              if any(s for s in score_rows) else None)
    prediction_ids = pd.Series([r.prediction_id for r in rows], dtype=object, name="prediction_id")
    labels = pd.Series([r.value for r in rows], dtype=_label_dtype([r.value for r in rows]), name="label")
    label_times = pd.Series(pd.to_datetime([r.arrived_at for r in rows], utc=True), name="label_time")
    return LabeledWindow(
        model=model,
        as_of=as_of,
        features=features,
        labels=labels,
        predictions=pd.Series([r.prediction for r in rows], dtype=object, name="prediction"),
        scores=scores,
        prediction_ids=prediction_ids,
        event_times=pd.Series(pd.to_datetime([r.event_time for r in rows], utc=True), name="event_time"),
        label_times=label_times,
        model_versions=pd.Series([r.model_version for r in rows], dtype=object, name="model_version"),
        label_seqs=pd.Series([r.seq for r in rows], dtype="int64", name="label_seq"),
        fingerprint=_fingerprint(prediction_ids, labels, label_times),
    )


def _fingerprint(prediction_ids: pd.Series, labels: pd.Series, label_times: pd.Series) -> str:
    """sha256 over (prediction id, label, arrival time) rows: equal windows, equal fingerprints."""
    digest = hashlib.sha256()
    for pid, value, arrived in zip(prediction_ids, labels, label_times, strict=True):
        value = value.item() if isinstance(value, np.generic) else value
        digest.update(f"{pid}\x1f{json.dumps(value)}\x1f{arrived.isoformat()}\x1e".encode())
    return digest.hexdigest()


def _label_dtype(values: list) -> str:
    if values and all(isinstance(v, float) and not isinstance(v, bool) for v in values):
        return "float64"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int64"
    return "object"
