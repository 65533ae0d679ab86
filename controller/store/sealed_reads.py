"""The segments' half of each read of :class:`~controller.store.events.EventStore`: the model's sealed rows,
opened segment by segment (only the segments whose metadata can hold rows of the read, only the columns it needs)
and filtered with numpy by the same limits the row tables' half states in SQL (:mod:`controller.store.limits`).

Each function runs in the caller's read transaction and is called only for a model with something sealed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from controller.store import sealed
from controller.store import segments as seg
from controller.store.limits import TrafficLimits, WindowLimits
from controller.store.records import LabelChange, LabelTally
from controller.store.rows import from_us, to_us
from controller.store.tables import segments

# ---------------------------------------------------------------------------------------------------- windows


def _window_metas(conn: sa.Connection, model: str, limits: WindowLimits) -> list[sealed.SegmentMeta]:
    return sealed.metas(conn, model, after_seq=limits.after_seq, through_seq=limits.through_seq, since=limits.since,
                        as_of=limits.as_of)


def window_parts(conn: sa.Connection, model: str, limits: WindowLimits, logical: Sequence[str] | None,
                 hot: seg.Part) -> list[seg.Part]:
    """The window's rows as parts in seq order: each sealed segment's (filtered), then ``hot`` (the row tables' part);
    with ``max_rows``, the newest that many of them all, opening segments newest first only while they can hold
    some."""
    found = _window_metas(conn, model, limits)
    cold: list[seg.Part] = []
    collected = 0
    floor_seq: int | None = None  # with max_rows: the smallest seq that can still be among the newest rows
    if limits.max_rows is not None:
        found = sorted(found, key=lambda m: m.last_seq)
        if len(hot) >= limits.max_rows and len(hot):
            floor_seq = int(hot.ints("seq")[0])
    for meta, part, superseded in sealed.parts(conn, model, found, logical, newest_first=limits.max_rows is not None):
        if floor_seq is not None and meta.last_seq < floor_seq:
            break
        keep = np.flatnonzero(limits.mask(part, superseded))
        if keep.size:
            cold.append(part.take(keep))
            collected += keep.size
        if limits.max_rows is not None and collected + len(hot) >= limits.max_rows:
            seqs = np.concatenate([p.ints("seq") for p in [*cold, hot]])
            floor_seq = int(np.sort(seqs)[-limits.max_rows]) if limits.max_rows else None
    if limits.max_rows is None:
        return [*cold, hot]
    return _newest([*cold[::-1], hot], limits.max_rows)


def _newest(parts: list[seg.Part], max_rows: int) -> list[seg.Part]:
    """The parts cut to the ``max_rows`` largest seqs among them."""
    seqs = np.concatenate([p.ints("seq") for p in parts]) if parts else np.empty(0, np.int64)
    if seqs.size <= max_rows:
        return parts
    if max_rows == 0:
        return [p.take(np.empty(0, dtype=np.int64)) for p in parts[-1:]]
    floor = np.sort(seqs)[-max_rows]
    return [p.take(np.flatnonzero(p.ints("seq") >= floor)) for p in parts]


def window_count(conn: sa.Connection, model: str, limits: WindowLimits) -> tuple[int, int | None]:
    """(rows, newest seq) of the window in the segments."""
    count, newest = 0, None
    for _, part, superseded in sealed.parts(conn, model, _window_metas(conn, model, limits), ["arrived_at"]):
        seqs = part.ints("seq")[limits.mask(part, superseded)]
        if seqs.size:
            count += int(seqs.size)
            newest = max(newest or 0, int(seqs.max()))
    return count, newest


# ---------------------------------------------------------------------------------------------------- traffic

_TRAFFIC = ["event_time", "received_at", "source", "owner"]


def _traffic(conn: sa.Connection, model: str, limits: TrafficLimits, logical: list[str], *,
             by_event_time: bool = False) -> Iterator[tuple[sealed.SegmentMeta, seg.Part]]:
    """(meta, part) of each segment with traffic of the read (oldest first; ``by_event_time``: newest event times
    first)."""
    found = sealed.metas(conn, model, owners=True, event_after=limits.event_after)
    if by_event_time:
        found = sorted(found, key=lambda m: m.max_event_time)  # type: ignore[arg-type, return-value]
    for meta, part, _ in sealed.parts(conn, model, found, logical, newest_first=by_event_time):
        yield meta, part


def _traffic_mask(part: seg.Part, limits: TrafficLimits) -> np.ndarray:
    """A segment's rows that are traffic of the read: the rows that own their prediction, within the limits."""
    return part.table.column("owner").to_numpy() & limits.mask(part)


def traffic_parts(conn: sa.Connection, model: str, limits: TrafficLimits,
                  max_rows: int | None) -> list[tuple[seg.Part, np.ndarray]]:
    """(features part, event times) of the traffic in the segments; with ``max_rows``, segments are opened newest
    event times first and only while they can hold some of the newest ``max_rows`` (the caller cuts)."""
    out: list[tuple[seg.Part, np.ndarray]] = []
    newest: list[np.ndarray] = []
    for meta, part in _traffic(conn, model, limits, [*_TRAFFIC, "features"], by_event_time=True):
        if max_rows is not None and newest:
            times = np.concatenate(newest)
            if times.size >= max_rows and (max_rows == 0 or to_us(meta.max_event_time) <
                                           np.sort(times)[-max_rows]):  # type: ignore[arg-type]
                break
        keep = np.flatnonzero(_traffic_mask(part, limits))
        if keep.size:
            picked = part.take(keep)
            out.append((picked, picked.ints("event_time")))
            newest.append(out[-1][1])
    return out


def traffic_count(conn: sa.Connection, model: str, limits: TrafficLimits) -> tuple[int, datetime | None]:
    """(rows, newest event time) of the traffic in the segments."""
    count, newest = 0, None
    for _, part in _traffic(conn, model, limits, _TRAFFIC):
        mask = _traffic_mask(part, limits)
        if mask.any():
            count += int(mask.sum())
            latest = from_us(int(part.ints("event_time")[mask].max()))
            newest = latest if newest is None or latest > newest else newest
    return count, newest


# ---------------------------------------------------------------------------------------------------- stats


def add_label_tally(conn: sa.Connection, model: str, as_of: datetime, tally: LabelTally) -> None:
    """Add every segment's predictions (received by ``as_of``, even when their label arrived later) and labels in
    force to ``tally``."""
    traffic = TrafficLimits(as_of)
    in_force = WindowLimits(as_of)
    for _, part, superseded in sealed.parts(conn, model, sealed.metas(conn, model),
                                            ["arrived_at", "received_at", "event_time", "source", "owner"]):
        source = part.objects("source")
        known = traffic.known().mask(part)
        tally.count(tally.by_source, source[part.table.column("owner").to_numpy() & known])
        live = in_force.mask(part, superseded)
        tally.all_labels += int(live.sum())
        delays = (part.ints("arrived_at")[live] - part.ints("event_time")[live]) / 1e6
        tally.add_labeled(part.ints("seq")[live], source[live], delays, known[live], traffic.mask(part)[live])


# ---------------------------------------------------------------------------------------------------- lookups


def label_history(conn: sa.Connection, model: str, mid: int, prediction_id: str) -> list[tuple[int, LabelChange]]:
    """(seq, change) of the prediction's sealed label rows."""
    where = sealed.lookup(conn, mid, [prediction_id]).get(prediction_id)
    if where is None:
        return []
    changes = []
    found = [m for m in sealed.metas(conn, model) if where.segment_id <= m.segment_id <= where.last_segment_id]
    for _, part, superseded in sealed.parts(conn, model, found, ["prediction_id", "value", "arrived_at"]):
        rows = np.flatnonzero(part.objects("prediction_id") == prediction_id)
        values = part.value_column("value").objects()
        arrived, seqs = part.ints("arrived_at"), part.ints("seq")
        for i in rows:
            changes.append((int(seqs[i]), LabelChange(
                values[i], from_us(int(arrived[i])),
                None if superseded[i] == seg.SUPERSEDED_NEVER else from_us(int(superseded[i])))))
    return changes


def prediction(conn: sa.Connection, mid: int, prediction_id: str) -> dict[str, Any] | None:
    """A sealed prediction as the row table's mapping (without ``model``), or None."""
    found = sealed.lookup(conn, mid, [prediction_id])
    return sealed.predictions_of(conn, found)[prediction_id] if found else None


def count_predictions(conn: sa.Connection, model: str) -> int:
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(segments.c.owner_count), 0))
                            .where(segments.c.model == model)).scalar_one())
