"""Engines and schema migrations for the event store (SQLite in WAL mode by default, PostgreSQL by URL).

Several processes may share one store (API replicas, a daemon beside a server, a restart loop), so:

* SQLite transactions are real: driftpilot emits ``BEGIN`` itself instead of the ``sqlite3`` module's legacy mode
  (which runs SELECTs outside the transaction), and a write transaction (:func:`begin_write`) starts with
  ``BEGIN IMMEDIATE``, taking SQLite's single write lock before its first read, so a read-then-write is never raced
  and never fails with a stale snapshot.
* Schema set-up (:func:`upgrade`) is serialized between processes: a lock file next to a SQLite database
  (``events.db.lock``, ``fcntl.flock``) and a transaction-scoped advisory lock on PostgreSQL.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from controller.errors import StoreUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")
# Connection execution option read by the SQLite "begin" hook: this transaction will write (BEGIN IMMEDIATE).
_WRITE_OPTION = "driftpilot_write"
# How long a process waits for another one to finish setting up the schema of the same database.
SETUP_LOCK_TIMEOUT_S = 120.0


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
            # No implicit BEGIN from the sqlite3 module: the "begin" hook below emits it (SQLAlchemy's documented
            # recipe), so reads and writes inside one transaction see one state of the database.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # First, so that even switching a fresh file to WAL waits for another process instead of failing.
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged write survives a power cut too (WAL fsync on every commit). NORMAL is faster for
            # one-row batches (benchmarks/ingest.py: 2,250 vs 1,497 events/s) but can lose the last commits on power
            # loss; at batches of 1,000 the difference is small (103k vs 100k events/s; docs/benchmarks.md).
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn: sa.Connection) -> None:
            # A writer takes the write lock first (waiting up to busy_timeout for another writer); a deferred BEGIN
            # followed by a write would fail at once with "database is locked" if another writer committed between
            # this transaction's first read and its first write.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql":
        # A dead server must fail the request in seconds, not hang it.
        # prepare_threshold=None: psycopg would otherwise prepare the `prediction_id IN (...)` lookups after five runs,
        # and PostgreSQL's generic plan for them scans all of a model's rows (measured: 562 ms vs 1.3 ms at 20k rows;
        # docs/benchmarks.md).
        engine = sa.create_engine(url, pool_pre_ping=True, json_serializer=dumps_json,
                                  connect_args={"connect_timeout": 5, "prepare_threshold": None})

        @sa.event.listens_for(engine, "connect")
        def _staging_tables(dbapi_connection, _record) -> None:
            # Per-session staging tables for COPY (writes._copy_insert), made once per connection; a temp table made
            # inside a write transaction would vanish with that transaction's rollback.
            with dbapi_connection.cursor() as cursor:
                cursor.execute(STAGE_DDL)
            dbapi_connection.commit()

        return engine
    raise StoreUnavailable(f"unsupported store URL {url!r}; use sqlite:///path or postgresql+psycopg://...")


# COPY cannot skip rows whose key exists: predictions go through a session's staging table (no indexes, no WAL), then
# into the table with ON CONFLICT DO NOTHING.
STAGE_TABLES = {"predictions": "driftpilot_stage_predictions"}
STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS driftpilot_stage_predictions (model varchar(128), prediction_id varchar(128), "
    "model_version varchar(64), event_time timestamptz, received_at timestamptz, features jsonb, prediction jsonb, "
    "scores jsonb, source varchar(16))"
)


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


def begin_write(conn: sa.Connection) -> sa.RootTransaction:
    """Begin a transaction that will write: ``BEGIN IMMEDIATE`` on SQLite (see the module docstring)."""
    conn.execution_options(**{_WRITE_OPTION: True})
    return conn.begin()


def begin_snapshot(conn: sa.Connection) -> sa.RootTransaction:
    """Begin a read transaction with one snapshot for all its statements: SQLite's read transaction, REPEATABLE READ
    on PostgreSQL (a read spanning the row tables and the segments must not see rows move between them)."""
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")
    return conn.begin()


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's ``pg_advisory_*lock`` functions, from a name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def advisory_xact_lock(conn: sa.Connection, name: str) -> None:
    """On PostgreSQL, wait for the transaction-scoped advisory lock ``name`` (released at commit or rollback)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(advisory_key(name))))


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent). Runs on start and from ``driftpilot db upgrade``.

    Safe when several processes start together on a fresh database: they take turns (a lock file beside a SQLite
    file, an advisory lock on PostgreSQL), and each one after the first finds the schema current.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with setup_lock(engine):
        try:
            connection = engine.connect()
        except sa.exc.DBAPIError as exc:
            raise StoreUnavailable(describe_unreachable(engine, exc)) from exc
        try:
            with connection, begin_write(connection):
                advisory_xact_lock(connection, "driftpilot:schema")
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        except sa.exc.DBAPIError as exc:
            raise StoreUnavailable(
                f"could not bring the event store {_safe_url(engine)} to schema revision {revision!r}: "
                f"{_reason(exc)}. The migration was rolled back. If another process was starting at the same time, "
                "retry; otherwise check the database server and its logs, then run `driftpilot db upgrade --config "
                "POLICY` once by hand."
            ) from exc


@contextmanager
def setup_lock(engine: sa.Engine, timeout_s: float = SETUP_LOCK_TIMEOUT_S) -> Iterator[None]:
    """For a SQLite file, hold an exclusive ``flock`` on ``<file>.lock`` while the schema is set up.

    The lock file is left in place (removing it would let a waiting process lock a file nobody else sees); the OS
    releases the lock when its holder exits, however it exits. Other databases: no file lock (see :func:`upgrade`).
    """
    path = sqlite_file(engine)
    if path is None:
        yield
        return
    with file_lock(path.with_name(path.name + ".lock"), timeout_s,
                   what=f"set up the schema of the event store {path}"):
        yield


@contextmanager
def file_lock(lock_path: Path, timeout_s: float, *, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing), waiting at most ``timeout_s``."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:  # "a": create if missing, never truncate another holder's file
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"could not {what}: another process has held the lock file {lock_path} for over "
                        f"{timeout_s:g} s. Find it with `fuser {lock_path}` and stop it if it hangs (the lock is "
                        "released when it exits), then retry."
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sqlite_file(engine: sa.Engine) -> Path | None:
    """The database file of a file-based SQLite engine, else None."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve()


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
