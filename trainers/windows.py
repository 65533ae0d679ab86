"""Which labeled rows a stateless retrain fits on, as typed config plus a pure translation.

```yaml
window: {kind: all}
window: {kind: last_rows, rows: 50000}
window: {kind: last_duration, duration: 7d}      # also 12h, 30m, 90s, 2w, 1d12h or ISO "P7D"
window: {kind: since_drift, fallback: {kind: last_duration, duration: 30d}}
```
`window_bounds(config, as_of, drift_at)` gives the `(since, max_rows)` the controller passes to
`EventStore.labeled_window`: `since` bounds the label arrival time from below, `max_rows`
keeps the most recent rows by arrival. `as_of` (the maturity cut) is the upper bound.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: str | timedelta | float) -> timedelta:
    """'7d', '12h', '1d12h', '30m', '90s', '2w' (or a timedelta / seconds) -> timedelta."""
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        duration = timedelta(seconds=value)
    else:
        text = str(value).strip().lower()
        match = _DURATION.match(text)
        if text.startswith("p"):
            duration = _iso_duration(value, text.upper())
        elif not text or not match:
            raise ValueError(_bad_duration(value))
        else:
            duration = timedelta(
                **{unit: int(n) for unit, n in zip(_UNITS.values(), match.groups(), strict=True) if n}
            )
    if duration <= timedelta(0):
        raise ValueError(f"duration {value!r} must be positive.")
    return duration


def _bad_duration(value: object) -> str:
    return (
        f"duration {value!r} is not understood; write a number with a unit (w, d, h, m, s), "
        "e.g. '7d', '12h', '1d12h', or ISO 8601 such as 'P7D'."
    )


def _iso_duration(value: object, text: str) -> timedelta:
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(timedelta).validate_python(text)
    except ValidationError:
        raise ValueError(_bad_duration(value)) from None


class _Window(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllRows(_Window):
    """Every matured label in the store."""

    kind: Literal["all"] = "all"


class LastRows(_Window):
    """The most recent `rows` labels by arrival."""

    kind: Literal["last_rows"] = "last_rows"
    rows: PositiveInt


class LastDuration(_Window):
    """Labels that arrived within `duration` before the maturity cut."""

    kind: Literal["last_duration"] = "last_duration"
    duration: timedelta

    @field_validator("duration", mode="before")
    @classmethod
    def _parse(cls, value: object) -> timedelta:
        return parse_duration(value)  # type: ignore[arg-type]


FallbackWindow = Annotated[AllRows | LastRows | LastDuration, Field(discriminator="kind")]


class SinceDrift(_Window):
    """Labels that arrived after the last detected drift; `fallback` when none was detected."""

    kind: Literal["since_drift"] = "since_drift"
    fallback: FallbackWindow = AllRows()


WindowConfig = Annotated[
    AllRows | LastRows | LastDuration | SinceDrift, Field(discriminator="kind")
]


class WindowBounds(NamedTuple):
    since: datetime | None
    max_rows: int | None


def window_bounds(
    config: AllRows | LastRows | LastDuration | SinceDrift,
    as_of: datetime,
    drift_at: datetime | None = None,
) -> WindowBounds:
    """Translate a window config into store query bounds (pure: no clock, no store)."""
    if as_of.tzinfo is None:
        raise ValueError(
            f"as_of={as_of!r} is naive; pass a timezone-aware UTC datetime (the maturity cut)."
        )
    if isinstance(config, AllRows):
        return WindowBounds(None, None)
    if isinstance(config, LastRows):
        return WindowBounds(None, config.rows)
    if isinstance(config, LastDuration):
        return WindowBounds(as_of - config.duration, None)
    if drift_at is None or drift_at > as_of:
        # A drift "detected" after the cut is unknown at as_of (backtests replay the past).
        return window_bounds(config.fallback, as_of)
    if drift_at.tzinfo is None:
        raise ValueError(f"drift_at={drift_at!r} is naive; pass a timezone-aware UTC datetime.")
    return WindowBounds(drift_at, None)
