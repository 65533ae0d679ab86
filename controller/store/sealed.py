"""The sealed tier's lookups: which segments a read needs and opening them (with later overwrites applied), the
ids and overwrites that point into them, the locks and keys every writer of the tier takes. Moving rows into
segments is :mod:`controller.store.sealing`.

Invariants (docs/architecture.md, "The event store at scale"):

* a prediction lives in exactly one place: the ``predictions`` table, or the segment named by its ``sealed_ids`` row
  (on the row flagged ``owner``); later label rows of the id, sealed or not, carry or fetch a copy;
* a label row lives in exactly one place: the ``labels`` table or one segment; a model's sealed rows are its oldest
  labeled ones, so for any id its sealed rows come before its rows in the table;
* a sealed label overwritten later gets its ``superseded_at`` from ``sealed_supersessions``; segments never change
  except when retention removes rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from controller.store import segments as seg
from controller.store.db import advisory_key
from controller.store.rows import one_of, to_us
from controller.store.tables import sealed_ids, sealed_supersessions, segments, store_models


@dataclass(frozen=True)
class SegmentMeta:
    segment_id: int
    first_seq: int
    last_seq: int
    row_count: int
    owner_count: int
    first_arrival: datetime
    last_arrival: datetime
    min_event_time: datetime | None
    max_event_time: datetime | None
    max_received_at: datetime | None


_META = [segments.c.segment_id, segments.c.first_seq, segments.c.last_seq, segments.c.row_count,
         segments.c.owner_count, segments.c.first_arrival, segments.c.last_arrival, segments.c.min_event_time,
         segments.c.max_event_time, segments.c.max_received_at]


def model_id(conn: sa.Connection, model: str) -> int | None:
    """The model's integer key, or None when nothing of it was ever sealed (then every read is the row tables')."""
    return conn.execute(sa.select(store_models.c.model_id).where(store_models.c.model == model)).scalar()


def ensure_model_id(conn: sa.Connection, model: str) -> int:
    found = model_id(conn, model)
    if found is not None:
        return found
    conn.execute(store_models.insert().values(model=model))
    return model_id(conn, model)  # type: ignore[return-value]


def seal_lock(conn: sa.Connection, model: str, *, shared: bool = False) -> None:
    """PostgreSQL: prediction writers hold this shared, sealing and pruning exclusively, so an id cannot move between
    the row tables and a segment while a writer decides whether it is stored (SQLite serializes writers anyway)."""
    if conn.dialect.name != "postgresql":
        return
    function = sa.func.pg_advisory_xact_lock_shared if shared else sa.func.pg_advisory_xact_lock
    conn.execute(sa.select(function(advisory_key(f"seal:{model}"))))


def metas(conn: sa.Connection, model: str, *, after_seq: int | None = None, through_seq: int | None = None,
          since: datetime | None = None, as_of: datetime | None = None, owners: bool = False,
          event_after: datetime | None = None, received_by: datetime | None = None) -> list[SegmentMeta]:
    """The model's segments that can hold rows for a read with these limits, oldest first."""
    query = sa.select(*_META).where(segments.c.model == model)
    if after_seq is not None:
        query = query.where(segments.c.last_seq > after_seq)
    if through_seq is not None:
        query = query.where(segments.c.first_seq <= through_seq)
    if since is not None:
        query = query.where(segments.c.last_arrival >= since)
    if as_of is not None and not owners:
        query = query.where(segments.c.first_arrival <= as_of)
    if owners:
        query = query.where(segments.c.owner_count > 0)
    if event_after is not None:
        query = query.where(segments.c.max_event_time > event_after)
    return [SegmentMeta(*row) for row in conn.execute(query.order_by(segments.c.first_seq))]


def load(conn: sa.Connection, segment_id: int, logical: Sequence[str] | None = None) -> seg.Part:
    """One segment as a Part; ``logical`` names the columns to decompress (all when None)."""
    data = conn.execute(sa.select(segments.c.data).where(segments.c.segment_id == segment_id)).scalar_one()
    if logical is None:
        return seg.Part.of(seg.from_bytes(data))
    layout = seg.layout_of(seg.from_bytes(data, columns=["seq"]))
    return seg.Part(seg.from_bytes(data, columns=seg.physical_columns(layout, logical)), layout)


def supersessions(conn: sa.Connection, model: str, first_seq: int, last_seq: int) -> tuple[np.ndarray, np.ndarray]:
    """(seqs, superseded_at in microseconds) of the model's sealed labels overwritten later, in a seq range."""
    rows = conn.execute(
        sa.select(sealed_supersessions.c.seq, sealed_supersessions.c.superseded_at)
        .where(sealed_supersessions.c.model == model, sealed_supersessions.c.seq >= first_seq,
               sealed_supersessions.c.seq <= last_seq)
        .order_by(sealed_supersessions.c.seq)
    ).all()
    return (np.array([r.seq for r in rows], dtype=np.int64),
            np.array([to_us(r.superseded_at) for r in rows], dtype=np.int64))


