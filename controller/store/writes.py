"""The store's writes: a batch of predictions or labels checked completely, then written in one transaction (the
rules are in :mod:`controller.store.events`' docstring), and the bulk inserts they go through.

Every function takes the connection of a write transaction the caller opened (``EventStore.transaction()``); a
problem raises :class:`~controller.errors.PredictionConflict` / :class:`~controller.errors.LabelConflict` before
anything of the batch is written, so the transaction rolls back whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from controller.clock import Clock, ensure_utc
from controller.errors import LabelConflict, PredictionConflict, Problem
from controller.store import sealed
from controller.store.db import STAGE_TABLES, advisory_xact_lock, dumps_json, json_safe
from controller.store.records import LabelReceipt, LabelRecord, PredictionRecord
from controller.store.row_reads import stored_predictions
from controller.store.rows import one_of
from controller.store.tables import (
    UTCDateTime,
    labels,
    predictions,
    sealed_ids,
    sealed_supersessions,
    segments,
    store_models,
)

# ----------------------------------------------------------------------------------------------------- predictions


def prediction_rows(model: str, records: Sequence[PredictionRecord], now: datetime) -> tuple[list[str], list[dict]]:
    """The batch's ids (generated where not given) and its rows; a record without ``event_time`` is stamped ``now``."""
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
    return ids, rows


def insert_predictions(conn: sa.Connection, model: str, records: Sequence[PredictionRecord],
                       rows: list[dict[str, Any]]) -> None:
    """Insert the rows of :func:`prediction_rows`; ids stored already (a retry, another writer, a sealed prediction)
    are compared instead: identical is a no-op, different a :class:`PredictionConflict` for the batch."""
    # First statements: the shared seal lock (PostgreSQL), then the model's sealed key.
    sealed.seal_lock(conn, model, shared=True)
    mid = sealed.model_id(conn, model)
    # Ids whose prediction was sealed are stored already: compared below, never inserted again.
    given = [row["prediction_id"] for row, r in zip(rows, records, strict=True) if r.prediction_id is not None]
    found = sealed.lookup(conn, mid, given) if mid is not None else {}
    insert_rows = [row for row in rows if row["prediction_id"] not in found] if found else rows
    if conn.dialect.name == "postgresql":
        # Concurrent batches with overlapping ids lock those ids in one order, so they wait, never deadlock.
        insert_rows = sorted(insert_rows, key=lambda row: row["prediction_id"])
    inserted = bulk_insert(conn, predictions, insert_rows, conflict=("model", "prediction_id"))
    if inserted < len(rows):
        # Some ids were stored already (a retry) or by a writer that committed first: compare contents.
        _check_repeats(conn, model, records, rows, found)


def _check_repeats(conn: sa.Connection, model: str, records: Sequence[PredictionRecord],
                   rows: list[dict[str, Any]], found: Mapping[str, sealed.SealedId]) -> None:
    given = [i for i, r in enumerate(records) if r.prediction_id is not None]
    stored = stored_predictions(conn, model, [rows[i]["prediction_id"] for i in given
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


# ---------------------------------------------------------------------------------------------------------- labels


def insert_labels(conn: sa.Connection, model: str, records: Sequence[LabelRecord], clock: Clock) -> LabelReceipt:
    """Apply a label batch in order, as if sent one by one, stamped with the arrival time of
    :func:`_label_arrival_time` (``clock``, never earlier than the model's newest arrival)."""
    now, mid = _label_arrival_time(conn, model, clock)
    ids = [r.prediction_id for r in records]
    current = _current_labels(conn, model, ids)
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
            .where(labels.c.model == model, one_of(conn, labels.c.prediction_id, superseded),
                   labels.c.superseded_at.is_(None))
            .values(superseded_at=now)
        )
    if superseded_sealed:
        _supersede_sealed(conn, model, mid, {pid: found[pid] for pid in superseded_sealed}, now)
    bulk_insert(conn, labels, inserts)
    unmatched = _count_unmatched(conn, model, [row["prediction_id"] for row in inserts], found)
    return LabelReceipt(inserted=len(inserts) - overwritten, duplicates=duplicates, overwritten=overwritten,
                        unmatched=unmatched)


def _label_arrival_time(conn: sa.Connection, model: str, clock: Clock) -> tuple[datetime, int | None]:
    """Serialize this model's label transactions; return the arrival time to stamp (``events`` module docstring)
    and the model's sealed key (None: nothing sealed).

    Must run first in the transaction: the lock makes ``seq`` order equal commit order, and the newest arrival is
    read under it (also from segments: the row tables may hold none of the model's labels any more).
    """
    advisory_xact_lock(conn, f"labels:{model}")
    now = clock.now()
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


def _supersede_sealed(conn: sa.Connection, model: str, mid: int | None, found: Mapping[str, sealed.SealedId],
                      now: datetime) -> None:
    conn.execute(sealed_supersessions.insert(), [
        {"seq": int(where.label_seq), "model": model, "superseded_at": now}  # type: ignore[arg-type]
        for where in found.values()])
    conn.execute(sealed_ids.update().where(sealed_ids.c.model_id == mid,
                                           one_of(conn, sealed_ids.c.prediction_id, list(found)))
                 .values(label_seq=None))


def _count_unmatched(conn: sa.Connection, model: str, ids: list[str], found: Mapping[str, sealed.SealedId]) -> int:
    """How many of ``ids`` (one per inserted label row, an id may repeat) have no stored prediction."""
    if not ids:
        return 0
    where = sa.and_(predictions.c.model == model, one_of(conn, predictions.c.prediction_id, ids))
    if len(set(ids)) == len(ids) and not found:
        return len(ids) - conn.execute(sa.select(sa.func.count()).select_from(predictions).where(where)
                                       ).scalar_one()
    matched = set(conn.execute(sa.select(predictions.c.prediction_id).where(where)).scalars()) | set(found)
    return sum(pid not in matched for pid in ids)


def _current_labels(conn: sa.Connection, model: str, ids: list[str]) -> dict[str, Any]:
    query = sa.select(labels.c.prediction_id, labels.c.value).where(
        labels.c.model == model, labels.c.superseded_at.is_(None), one_of(conn, labels.c.prediction_id, ids))
    return {row.prediction_id: row.value for row in conn.execute(query)}


# ------------------------------------------------------------------------------------------------------ bulk inserts


_JSON_COLUMNS = {"features", "prediction", "scores", "value"}
_TIME_COLUMNS = {"event_time", "received_at", "arrived_at", "superseded_at"}


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], *,
                conflict: tuple[str, ...] | None = None) -> int:
    """Insert plain rows with JSON and times encoded once, here; return how many rows were inserted: SQLite through
    the DB-API ``executemany``, PostgreSQL through ``COPY`` (:func:`_copy_insert`).

    This is the ingestion hot path: SQLAlchemy Core's per-row parameter processing was about half of the store's
    time (docs/benchmarks.md), so values are encoded exactly as the column types would encode them and handed to the
    driver directly. Reads still go through the column types, which decode them. ``conflict`` names a unique key:
    rows whose key is already stored are skipped (``ON CONFLICT DO NOTHING``, SQLite and PostgreSQL alike) instead of
    failing the statement.
    """
    if not rows:
        return 0
    columns = list(rows[0])
    if conn.dialect.name != "sqlite":
        return _copy_insert(conn, table, rows, columns, conflict)
    placeholders = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    encoders = [_encoder(column, True) for column in columns]
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


# ---------------------------------------------------------------------------------------------------- repeat checks


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
