"""The limits of a read, declared once and applied to both tiers of the store: as SQL conditions on the row tables
and as numpy masks on segment parts (and row blocks), so the two halves of one read cannot disagree about which rows
it returns.

A :class:`Bound` is one condition ``column <op> value`` on a column the row table and a segment both have (times
compare as datetimes in SQL and as int64 microseconds in numpy). :class:`WindowLimits` are those of a labeled-window
read (on ``labels``), :class:`TrafficLimits` those of a read of logged traffic (on ``predictions``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import sqlalchemy as sa

from controller.store.rows import in_force, to_us
from controller.store.segments import Part
from controller.store.tables import labels, predictions


class Columns(Protocol):
    """Rows in columnar form: a :class:`~controller.store.segments.Part` or a ``RowBlock``."""

    def column(self, name: str) -> np.ndarray: ...


@dataclass(frozen=True)
class Bound:
    """``column <op> value``, for SQL (:meth:`clause`) and numpy (:meth:`mask`) alike."""

    column: str
    op: Callable[[Any, Any], Any]
    value: Any

    def clause(self, table: sa.Table) -> sa.ColumnElement[bool]:
        return self.op(table.c[self.column], self.value)

    def mask(self, rows: Columns) -> np.ndarray:
        value = to_us(self.value) if isinstance(self.value, datetime) else self.value
        return self.op(rows.column(self.column), value)


def _all(bounds: list[Bound], rows: Columns, mask: np.ndarray) -> np.ndarray:
    for bound in bounds:
        mask &= bound.mask(rows)
    return mask


@dataclass(frozen=True)
class WindowLimits:
    """A labeled-window read: labels in force at ``as_of``, arrived at or after ``since``, with
    ``after_seq < seq <= through_seq``; ``max_rows`` keeps the newest (applied by the readers, by seq)."""

    as_of: datetime
    since: datetime | None = None
    after_seq: int | None = None
    through_seq: int | None = None
    max_rows: int | None = None

    def bounds(self) -> list[Bound]:
        """The limits beyond "in force at ``as_of``" (which SQL states with :func:`~controller.store.rows.in_force`
        and a segment with its effective superseded_at, see :meth:`mask`)."""
        out = []
        if self.since is not None:
            out.append(Bound("arrived_at", operator.ge, self.since))
        if self.after_seq is not None:
            out.append(Bound("seq", operator.gt, self.after_seq))
        if self.through_seq is not None:
            out.append(Bound("seq", operator.le, self.through_seq))
        return out

    def where(self, model: str, floor: datetime | None = None) -> list[sa.ColumnElement[bool]]:
        """The conditions on ``labels``. ``floor``: a lower bound of the arrival times after ``after_seq`` (implied by
        ``seq > after_seq``, see :func:`controller.store.row_reads.arrival_floor`), stated when it is tighter than
        ``since`` so the (model, arrived_at) index reads only the rows after the cursor."""
        where = [in_force(model, self.as_of), *(bound.clause(labels) for bound in self.bounds())]
        if floor is not None and (self.since is None or floor > self.since):
            where.append(labels.c.arrived_at >= floor)
        return where

    def mask(self, part: Part, superseded: np.ndarray) -> np.ndarray:
        """The rows of a segment part within the limits; ``superseded``: the part's effective superseded_at."""
        as_of = to_us(self.as_of)
        in_force_mask = (part.ints("arrived_at") <= as_of) & (superseded > as_of)  # rows.in_force, in numpy
        return _all(self.bounds(), part, in_force_mask)


@dataclass(frozen=True)
class TrafficLimits:
    """A read of logged traffic: predictions received by ``as_of`` that are not bootstrap's reference rows, with an
    event time at or after ``since`` and after ``after``."""

    as_of: datetime
    since: datetime | None = None
    after: datetime | None = None

    def known(self) -> Bound:
        """Received by ``as_of`` (reference rows included): the first of :meth:`bounds`."""
        return Bound("received_at", operator.le, self.as_of)

    def bounds(self) -> list[Bound]:
        out = [self.known(), Bound("source", operator.ne, "reference")]
        if self.since is not None:
            out.append(Bound("event_time", operator.ge, self.since))
        if self.after is not None:
            out.append(Bound("event_time", operator.gt, self.after))
        return out

    def where(self, model: str) -> list[sa.ColumnElement[bool]]:
        """The conditions on ``predictions``."""
        return [predictions.c.model == model, *self.clauses()]

    def clauses(self) -> list[sa.ColumnElement[bool]]:
        return [bound.clause(predictions) for bound in self.bounds()]

    def mask(self, rows: Columns) -> np.ndarray:
        first, *rest = self.bounds()
        return _all(rest, rows, first.mask(rows))

    @property
    def event_after(self) -> datetime | None:
        """Segments whose newest owned event time is after this can hold rows of the read (None: any)."""
        floors = [self.after] if self.after is not None else []
        if self.since is not None:
            floors.append(self.since - timedelta(microseconds=1))
        return max(floors) if floors else None
