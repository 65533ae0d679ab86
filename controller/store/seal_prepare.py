"""Preparing a seal from a read snapshot: which of a model's oldest labeled rows the next segment takes, the segment
encoded (Arrow IPC, zstd) with its metadata, and what its commit must move. No write lock is held and nothing is
written: :func:`controller.store.seal_commit.commit_prepared` checks the prepared block is still exact and moves it in a
short write transaction. Runs in the sealing helper process (:mod:`controller.store.seal_process`) or in the thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from controller.store import segments as seg
from controller.store.rows import fetch_block, from_us, labeled_rows
from controller.store.sealed import model_id, payload_source
from controller.store.tables import labels


@dataclass(frozen=True)
class SealJob:
    """What to prepare: the model's oldest ``rows`` labeled rows, or fewer (at least ``min_rows``) when that is all
    there is beyond the ``keep`` newest."""

    model: str
    rows: int
    keep: int = 0
    min_rows: int | None = None


@dataclass(frozen=True)
class PreparedSeal:
    """A segment encoded from a snapshot, and what its commit moves: the label rows ``seqs`` (``in_force``: not
    superseded in the snapshot, the state the commit checks), the predictions ``moved`` (owned by this block: they
    leave the ``predictions`` table), ``already`` (ids sealed before, with a later label row in this block) and
    ``current`` (id -> seq of its label in force, for the ``sealed_ids`` rows); ``range_rows`` / ``range_live``
    count the model's label rows in the block's seq range, and those in force. Plain values only: it is pickled back
    from the helper process."""

    model: str
    model_id: int | None
    data: bytes
    metadata: dict[str, Any]
    seqs: np.ndarray
    in_force: np.ndarray
    moved: list[str]
    already: list[str]
    current: dict[str, int]
    range_rows: int  # the model's label rows with a seq in the block's range (the block's, and labels still without
    range_live: int  # a prediction), and how many of them were in force: what the commit compares

    @property
    def rows(self) -> int:
        return len(self.seqs)


def hot_matched_count(conn: sa.Connection, model: str, mid: int | None, limit: int | None = None) -> int:
    """Label rows of the model in the row tables that have a prediction (what sealing can move); counting stops at
    ``limit``."""
    query = labeled_rows(conn, mid, [labels.c.model == model], shape="seq", limit=limit)
    return int(conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one())


def seal_size(conn: sa.Connection, model: str, mid: int | None, rows: int, *, keep: int = 0,
              min_rows: int | None = None) -> int:
    """How many rows the next segment would take (0: not enough to seal); see :class:`SealJob`."""
    available = hot_matched_count(conn, model, mid, limit=rows + keep) - keep
    size = min(rows, available)
    if size < 1 or (size < rows and (min_rows is None or size < min_rows)):
        return 0
    return size


def prepare(conn: sa.Connection, job: SealJob) -> PreparedSeal | None:
    """The next segment of ``job.model`` from the snapshot of ``conn`` (a read transaction), or None when there is
    not enough to seal."""
    model = job.model
    mid = model_id(conn, model)
    size = seal_size(conn, model, mid, job.rows, keep=job.keep, min_rows=job.min_rows)
    if size == 0:
        return None
    # The oldest rows in seq order. Arrival never decreases along a model's seq, so (arrived_at, seq) is seq order,
    # and it is the order of the (model, arrived_at) index: no sort of the model's whole table.
    query = labeled_rows(conn, mid, [labels.c.model == model], order="arrival", limit=size)
    block = fetch_block(conn, query, payload_source(conn, model, mid))
    if len(block) < size:
        return None
    metadata = segment_metadata(block)
    return prepared_of(model, mid, block, metadata, range_counts(conn, model, metadata))


def range_counts(conn: sa.Connection, model: str, metadata: dict[str, Any]) -> tuple[int, int]:
    """The model's label rows with a seq in the block's range (``metadata``: its :func:`segment_metadata`), and how
    many of them are in force. Read along the (model, arrived_at) index, whose arrival range is the seq range's
    within a model (arrival never decreases along seq): only the model's rows of that range are visited, however
    many other models interleave, so the commit's check costs a few milliseconds. (With a bare ``model =`` term
    SQLite scanned the model's whole row tables: 20 ms at 100,000 rows, measured.)"""
    live = sa.func.sum(sa.case((labels.c.superseded_at.is_(None), 1), else_=0))
    found, in_force = conn.execute(sa.select(sa.func.count(), live).where(
        labels.c.model == model, labels.c.arrived_at >= metadata["first_arrival"],
        labels.c.arrived_at <= metadata["last_arrival"], labels.c.seq >= metadata["first_seq"],
        labels.c.seq <= metadata["last_seq"])).one()
    return int(found), int(in_force or 0)


def prepared_of(model: str, mid: int | None, block: seg.RowBlock, metadata: dict[str, Any],
                counts: tuple[int, int]) -> PreparedSeal:
    """A block encoded, with what its commit moves (``metadata``: its :func:`segment_metadata`; ``counts``: its
    :func:`range_counts`)."""
    data = seg.to_bytes(seg.encode(block))
    in_force = block.superseded_at == seg.SUPERSEDED_NEVER
    current = {pid: int(s) for pid, s, live in zip(block.prediction_id, block.seq, in_force, strict=True) if live}
    moved = [pid for pid, own in zip(block.prediction_id, block.owner, strict=True) if own]
    moved_set = set(moved)
    already = list(dict.fromkeys(pid for pid in block.prediction_id if pid not in moved_set))
    return PreparedSeal(model=model, model_id=mid, data=data, metadata=metadata,
                        seqs=np.asarray(block.seq, dtype=np.int64), in_force=in_force, moved=moved,
                        already=already, current=current, range_rows=counts[0], range_live=counts[1])


def segment_metadata(block: seg.RowBlock) -> dict[str, Any]:
    """The ``segments`` row's metadata of a block (seq and arrival range, counts, the owned predictions' event and
    receipt times): what :func:`controller.store.sealed.metas` selects segments by."""
    owner = block.owner
    owned_events = block.event_time[owner]
    return {
        "first_seq": int(block.seq.min()), "last_seq": int(block.seq.max()), "row_count": len(block),
        "owner_count": int(owner.sum()), "first_arrival": from_us(int(block.arrived_at.min())),
        "last_arrival": from_us(int(block.arrived_at.max())),
        "min_event_time": from_us(int(owned_events.min())) if owned_events.size else None,
        "max_event_time": from_us(int(owned_events.max())) if owned_events.size else None,
        "max_received_at": from_us(int(block.received_at[owner].max())) if owned_events.size else None,
    }
