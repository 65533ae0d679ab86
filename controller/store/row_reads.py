"""The row tables' half of each read of :class:`~controller.store.events.EventStore`: SQL on ``predictions`` and
``labels``, the newest rows of every model (all of them while nothing of it is sealed). The segments' half is
:mod:`controller.store.sealed_reads`; both take their limits from :mod:`controller.store.limits`.

Each function runs in the caller's read transaction (one snapshot for both halves).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from controller.clock import ensure_utc
from controller.store import sealed
from controller.store import segments as seg
from controller.store.limits import TrafficLimits, WindowLimits
from controller.store.records import LabelChange, LabelTally
from controller.store.rows import fetch_block, in_force, labeled_rows, one_of
from controller.store.tables import UTCDateTime, labels, predictions, segments

_JOIN_ON = sa.and_(predictions.c.model == labels.c.model, predictions.c.prediction_id == labels.c.prediction_id)

# ---------------------------------------------------------------------------------------------------- windows


def arrival_floor(conn: sa.Connection, model: str, seq: int, mid: int | None = None) -> datetime | None:
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


def _window_where(conn: sa.Connection, model: str, mid: int | None,
                  limits: WindowLimits) -> list[sa.ColumnElement[bool]]:
    floor = arrival_floor(conn, model, limits.after_seq, mid) if limits.after_seq is not None else None
    return limits.where(model, floor)


def window_part(conn: sa.Connection, model: str, mid: int | None, limits: WindowLimits) -> seg.Part:
    """The window's rows in the row tables (the newest ``max_rows`` of them), in seq order, as a Part."""
    query = labeled_rows(conn, mid, _window_where(conn, model, mid, limits), order="seq",
                         descending=limits.max_rows is not None, limit=limits.max_rows)
    block = fetch_block(conn, query, sealed.payload_source(conn, model, mid))
    if limits.max_rows is not None:
        block = seg.take_block(block, np.arange(len(block))[::-1])
    return seg.Part.of(seg.encode(block))


def window_count(conn: sa.Connection, model: str, mid: int | None, limits: WindowLimits) -> tuple[int, int | None]:
    """(rows, newest seq) of the window in the row tables."""
    sub = labeled_rows(conn, mid, _window_where(conn, model, mid, limits), shape="seq").subquery()
    count, newest = conn.execute(sa.select(sa.func.count(), sa.func.max(sub.c.seq))).one()
    return int(count), (int(newest) if newest is not None else None)


def tail_start(conn: sa.Connection, model: str, as_of: datetime, rows: int) -> datetime | None:
    """:meth:`EventStore.tail_start` while nothing of the model is sealed."""
    query = (
        sa.select(labels.c.arrived_at)
        .select_from(labels.join(predictions, _JOIN_ON))
        .where(in_force(model, as_of))
        # Walks the (model, arrived_at) index backwards from as_of and stops after `rows` matches.
        .order_by(labels.c.arrived_at.desc()).offset(rows - 1).limit(1)
    )
    return conn.execute(query).scalar_one_or_none()


# ---------------------------------------------------------------------------------------------------- traffic


def traffic_features(conn: sa.Connection, model: str, limits: TrafficLimits, max_rows: int | None) -> list[Any]:
    """(features, event_time) rows of the traffic in the row tables (the newest ``max_rows``), oldest first."""
    query = (sa.select(predictions.c.features, predictions.c.event_time).where(*limits.where(model))
             .order_by(predictions.c.event_time.desc()))
    if max_rows is not None:
        query = query.limit(max_rows)
    rows = conn.execute(query).all()
    rows.reverse()
    return rows


def traffic_count(conn: sa.Connection, model: str, limits: TrafficLimits) -> tuple[int, datetime | None]:
    """(rows, newest event time) of the traffic in the row tables."""
    query = sa.select(sa.func.count(), sa.func.max(predictions.c.event_time)).where(*limits.where(model))
    count, newest = conn.execute(query).one()
    if isinstance(newest, str):  # SQLite hands an aggregate back untyped
        newest = datetime.fromisoformat(newest)
    return int(count), (ensure_utc(newest) if newest is not None else None)


