"""controller/store/statistics.py on the real PostgreSQL server: a model written after the row tables were last
analyzed has them analyzed before its joined reads (the planner took it for one row and read its window in quadratic
time: 30 s for 20,000 rows, measured), at most once a minute per model; SQLite is left alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.clock import ManualClock
from controller.store import EventStore, LabelRecord, PredictionRecord, Sealing
from controller.store.statistics import UNDER_FACTOR, UNDER_MARGIN, PlannerStatistics, estimate_and_count
from tests.conftest import T0

ROWS = 3_000  # past the under-estimate threshold of a model estimated at one row (10 x 1 + 1,000)


def write_pairs(store: EventStore, model: str, n: int = ROWS) -> None:
    ids = [f"{model}-{i}" for i in range(n)]
    store.add_predictions(model, [PredictionRecord({"x": float(i)}, T0, prediction=i % 2, prediction_id=pid)
                                  for i, pid in enumerate(ids)])
    store.add_labels(model, [LabelRecord(pid, i % 2) for i, pid in enumerate(ids)])


def analyze(store: EventStore) -> None:
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE labels, predictions")


def under_estimated(store: EventStore, model: str) -> bool:
    with store.engine.connect() as conn:
        estimate, found = estimate_and_count(conn, model)
    return found > UNDER_FACTOR * estimate + UNDER_MARGIN


@pytest.fixture
def pg_store(fresh_postgres_url: str) -> Iterator[EventStore]:
    """A store of the test's own database: the planner's statistics are per database."""
    store = EventStore.from_url(fresh_postgres_url, ManualClock(T0), sealing=Sealing(mode="off"))
    yield store
    store.dispose()


@pytest.mark.postgres
def test_a_model_newer_than_the_statistics_has_them_analyzed_before_its_window_is_read(pg_store: EventStore) -> None:
    write_pairs(pg_store, "old")
    analyze(pg_store)
    write_pairs(pg_store, "new")
    assert under_estimated(pg_store, "new")  # the statistics know "old" only

    window = pg_store.labeled_window("new", T0)
    assert window.rows == ROWS
    assert not under_estimated(pg_store, "new")
    assert not under_estimated(pg_store, "old")


@pytest.mark.postgres
def test_sealing_a_model_newer_than_the_statistics_has_them_analyzed_first(pg_store: EventStore) -> None:
    write_pairs(pg_store, "old")
    analyze(pg_store)
    write_pairs(pg_store, "new")
    assert under_estimated(pg_store, "new")

    # Half stays in the row tables: still far more than the one row the old statistics would give it.
    assert sum(r.rows for r in pg_store.seal("new", keep_rows=ROWS // 2, min_rows=1)) == ROWS // 2
    assert not under_estimated(pg_store, "new")


@pytest.mark.postgres
def test_a_model_is_looked_at_no_more_than_once_a_minute(pg_store: EventStore) -> None:
    now = [0.0]
    statistics = PlannerStatistics(pg_store.engine, monotonic=lambda: now[0])
    write_pairs(pg_store, "old")
    analyze(pg_store)
    assert statistics.ensure("late") is False  # nothing written yet: nothing under-estimated
    write_pairs(pg_store, "late")
    now[0] = 59.0
    assert statistics.ensure("late") is False  # not looked at again yet
    assert under_estimated(pg_store, "late")
    now[0] = 60.0
    assert statistics.ensure("late") is True
    assert not under_estimated(pg_store, "late")
    now[0] = 120.0
    assert statistics.ensure("late") is False  # looked at, and known now
    assert statistics.ensure("old") is False


def test_sqlite_is_left_alone(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        statistics = PlannerStatistics(engine)
        assert statistics.active is False and statistics.ensure("m") is False
        assert not (tmp_path / "events.db").exists()  # it never even connected
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_failed_check_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    # A database that does not exist: the check cannot even connect; the read it runs before reports that itself.
    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/driftpilot_no_such_database")
    try:
        with caplog.at_level("WARNING", logger="driftpilot.store"):
            assert PlannerStatistics(engine).ensure("m") is False
    finally:
        engine.dispose()
    assert "could not check or analyze the row tables for model m" in caplog.text
    assert "ANALYZE labels, predictions" in caplog.text
