"""Shared fixtures: event stores on SQLite and on the real PostgreSQL server, a manual clock, policies."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.clock import ManualClock
from controller.store import EventStore

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CLASSIFICATION = REPO / "config" / "example-classification.yaml"
EXAMPLE_REGRESSION = REPO / "config" / "example-regression.yaml"
ELEC2_ZIP = REPO.parent / "shared" / "data" / "ELEC.arff.zip"

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server (127.0.0.1:5432, trust auth), dropped at the end."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    name = f"driftpilot_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is not reachable ({exc.orig}); the store suite needs it. "
                    "Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store suite runs once on SQLite and once on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url: str, clock: ManualClock) -> Iterator[EventStore]:
    store = EventStore.from_url(store_url, clock)
    yield store
    store.dispose()


@pytest.fixture
def model_name() -> str:
    """A model name of this test's own, so tests sharing the PostgreSQL database never see each other's rows."""
    return f"m-{uuid.uuid4().hex[:8]}"
