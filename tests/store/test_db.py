"""Engines and migrations of the event store (controller/store/db.py): the migrated schema is the tables' definition,
SQLite runs in WAL mode with full sync, an unreachable database is a clear error."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from controller.clock import ManualClock
from controller.errors import StoreUnavailable
from controller.store import EventStore, LabelRecord
from controller.store.db import create_store_engine
from controller.store.tables import metadata


def test_migrated_schema_matches_the_table_definitions(store: EventStore) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode(tmp_path, clock: ManualClock) -> None:
    store = EventStore.from_url(f"sqlite:///{tmp_path / 'e.db'}", clock)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL: acknowledged writes are durable


def test_unreachable_database_is_a_clear_error(clock: ManualClock) -> None:
    store = EventStore(create_store_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"), clock)
    with pytest.raises(StoreUnavailable, match=r"event store postgresql\+psycopg://nobody@127.0.0.1:1/none is "
                                               r"unreachable: .*nothing was written"):
        store.add_labels("m", [LabelRecord("p1", 1)])
    with pytest.raises(StoreUnavailable):
        store.ping()
