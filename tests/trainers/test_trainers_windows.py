"""Stateless window configs and their translation into store query bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from trainers.stateless import StatelessConfig
from trainers.windows import (
    AllRows,
    LastDuration,
    LastRows,
    SinceDrift,
    WindowBounds,
    WindowConfig,
    parse_duration,
    window_bounds,
)

AS_OF = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
parse = TypeAdapter(WindowConfig).validate_python


@pytest.mark.parametrize(
    "text, expected",
    [("7d", timedelta(days=7)), ("12h", timedelta(hours=12)), ("1d12h", timedelta(hours=36)),
     ("30m", timedelta(minutes=30)), ("90s", timedelta(seconds=90)), ("2w", timedelta(weeks=2)),
     ("P7D", timedelta(days=7)), ("PT6H", timedelta(hours=6))],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7 days", "d7", "", "0d", "-1d"])
def test_bad_durations_teach_the_format(text):
    with pytest.raises(ValueError, match=r"duration|must be positive"):
        parse_duration(text)


def test_all_rows():
    assert window_bounds(parse({"kind": "all"}), AS_OF) == WindowBounds(None, None)


def test_last_rows():
    assert window_bounds(parse({"kind": "last_rows", "rows": 5000}), AS_OF) == (None, 5000)


def test_last_duration_counts_back_from_the_maturity_cut():
    bounds = window_bounds(parse({"kind": "last_duration", "duration": "7d"}), AS_OF)
    assert bounds.since == datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    assert bounds.max_rows is None


def test_since_drift_starts_at_the_drift_point():
    drift = datetime(2026, 3, 8, tzinfo=UTC)
    assert window_bounds(parse({"kind": "since_drift"}), AS_OF, drift) == (drift, None)


def test_since_drift_without_a_drift_uses_its_fallback():
    config = parse({"kind": "since_drift", "fallback": {"kind": "last_rows", "rows": 100}})
    assert window_bounds(config, AS_OF) == (None, 100)
    assert window_bounds(SinceDrift(), AS_OF) == (None, None)  # default fallback: all


def test_a_drift_after_the_cut_is_not_known_yet():
    later = AS_OF + timedelta(hours=1)
    assert window_bounds(SinceDrift(fallback=LastRows(rows=9)), AS_OF, later) == (None, 9)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="naive"):
        window_bounds(AllRows(), datetime(2026, 3, 10))


@pytest.mark.parametrize(
    "section, fragment",
    [
        ({"kind": "last_week"}, "'all', 'last_rows', 'last_duration', 'since_drift'"),
        ({"kind": "last_rows", "rows": 0}, "greater than 0"),
        ({"kind": "last_rows"}, "Field required"),
        ({"kind": "last_duration", "duration": "7 days"}, "write a number with a unit"),
        ({"kind": "all", "rows": 3}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_valid_choices(section, fragment):
    with pytest.raises(ValidationError) as err:
        parse(section)
    assert fragment in str(err.value)


def test_stateless_config_embeds_the_window():
    config = StatelessConfig.model_validate({"window": {"kind": "last_duration", "duration": "12h"}})
    assert isinstance(config.window, LastDuration)
    assert config.window.duration == timedelta(hours=12)
    assert StatelessConfig().window == AllRows()