# ---------------------------------------------------------------------------------------------------- stats


def label_tally(conn: sa.Connection, model: str, mid: int | None, as_of: datetime, delay_sample: int) -> LabelTally:
    """label_stats' numbers over the row tables: their predictions, every label in force, and the labels' sources
    and delays (a label of a sealed prediction with that prediction's, from its segment)."""
    traffic = TrafficLimits(as_of)
    known = traffic.known()
    tally = LabelTally(
        by_source=dict(conn.execute(
            sa.select(predictions.c.source, sa.func.count()).select_from(predictions)
            .where(predictions.c.model == model, known.clause(predictions)).group_by(predictions.c.source)
        ).all()),
        labeled_by_source=dict(conn.execute(
            sa.select(predictions.c.source, sa.func.count()).select_from(labels.join(predictions, _JOIN_ON))
            .where(in_force(model, as_of), known.clause(predictions)).group_by(predictions.c.source)
        ).all()),
        all_labels=int(conn.execute(sa.select(sa.func.count()).select_from(labels)
                                    .where(in_force(model, as_of))).scalar_one()),
    )
    delays = conn.execute(
        sa.select(labels.c.seq, labels.c.arrived_at, predictions.c.event_time)
        .select_from(labels.join(predictions, _JOIN_ON))
        .where(in_force(model, as_of), *traffic.clauses())
        .order_by(labels.c.seq.desc())
        .limit(delay_sample)
    ).all()
    tally.delay_seqs.append(np.array([r.seq for r in delays], dtype=np.int64))
    tally.delays.append(np.array([(r.arrived_at - r.event_time).total_seconds() for r in delays], dtype=float))
    if mid is not None:
        block = fetch_block(conn, labeled_rows(conn, mid, [in_force(model, as_of)], sealed_only=True),
                            sealed.payload_source(conn, model, mid))
        tally.add_labeled(block.seq, block.column("source"), (block.arrived_at - block.event_time) / 1e6,
                          known.mask(block), traffic.mask(block))
    return tally


# ---------------------------------------------------------------------------------------------------- lookups


def stored_predictions(conn: sa.Connection, model: str, ids: list[str], *, content: bool = True) -> dict[str, dict]:
    """The model's predictions in the row tables among ``ids``: id -> the stored row (``content=False``: the id
    only)."""
    columns = [predictions.c.prediction_id]
    if content:
        columns += [predictions.c.features, predictions.c.prediction, predictions.c.scores,
                    predictions.c.model_version, predictions.c.event_time]
    query = sa.select(*columns).where(predictions.c.model == model, one_of(conn, predictions.c.prediction_id, ids))
    return {row.prediction_id: dict(row._mapping) for row in conn.execute(query)}


def prediction(conn: sa.Connection, model: str, prediction_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(predictions).where(predictions.c.model == model,
                                                    predictions.c.prediction_id == prediction_id)).first()
    return dict(row._mapping) if row is not None else None


def label_history(conn: sa.Connection, model: str, prediction_id: str) -> list[tuple[int, LabelChange]]:
    """(seq, change) of the prediction's label rows in the row tables."""
    query = (
        sa.select(labels.c.seq, labels.c.value, labels.c.arrived_at, labels.c.superseded_at)
        .where(labels.c.model == model, labels.c.prediction_id == prediction_id)
        .order_by(labels.c.seq)
    )
    return [(r.seq, LabelChange(r.value, r.arrived_at, r.superseded_at)) for r in conn.execute(query)]


def count_predictions(conn: sa.Connection, model: str) -> int:
    return int(conn.execute(
        sa.select(sa.func.count()).select_from(predictions).where(predictions.c.model == model)).scalar_one())
