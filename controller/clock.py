"""Time is data: everything that needs "now" gets a Clock injected.

Only :class:`SystemClock` reads the wall clock. Tests and backtests drive :class:`ManualClock`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The one place in driftpilot that reads the wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; for tests and backtests.

    >>> c = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    >>> c.advance(minutes=30).isoformat()
    '2026-01-01T00:30:00+00:00'
    """

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)

    def now(self) -> datetime:
        return self._now

    def advance(self, **delta: float) -> datetime:
        self._now = self._now + timedelta(**delta)
        return self._now

    def set(self, when: datetime) -> None:
        when = ensure_utc(when)
        if when < self._now:
            raise ValueError(f"ManualClock cannot go back in time: {when.isoformat()} < {self._now.isoformat()}")
        self._now = when


def ensure_utc(when: datetime) -> datetime:
    """Return ``when`` as an aware UTC datetime; naive datetimes are taken to be UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
