"""The two reads of a race tick, as plain Python lists: the rows logged since the last tick and the labels matured
since the last one. A tick of a few rows must cost a few hundred microseconds, not a columnar window (the window
reader's Arrow assembly is built for thousands of rows and costs milliseconds on one).

Rows logged in ``[start, end)`` of the store's ``received_at`` (the index ``ix_predictions_model_received``), oldest
first. Labels with ``seq > after_seq`` in force at ``as_of``, in seq (= arrival) order, joined to their predictions'
features. A label whose prediction was sealed into a segment is not in the row tables' join: then the caller falls
back to :meth:`EventStore.labeled_window`, which reads segments too (``complete`` is False).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from controller.store.fingerprint import window_fingerprint
from controller.store.frames import features_frame
from controller.store.records import LabeledWindow
from controller.store.rows import in_force, times_us
from controller.store.tables import labels, predictions, segments

_RAW = sa.types.NullType()


@dataclass
class LoggedRows:
    """Predictions logged in a time range: their ids and feature dicts, oldest first."""

    ids: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    newest_event_time: datetime | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class MaturedRows:
    """Labels matured after a cursor, in seq order, with their predictions (features, the logged prediction and
    scores, the version that served it, event and arrival times)."""

    seqs: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[Any] = field(default_factory=list)
    scores: list[dict[str, float] | None] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    event_times: list[Any] = field(default_factory=list)
    arrived: list[Any] = field(default_factory=list)
    complete: bool = True       # False: some label's prediction is sealed; read them with labeled_window instead

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def last_seq(self) -> int | None:
        return self.seqs[-1] if self.seqs else None


def matured_window(rows: MaturedRows, model: str, as_of: datetime,
                   feature_types: dict[str, str] | None, sqlite: bool, *, features: bool = True) -> LabeledWindow:
    """The rows as a :class:`~controller.store.records.LabeledWindow` (what the monitors read), built from the lists
    without the columnar reader; ``features=False`` leaves the feature columns out (the loss-based monitors do not
    read them)."""
    def times(values: list[Any]) -> pd.Series:
        us = times_us(values, sqlite) if values else np.empty(0, dtype=np.int64)
        return pd.Series(pd.to_datetime(us, unit="us", utc=True))

    n = len(rows.seqs)
    ids = pd.Series(rows.ids, dtype=object)
    labels_ = pd.Series(rows.labels, dtype=object) if n else pd.Series([], dtype=object)
    label_times = times(rows.arrived)
    have_scores = any(s is not None for s in rows.scores)
    scores = pd.DataFrame.from_records([s or {} for s in rows.scores]) if have_scores else None
    return LabeledWindow(
        model=model, as_of=as_of,
        features=features_frame(rows.records, feature_types) if features else pd.DataFrame(index=pd.RangeIndex(n)),
        labels=labels_,
        predictions=pd.Series(rows.predictions, dtype=object), scores=scores, prediction_ids=ids,
        event_times=times(rows.event_times), label_times=label_times,
        model_versions=pd.Series(rows.versions, dtype=object), label_seqs=pd.Series(rows.seqs, dtype=np.int64),
        fingerprint=window_fingerprint(ids, labels_, label_times))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def logged_rows(conn: sa.Connection, model: str, start: datetime, end: datetime) -> LoggedRows:
    query = (sa.select(predictions.c.prediction_id, sa.type_coerce(predictions.c.features, _RAW),
                       predictions.c.event_time)
             .where(predictions.c.model == model, predictions.c.received_at >= start,
                    predictions.c.received_at < end, predictions.c.source != "reference")
             .order_by(predictions.c.received_at, predictions.c.prediction_id))
    out = LoggedRows()
    for pid, features, event_time in conn.execute(query):
        out.ids.append(pid)
        out.records.append(_json(features))
        if out.newest_event_time is None or event_time > out.newest_event_time:
            out.newest_event_time = event_time
    return out


def matured_rows(conn: sa.Connection, model: str, as_of: datetime, after_seq: int | None,
                 limit: int | None) -> MaturedRows:
    where = [in_force(model, as_of)]
    if after_seq is not None:
        where.append(labels.c.seq > after_seq)
        # Arrival never decreases along a model's seq: stating the floor lets the (model, arrived_at) index start at
        # the cursor instead of walking the model's history (see row_reads.arrival_floor).
        floor = sa.select(labels.c.arrived_at).where(labels.c.seq == after_seq).scalar_subquery()
        where.append(sa.or_(floor.is_(None), labels.c.arrived_at >= floor))
    joined = labels.outerjoin(predictions, sa.and_(predictions.c.model == labels.c.model,
                                                   predictions.c.prediction_id == labels.c.prediction_id))
    query = (sa.select(labels.c.seq, labels.c.prediction_id, sa.type_coerce(labels.c.value, _RAW),
                       sa.type_coerce(predictions.c.features, _RAW), sa.type_coerce(predictions.c.prediction, _RAW),
                       sa.type_coerce(predictions.c.scores, _RAW), predictions.c.model_version,
                       sa.type_coerce(predictions.c.event_time, _RAW), sa.type_coerce(labels.c.arrived_at, _RAW))
             .select_from(joined).where(*where).order_by(labels.c.seq))
    if limit is not None:
        query = query.limit(limit)
    out = MaturedRows()
    for seq, pid, value, features, prediction, scores, version, event_time, arrived in conn.execute(query):
        if features is None:
            out.complete = False
            break
        out.seqs.append(int(seq))
        out.ids.append(pid)
        out.labels.append(_json(value))
        out.records.append(_json(features))
        out.predictions.append(_json(prediction))
        out.scores.append(_json(scores))
        out.versions.append(version)
        out.event_times.append(event_time)
        out.arrived.append(arrived)
    if out.complete:
        # Labels sealed with their predictions are not in the row tables at all: only segments know them.
        probe = sa.select(segments.c.segment_id).where(segments.c.model == model)
        if after_seq is not None:
            probe = probe.where(segments.c.last_seq > after_seq)
        out.complete = conn.execute(probe.limit(1)).first() is None
    return out
