"""``POST /v1/events``: raw events for the stream views, checked and appended to their Redis Stream(s).

An event is ``{"event_time": "2026-01-31T12:00:00Z", "data": {"user_id": "u-1", "amount": 12.5}}``. It must carry
the entity field of at least one stream view; a field a view sums, averages or bounds must be a finite number; text
must be storable. A batch is refused whole (422 with every problem) or appended whole, in order, to every distinct
stream the loaded policies consume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from controller.clock import Clock, ensure_utc
from controller.errors import Problem
from controller.features.config import StreamView
from controller.features.lookup import key_ok


class EventIngress:
    """Checks raw events against every stream view of the loaded models and appends them to their streams."""

    def __init__(self, views: Sequence[StreamView], streams: Sequence[Any], clock: Clock) -> None:
        self.views = list(views)
        self.streams = list(streams)
        self.clock = clock
        self.entities = sorted({v.entity for v in self.views})
        self.numeric = sorted({a.of for v in self.views for a in v.aggregates
                               if a.of is not None and a.agg in ("sum", "mean", "min", "max")})

    def check(self, items: Sequence[tuple[datetime | None, Mapping[str, Any]]]) -> list[Problem]:
        from controller.api.validation import check_event_time as check_time
        from controller.api.validation import check_text  # the API's own checks (imported late: no cycle)

        problems: list[Problem] = []
        for index, (event_time, data) in enumerate(items):
            problems += check_time(index, event_time)
            if not any(data.get(e) is not None for e in self.entities):
                problems.append(Problem(index, "data", f"the event feeds no stream view: it needs one of the entity "
                                                       f"fields {', '.join(self.entities)}"))
            for name, value in data.items():
                field = f"data.{name}"
                problems += check_text(index, field, name)
                if isinstance(value, (dict, list)):
                    problems.append(Problem(index, field, "expected a string, number, boolean or null, not "
                                                          f"{'an object' if isinstance(value, dict) else 'a list'}"))
                    continue
                if isinstance(value, str):
                    problems += check_text(index, field, value)
                elif isinstance(value, float) and not math.isfinite(value):
                    problems.append(Problem(index, field, f"{value} is not a finite number"))
                if name in self.entities and value is not None and not key_ok(value):
                    problems.append(Problem(index, field, "an entity key is a string or an integer of 1-128 "
                                                          "characters without NUL"))
                if name in self.numeric and value is not None and (
                        isinstance(value, bool) or not isinstance(value, (int, float))
                        or not math.isfinite(float(value))):
                    problems.append(Problem(index, field, f"stream views aggregate {name} as a number; got "
                                                          f"{value!r}"))
        return problems

    def append(self, items: Sequence[tuple[datetime | None, Mapping[str, Any]]]) -> list[str]:
        """Append checked events (no event time: the server's clock) to every stream; the first stream's ids."""
        now = self.clock.now()
        events = [(ensure_utc(t if t is not None else now).timestamp(), dict(data)) for t, data in items]
        ids: list[str] = []
        for i, stream in enumerate(self.streams):
            appended = stream.append(events)
            if i == 0:
                ids = appended
        return ids