def effective_superseded(part: seg.Part, overrides: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The part's superseded_at (microseconds, SUPERSEDED_NEVER when in force) with later overwrites applied."""
    superseded = part.ints("superseded_at")
    override_seqs, override_times = overrides
    if override_seqs.size:
        seqs = part.ints("seq")
        at = np.searchsorted(override_seqs, seqs)
        at_clipped = np.minimum(at, override_seqs.size - 1)
        hit = override_seqs[at_clipped] == seqs
        if hit.any():
            superseded = superseded.copy()
            superseded[hit] = override_times[at_clipped[hit]]
    return superseded


def parts(conn: sa.Connection, model: str, found: Sequence[SegmentMeta], logical: Sequence[str] | None,
          newest_first: bool = False) -> Iterator[tuple[SegmentMeta, seg.Part, np.ndarray]]:
    """Each segment of ``found`` opened (one at a time) with its effective superseded_at."""
    if not found:
        return
    overrides = supersessions(conn, model, min(m.first_seq for m in found), max(m.last_seq for m in found))
    for meta in (reversed(found) if newest_first else found):
        columns = None if logical is None else sorted(set(logical) | {"seq", "superseded_at"})
        part = load(conn, meta.segment_id, columns)
        yield meta, part, effective_superseded(part, overrides)


# ------------------------------------------------------------------------------------------------------ ids


@dataclass(frozen=True)
class SealedId:
    segment_id: int
    last_segment_id: int
    label_seq: int | None


def lookup(conn: sa.Connection, mid: int, ids: Sequence[str]) -> dict[str, SealedId]:
    """Which of ``ids`` have their prediction in a segment."""
    if not ids:
        return {}
    query = sa.select(sealed_ids.c.prediction_id, sealed_ids.c.segment_id, sealed_ids.c.last_segment_id,
                      sealed_ids.c.label_seq).where(sealed_ids.c.model_id == mid,
                                                    one_of(conn, sealed_ids.c.prediction_id, ids, "sealed_ids"))
    return {r.prediction_id: SealedId(r.segment_id, r.last_segment_id, r.label_seq) for r in conn.execute(query)}


def predictions_of(conn: sa.Connection, found: Mapping[str, SealedId]) -> dict[str, dict[str, Any]]:
    """The stored predictions of sealed ids (each opened from the segment that owns it)."""
    by_segment: dict[int, set[str]] = {}
    for pid, where in found.items():
        by_segment.setdefault(where.segment_id, set()).add(pid)
    out: dict[str, dict[str, Any]] = {}
    for segment_id, wanted in by_segment.items():
        part = load(conn, segment_id)
        ids = part.objects("prediction_id")
        owner = part.table.column("owner").to_numpy()
        rows = np.flatnonzero(owner & np.isin(ids, list(wanted)))
        for record in seg.prediction_records(part.take(rows)):
            out[record["prediction_id"]] = record
    return out


def current_values(conn: sa.Connection, model: str, found: Mapping[str, SealedId]) -> dict[str, Any]:
    """The value of each sealed id's current label, for the ids whose current label is sealed."""
    wanted = {pid: where.label_seq for pid, where in found.items() if where.label_seq is not None}
    by_segment: dict[int, dict[int, str]] = {}
    for pid, label_seq in wanted.items():
        by_segment.setdefault(found[pid].last_segment_id, {})[int(label_seq)] = pid  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    for segment_id, seqs in by_segment.items():
        part = load(conn, segment_id, ["seq", "prediction_id", "value"])
        rows = np.flatnonzero(np.isin(part.ints("seq"), list(seqs)))
        picked = part.take(rows)
        for seq, pid, value in zip(picked.ints("seq"), picked.objects("prediction_id"),
                                   picked.value_column("value").objects(), strict=True):
            out[pid] = value
    missing = set(wanted) - set(out)
    if missing:
        raise RuntimeError(f"sealed labels of {sorted(missing)[:5]} not found in their segments of {model!r}")
    return out


def payload_source(conn: sa.Connection, model: str, mid: int | None) -> Any:
    """``payloads(ids)`` for :func:`controller.store.rows.fetch_block`: predictions of ids that live in segments."""
    def payloads(ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if mid is None:
            return {}
        found = lookup(conn, mid, ids)
        missing = set(ids) - set(found)
        if missing:
            raise RuntimeError(f"predictions of {sorted(missing)[:5]} of {model!r} are neither in the predictions "
                               "table nor sealed")
        return predictions_of(conn, found)

    return payloads
