"""kill -9 durability of the ingestion API (issue 9): a real ``driftpilot serve`` subprocess on SQLite and on the real
PostgreSQL, killed with SIGKILL while a client streams batches.

The client sends prediction and label batches back to back, with ids that name the batch, and records which ones
were acknowledged (a 200). Once a set number of batches is acknowledged, a killer thread watches the database for the
server's open write transaction (SQLite: the write lock is taken; PostgreSQL: a server backend holds a transaction id)
and sends SIGKILL at that moment, so the kill lands inside a transaction. After a restart of the server: every
acknowledged event is there (counted per batch through the store and in total through ``/stats``), and every batch is
stored whole or not at all. The restarted server takes writes again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from controller.clock import SystemClock
from controller.store import EventStore
from tests.loop.daemon_kit import DRIFTPILOT
from tests.ports import free_port

BATCH = 200            # events per batch: big enough that a kill often lands inside a transaction
KILL_AFTER = 24        # acknowledged batches before the SIGKILL

POLICY = """\
model: {model}
task: classification
target: {{name: y, classes: [0, 1]}}
features:
  x1: numeric
  color: {{type: categorical, required: false}}
storage: {{url: "{url}"}}
mlflow: {{tracking_uri: "sqlite:///{mlflow}/mlflow.db", artifact_location: "{mlflow}/artifacts"}}
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for the module: the server opens it (no champion), creating it costs seconds."""
    return tmp_path_factory.mktemp("mlflow")


class Server:
    """``driftpilot serve`` in its own process group, on a free port; ``kill()`` is SIGKILL, nothing graceful."""

    def __init__(self, policy: Path, folder: Path) -> None:
        self.port = free_port()
        self.log = folder / f"serve-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(DRIFTPILOT), "--log-level", "WARNING", "serve", "--config", str(policy), "--port",
                 str(self.port)], cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # a bounded poll on a real subprocess
            if self.proc.poll() is not None:
                pytest.fail(f"driftpilot serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"driftpilot serve not ready after {timeout_s}s:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@dataclass
class Stream:
    """What the client sent and what the server acknowledged."""

    sent: list[tuple[str, list[str]]] = field(default_factory=list)     # (kind, ids) per attempted batch
    acked: list[tuple[str, list[str]]] = field(default_factory=list)
    failure: str | None = None
    mid_transaction: bool = False  # the kill landed while the server's write transaction was open


class WriteProbe:
    """Whether another connection has a write transaction open on the store's database, seen from outside."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            self.sqlite = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None,
                                          check_same_thread=False)
        else:
            self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")

    def writing(self) -> bool:
        if self.url.startswith("sqlite"):
            try:
                self.sqlite.execute("BEGIN IMMEDIATE")  # refused at once while the server holds the write lock
            except sqlite3.OperationalError:
                return True
            self.sqlite.execute("ROLLBACK")
            return False
        with self.engine.connect() as conn:
            return bool(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL")).scalar_one())

    def close(self) -> None:
        if self.url.startswith("sqlite"):
            self.sqlite.close()
        else:
            self.engine.dispose()


def stream_until_killed(server: Server, model: str, probe: WriteProbe, killed: threading.Event) -> Stream:
    """Prediction batches, each followed by a label batch for half of its ids, until the connection fails."""
    stream, acked = Stream(), threading.Event()

    def killer() -> None:
        acked.wait(timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a bounded poll on the real database
            if probe.writing():
                stream.mid_transaction = True
                break
        server.kill()
        killed.set()

    threading.Thread(target=killer, daemon=True).start()
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        for number in range(10_000):
            ids = [f"b{number}-{i}" for i in range(BATCH)]
            if number % 2 == 0:
                kind, path = "predictions", "predictions"
                body = {"items": [{"prediction_id": pid, "features": {"x1": float(i), "color": "red"},
                                   "prediction": i % 2} for i, pid in enumerate(ids)]}
            else:
                kind, path = "labels", "labels"
                ids = [f"b{number - 1}-{i}" for i in range(0, BATCH, 2)]
                body = {"items": [{"prediction_id": pid, "label": 1} for pid in ids]}
            stream.sent.append((kind, ids))
            try:
                response = client.post(f"/v1/models/{model}/{path}", json=body)
            except httpx.TransportError as exc:
                stream.failure = f"{type(exc).__name__}: {exc}"
                break
            assert response.status_code == 200, response.text
            stream.acked.append((kind, ids))
            if len(stream.acked) == KILL_AFTER:
                acked.set()
        else:
            pytest.fail("the server was never killed")
    return stream


def stored_count(store: EventStore, model: str, kind: str, ids: list[str]) -> int:
    if kind == "predictions":
        return len(store.known_prediction_ids(model, ids))
    return sum(bool(store.label_history(model, pid)) for pid in ids)


@pytest.fixture
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store_for(url: str) -> Iterator[EventStore]:
    store = EventStore.from_url(url, SystemClock())
    yield store
    store.dispose()


@pytest.mark.parametrize("url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_sigkill_while_streaming_loses_no_acknowledged_event_and_half_stores_no_batch(
        url: str, store_for: EventStore, tmp_path: Path, mlflow_dir: Path, model_name: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(model=model_name, url=url, mlflow=mlflow_dir))
    server = Server(policy, tmp_path)
    try:
        server.wait_ready()
        killed, probe = threading.Event(), WriteProbe(url)
        try:
            stream = stream_until_killed(server, model_name, probe, killed)
            assert stream.failure is not None and killed.wait(timeout=90), "the stream ended without the kill"
        finally:
            probe.close()
        assert stream.mid_transaction, "the write transaction was never seen open; the kill did not land inside one"
        assert len(stream.acked) >= KILL_AFTER
    finally:
        server.kill()

    restarted = Server(policy, tmp_path)
    try:
        restarted.wait_ready()
        store = store_for
        # Every batch whole or not at all; every acknowledged one whole.
        acked = {tuple(ids) for _, ids in stream.acked}
        for kind, ids in stream.sent:
            stored = stored_count(store, model_name, kind, ids)
            assert stored in (0, len(ids)), f"{kind} batch {ids[0]}..: {stored} of {len(ids)} stored"
            if tuple(ids) in acked:
                assert stored == len(ids), f"acknowledged {kind} batch {ids[0]}.. lost {len(ids) - stored} events"
        acked_predictions = sum(len(ids) for kind, ids in stream.acked if kind == "predictions")
        acked_labels = sum(len(ids) for kind, ids in stream.acked if kind == "labels")
        stats = httpx.get(f"{restarted.url}/v1/models/{model_name}/stats", timeout=10).json()
        in_flight = stream.sent[-1]
        in_flight_stored = stored_count(store, model_name, *in_flight)
        expected_predictions = acked_predictions + (in_flight_stored if in_flight[0] == "predictions" else 0)
        expected_labels = acked_labels + (in_flight_stored if in_flight[0] == "labels" else 0)
        assert stats["predictions"] == expected_predictions
        assert stats["labeled"] == expected_labels
        print(f"{url.split(':')[0]}: {len(stream.acked)} batches acknowledged ({acked_predictions} predictions, "
              f"{acked_labels} labels), then SIGKILL inside the write transaction of a {in_flight[0]} batch, which "
              f"was {'stored whole' if in_flight_stored else 'not stored'}; 0 acknowledged events lost")
        # The restarted server takes writes again.
        again = httpx.post(f"{restarted.url}/v1/models/{model_name}/predictions", timeout=10,
                           json={"items": [{"prediction_id": "after-restart", "features": {"x1": 1.0},
                                            "prediction": 1}]})
        assert again.status_code == 200, again.text
    finally:
        restarted.kill()
