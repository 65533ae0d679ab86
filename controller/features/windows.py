"""Per-entity rolling aggregates over event-time windows (the only module of this room that imports River).

An aggregate over a window ``w`` at watermark ``W`` covers the events with ``W - w < t <= W``. Events are kept in
event-time order (an out-of-order event is inserted at its place); expiring them is driven by the watermark, not by
the entity's own newest event, so a quiet entity's counts still fall to zero. Sums and means are River's
``stats.Sum`` / ``stats.Mean`` (``update`` / ``revert``, as ``river.utils.TimeRolling`` drives them); min, max and
distinct keep what River's revertible statistics cannot.

>>> agg = RollingAggregate("sum", 60.0)
>>> agg.add(0.0, 2.0); agg.add(30.0, 3.0); agg.add(61.0, 5.0)
>>> agg.expire(61.0 - 60.0)   # the watermark moved to 61: the event at t=0 left the window
>>> agg.value(), agg.count()
(8.0, 2)
"""

from __future__ import annotations

import bisect
from typing import Any

from river import stats


class RollingAggregate:
    """One aggregate (count, sum, mean, min, max, distinct) of one entity over one event-time window."""

    __slots__ = ("_distinct", "_extreme", "_stat", "agg", "times", "values", "window")

    def __init__(self, agg: str, window: float) -> None:
        self.agg = agg
        self.window = window
        self._reset()

    def _reset(self) -> None:
        self.times: list[float] = []
        self.values: list[Any] = []
        self._stat = stats.Sum() if self.agg == "sum" else stats.Mean() if self.agg == "mean" else None
        self._distinct: dict[Any, int] | None = {} if self.agg == "distinct" else None
        self._extreme: float | None = None

    def add(self, t: float, value: Any) -> None:
        if self.times and t < self.times[-1]:
            i = bisect.bisect_right(self.times, t)
            self.times.insert(i, t)
            self.values.insert(i, value)
        else:
            self.times.append(t)
            self.values.append(value)
        if self._stat is not None:
            self._stat.update(value)
        elif self._distinct is not None:
            self._distinct[value] = self._distinct.get(value, 0) + 1
        elif self.agg == "min":
            self._extreme = value if self._extreme is None or value < self._extreme else self._extreme
        elif self.agg == "max":
            self._extreme = value if self._extreme is None or value > self._extreme else self._extreme

    def expire(self, horizon: float) -> None:
        """Drop the events with ``t <= horizon`` (the watermark minus the window)."""
        times = self.times
        if not times or times[0] > horizon:
            return
        cut = bisect.bisect_right(times, horizon)
        gone = self.values[:cut]
        del times[:cut]
        del self.values[:cut]
        if self._stat is not None:
            for value in gone:
                self._stat.revert(value)
            if not times:  # no rounding residue in an empty window
                self._stat = stats.Sum() if self.agg == "sum" else stats.Mean()
        elif self._distinct is not None:
            for value in gone:
                left = self._distinct[value] - 1
                if left:
                    self._distinct[value] = left
                else:
                    del self._distinct[value]
        elif self._extreme is not None and self._extreme in gone:
            self._extreme = (min(self.values) if self.agg == "min" else max(self.values)) if self.values else None

    def count(self) -> int:
        return len(self.times)

    def value(self) -> Any:
        """The aggregate now; 0 for an empty count/sum/distinct, None for an empty mean/min/max."""
        if self.agg == "count":
            return len(self.times)
        if self.agg == "distinct":
            return len(self._distinct or {})
        if self.agg == "sum":
            return float(self._stat.get()) if self.times else 0.0
        if not self.times:
            return None
        if self.agg == "mean":
            return float(self._stat.get())
        return float(self._extreme)
