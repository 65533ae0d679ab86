"""Engines and schema migrations for the event store (SQLite in WAL mode by default, PostgreSQL by URL)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from controller.errors import StoreUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")


def create_store_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL + a busy timeout so readers never block the writer."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, json_serializer=dumps_json)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged write survives a power cut too (WAL fsync on every commit). NORMAL is faster for
            # one-row batches (benchmarks/ingest.py: 2,250 vs 1,497 events/s) but can lose the last commits on power
            # loss; at batches of 1,000 the difference is small (103k vs 100k events/s; docs/benchmarks.md).
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        # A dead server must fail the request in seconds, not hang it.
        # prepare_threshold=None: psycopg would otherwise prepare the `prediction_id IN (...)` lookups after five runs,
        # and PostgreSQL's generic plan for them scans all of a model's rows (measured: 562 ms vs 1.3 ms at 20k rows;
        # docs/benchmarks.md).
        return sa.create_engine(url, pool_pre_ping=True, json_serializer=dumps_json,
                                connect_args={"connect_timeout": 5, "prepare_threshold": None})
    raise StoreUnavailable(f"unsupported store URL {url!r}; use sqlite:///path or postgresql+psycopg://...")


def dumps_json(value: object) -> str:
    """JSON for the store's JSON columns. NaN/inf (allowed by a feature's ``allow_nan``) are not JSON and PostgreSQL's
    JSONB refuses them, so they are written as the strings "NaN", "Infinity", "-Infinity", which the window reader
    turns back into floats for numeric features. The fast path never looks at a value twice."""
    try:
        return _ENCODER.encode(value)
    except ValueError:
        return _ENCODER.encode(json_safe(value))


# One encoder for every call: json.dumps with any non-default argument builds a new JSONEncoder each time.
_ENCODER = json.JSONEncoder(allow_nan=False)


def json_safe(value: object) -> object:
    """``value`` with non-finite floats replaced by their JSON-safe strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent). Runs on start and from ``driftpilot db upgrade``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except sa.exc.OperationalError as exc:
        raise StoreUnavailable(describe_unreachable(engine, exc)) from exc


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def describe_failure(engine: sa.Engine, exc: Exception) -> str:
    """The database answered, then failed the statement (disk full, locked too long, a server restart...)."""
    return (f"event store {_safe_url(engine)} failed during the request: {_reason(exc)}. The transaction was rolled "
            "back; nothing was written. Retry; if it persists, check the database server and its logs.")


def _safe_url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__


def describe_unreachable(engine: sa.Engine, exc: Exception) -> str:
    return (
        f"event store {_safe_url(engine)} is unreachable: {_reason(exc)}. Check that the database server is "
        "running and the URL in the policy's storage.url is right; nothing was written."
    )
