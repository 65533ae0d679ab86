"""Reading the row tables (``labels`` joined to ``predictions``) into the columnar form of
:mod:`controller.store.segments`: the newest, not yet sealed part of every window read, and the rows sealing moves.

Values are fetched raw (JSON text on SQLite, psycopg's decoded JSONB on PostgreSQL; times as text or datetimes) and
converted once per column, not through SQLAlchemy's per-value result processors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from controller.store.segments import SUPERSEDED_NEVER, RowBlock
from controller.store.tables import labels, predictions, sealed_ids

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RAW = sa.types.NullType()


def to_us(when: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact)."""
    return (when - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def times_us(values: Sequence[Any], sqlite: bool) -> np.ndarray:
    """Stored times (SQLite's text, PostgreSQL's datetimes; None allowed) as int64 microseconds; None ->
    SUPERSEDED_NEVER."""
    if not len(values):
        return np.empty(0, dtype=np.int64)
    if sqlite:
        out = np.array(values, dtype="datetime64[us]").astype(np.int64)
    else:
        out = pd.to_datetime(list(values), utc=True).as_unit("us").asi8.copy()
    out[out == np.iinfo(np.int64).min] = SUPERSEDED_NEVER  # NaT
    return out


def one_of(conn: sa.Connection, column: sa.ColumnElement, ids: Sequence[Any], name: str = "ids",
           type_: Any = sa.String) -> sa.ColumnElement[bool]:
    """``column IN ids`` with the ids as ONE bound parameter (a JSON array on SQLite, an array on PostgreSQL).

    A thousand separate binds cost more to compile than the lookup itself, and on PostgreSQL a generic plan for an
    IN-list of binds cannot use the index (docs/benchmarks.md)."""
    unique = list(dict.fromkeys(ids))
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(name, unique, type_=postgresql.ARRAY(type_)))
    listed = sa.func.json_each(sa.bindparam(name, json.dumps(unique))).table_valued("value")
    return column.in_(sa.select(listed.c.value))


def in_force(model: str, as_of: datetime | None) -> sa.ColumnElement[bool]:
    if as_of is None:
        return labels.c.model == model
    return sa.and_(labels.c.model == model, labels.c.arrived_at <= as_of,
                   sa.or_(labels.c.superseded_at.is_(None), labels.c.superseded_at > as_of))


def joined_labels(model_id: int | None, columns: Sequence[sa.ColumnElement]) -> sa.Select:
    """Label rows with their prediction: an inner join while nothing of the model is sealed; once something is, a label
    whose prediction was sealed (an overwrite of an old label) is kept too, its prediction coming from the segment."""
    if model_id is None:
        return sa.select(*columns).select_from(labels.join(predictions, sa.and_(
            predictions.c.model == labels.c.model, predictions.c.prediction_id == labels.c.prediction_id)))
    sealed = sa.and_(sealed_ids.c.model_id == model_id, sealed_ids.c.prediction_id == labels.c.prediction_id)
    return (
        sa.select(*columns, sealed_ids.c.segment_id.label("sealed_segment"))
        .select_from(labels.outerjoin(predictions, sa.and_(predictions.c.model == labels.c.model,
                                                           predictions.c.prediction_id == labels.c.prediction_id))
                     .outerjoin(sealed_ids, sealed))
        .where(sa.or_(predictions.c.prediction_id.is_not(None), sealed_ids.c.prediction_id.is_not(None)))
    )


def loads_column(values: list[Any]) -> list[Any]:
    """SQLite's JSON column values decoded. The column has NUMERIC affinity, so a number comes back as an int or a
    float (what SQLAlchemy's JSON type returns for it too) and everything else as JSON text. The texts are parsed as
    one JSON array: a third of the time of one ``json.loads`` per value."""
    texts = [i for i, v in enumerate(values) if isinstance(v, str)]
    if not texts:
        return list(values)
    out = list(values)
    parsed = json.loads("[" + ",".join([values[i] for i in texts]) + "]")
    for i, value in zip(texts, parsed, strict=True):
        out[i] = value
    return out


BLOCK_COLUMNS = (
    labels.c.seq,
    labels.c.prediction_id,
    sa.type_coerce(labels.c.value, _RAW).label("value"),
    sa.type_coerce(labels.c.arrived_at, _RAW).label("arrived_at"),
    sa.type_coerce(labels.c.superseded_at, _RAW).label("superseded_at"),
    (predictions.c.prediction_id.is_not(None)).label("hot"),
    sa.type_coerce(predictions.c.features, _RAW).label("features"),
    sa.type_coerce(predictions.c.prediction, _RAW).label("prediction"),
    sa.type_coerce(predictions.c.scores, _RAW).label("scores"),
    sa.type_coerce(predictions.c.event_time, _RAW).label("event_time"),
    predictions.c.model_version,
    sa.type_coerce(predictions.c.received_at, _RAW).label("received_at"),
    predictions.c.source,
)


def fetch_block(conn: sa.Connection, query: sa.Select, payloads: Any = None) -> RowBlock:
    """The rows of a :func:`joined_labels` query over :data:`BLOCK_COLUMNS`, as a RowBlock in the query's order.

    ``payloads(ids) -> {id: record}`` supplies the predictions that live in segments (rows whose ``hot`` is false).
    ``owner`` is true on the first row (in seq order) of each prediction still in the row tables."""
    rows = conn.execute(query).all()
    sqlite = conn.dialect.name == "sqlite"
    cold = [i for i, r in enumerate(rows) if not r.hot]
    records = payloads([rows[i].prediction_id for i in cold]) if cold and payloads is not None else {}

    def decoded(values: list[Any]) -> list[Any]:
        return loads_column(values) if sqlite else values

    seq = np.array([r.seq for r in rows], dtype=np.int64)
    pids = [r.prediction_id for r in rows]
    features = decoded([r.features for r in rows])
    prediction = decoded([r.prediction for r in rows])
    scores = decoded([r.scores for r in rows])
    event_time = [r.event_time for r in rows]
    received_at = [r.received_at for r in rows]
    versions = [r.model_version for r in rows]
    sources = [r.source for r in rows]
    owner = np.array([bool(r.hot) for r in rows], dtype=bool)
    event_us = times_us(event_time, sqlite) if not cold else None
    received_us = times_us(received_at, sqlite) if not cold else None
    if cold:
        event_us = np.empty(len(rows), dtype=np.int64)
        received_us = np.empty(len(rows), dtype=np.int64)
        hot = np.flatnonzero(owner)
        event_us[hot] = times_us([event_time[i] for i in hot], sqlite)
        received_us[hot] = times_us([received_at[i] for i in hot], sqlite)
        for i in cold:
            record = records[pids[i]]
            features[i], prediction[i], scores[i] = record["features"], record["prediction"], record["scores"]
            versions[i], sources[i] = record["model_version"], record["source"]
            event_us[i], received_us[i] = to_us(record["event_time"]), to_us(record["received_at"])
    if owner.any():
        # Only the first row of a prediction (in seq order) owns it; later rows of the same id carry a copy.
        order = np.argsort(seq, kind="stable")
        seen: set[str] = set()
        for i in order:
            if owner[i]:
                if pids[i] in seen:
                    owner[i] = False
                else:
                    seen.add(pids[i])
    return RowBlock(
        seq=seq, prediction_id=pids, value=decoded([r.value for r in rows]),
        arrived_at=times_us([r.arrived_at for r in rows], sqlite),
        superseded_at=times_us([r.superseded_at for r in rows], sqlite), owner=owner,
        event_time=event_us, received_at=received_us, model_version=versions, source=sources,
        prediction=prediction, scores=scores, features=features,
    )
