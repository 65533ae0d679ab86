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


def _block_columns(hot: bool) -> list[sa.ColumnElement]:
    """The columns of a RowBlock read; ``hot=False``: a label whose prediction lives in a segment (no columns of
    ``predictions``; its payload is fetched from the segment)."""
    def prediction(column: sa.Column, name: str, raw: bool = True) -> sa.ColumnElement:
        if not hot:
            # Typed, so PostgreSQL can match the branch's NULL with the other branch's column in the UNION.
            return sa.type_coerce(sa.cast(sa.null(), column.type), _RAW).label(name)
        return (sa.type_coerce(column, _RAW) if raw else column).label(name)

    return [
        labels.c.seq,
        labels.c.prediction_id,
        sa.type_coerce(labels.c.value, _RAW).label("value"),
        sa.type_coerce(labels.c.arrived_at, _RAW).label("arrived_at"),
        sa.type_coerce(labels.c.superseded_at, _RAW).label("superseded_at"),
        (sa.true() if hot else sa.false()).label("hot"),
        prediction(predictions.c.features, "features"),
        prediction(predictions.c.prediction, "prediction"),
        prediction(predictions.c.scores, "scores"),
        prediction(predictions.c.event_time, "event_time"),
        prediction(predictions.c.model_version, "model_version", raw=False),
        prediction(predictions.c.received_at, "received_at"),
        prediction(predictions.c.source, "source", raw=False),
    ]


_SHAPES = {
    "block": _block_columns,
    "seq": lambda hot: [labels.c.seq],
    "arrival": lambda hot: [labels.c.seq, labels.c.arrived_at],
}


def labeled_rows(conn: sa.Connection, model_id: int | None, where: Sequence[sa.ColumnElement[bool]], *,
                 shape: str = "block", order: str | None = None, descending: bool = False,
                 limit: int | None = None, sealed_only: bool = False) -> sa.Select:
    """Label rows of the row tables that have a prediction, with ``shape``'s columns (``block``: what
    :func:`fetch_block` reads; ``seq``; ``arrival``: seq and arrived_at), filtered by ``where`` (on ``labels``),
    ordered by ``seq`` or ``arrival`` (arrived_at, seq: the (model, arrived_at) index's order, equal to seq order
    within a model) and limited.

    While nothing of the model is sealed this is the join of ``labels`` and ``predictions``. Once something is, a
    label whose prediction was sealed (a later label of a sealed id) comes from a second branch that looks its id up
    in ``sealed_ids``: one index probe per label row (LATERAL on PostgreSQL, so no plan ever scans the model's sealed
    ids), UNION ALL the join (an id is in ``predictions`` or sealed, never both). ``sealed_only``: that second branch
    alone (the label rows of sealed predictions; needs ``model_id``)."""
    joined = labels.join(predictions, sa.and_(predictions.c.model == labels.c.model,
                                              predictions.c.prediction_id == labels.c.prediction_id))

    def ordered(query: sa.Select, seq: Any, arrived: Any) -> sa.Select:
        if order is not None:
            keys = [seq] if order == "seq" else [arrived, seq]
            query = query.order_by(*[k.desc() if descending else k for k in keys])
        return query.limit(limit) if limit is not None else query

    if sealed_only and model_id is None:
        raise ValueError("sealed_only needs the model's sealed key (nothing of it is sealed)")
    hot = sa.select(*_SHAPES[shape](True)).select_from(joined).where(*where)
    if model_id is None:
        return ordered(hot, labels.c.seq, labels.c.arrived_at)
    if conn.dialect.name == "postgresql":
        found = (sa.select(sealed_ids.c.segment_id)
                 .where(sealed_ids.c.model_id == model_id, sealed_ids.c.prediction_id == labels.c.prediction_id)
                 .lateral("sealed"))
        cold = sa.select(*_SHAPES[shape](False)).select_from(labels).join(found, sa.true()).where(*where)
    else:
        cold = (sa.select(*_SHAPES[shape](False))
                .select_from(labels.join(sealed_ids, sa.and_(sealed_ids.c.model_id == model_id,
                                                             sealed_ids.c.prediction_id == labels.c.prediction_id)))
                .where(*where))
    if sealed_only:
        return ordered(cold, labels.c.seq, labels.c.arrived_at)
    if order is not None or limit is not None:
        # Each branch ordered and cut first, so the union never holds more than twice the limit.
        hot = ordered(hot, labels.c.seq, labels.c.arrived_at)
        cold = ordered(cold, labels.c.seq, labels.c.arrived_at)
        both = sa.union_all(hot.subquery().select(), cold.subquery().select()).subquery("rows")
    else:
        both = sa.union_all(hot, cold).subquery("rows")
    arrived = both.c.arrived_at if "arrived_at" in both.c else both.c.seq
    return ordered(sa.select(*both.c), both.c.seq, arrived)


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


def fetch_block(conn: sa.Connection, query: sa.Select, payloads: Any = None) -> RowBlock:
    """The rows of a :func:`labeled_rows` query of shape ``block``, as a RowBlock in the query's order.

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
