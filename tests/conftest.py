"""Shared fixtures: event stores on SQLite and on the real PostgreSQL server, a manual clock, policies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa

from controller.clock import ManualClock
from controller.store import EventStore
from tests.ports import free_port

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CLASSIFICATION = REPO / "config" / "example-classification.yaml"
EXAMPLE_REGRESSION = REPO / "config" / "example-regression.yaml"
ELEC2_ZIP = REPO.parent / "shared" / "data" / "ELEC.arff.zip"


def load_benchmark(script: str) -> ModuleType:
    """``benchmarks/<script>.py``, a script, loaded as the module ``benchmark_<script>`` (once per process) by the
    scripts' own loader, benchmarks/bench_kit.py; their folder goes on sys.path (last), where the scripts import it."""
    folder = str(REPO / "benchmarks")
    if folder not in sys.path:
        sys.path.append(folder)
    import bench_kit

    return bench_kit.load_script(script)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@contextmanager
def scratch_database(prefix: str, count: int = 1) -> Iterator[list[str]]:
    """``count`` new, empty databases (not even migrated) on the real PostgreSQL server (127.0.0.1:5432, trust auth),
    named ``<prefix>_<random>``; their URLs, dropped afterwards."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    names = [f"{prefix}_{uuid.uuid4().hex[:10]}" for _ in range(count)]
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is not reachable ({exc.orig}); the store suite needs it. "
                    "Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    try:
        yield [POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}" for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server, shared by the session, dropped at the end."""
    with scratch_database("driftpilot_test") as (url,):
        yield url


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """An empty database (not even migrated) of the test's own, dropped afterwards."""
    with scratch_database("driftpilot_fresh") as (url,):
        yield url


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


# ------------------------------------------------------------------------------------------- a real mlflow server


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server_url(tmp_path_factory):
    """A lean real `mlflow server` (sqlite backend, proxied artifacts) on a free loopback port, shared by the tests
    that need one (each uses its own experiment or model names); killed (whole process group) at teardown."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root}/server.db",
        "--artifacts-destination",  # proxied artifacts, as a production server serves them
        str(root / "art"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server not healthy after 120 s:\n{log_path.read_text()[-3000:]}"
                )
            try:  # waits for the process (returns early if it dies), not a blind sleep
                proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                pass
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
