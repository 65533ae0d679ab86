"""The demo's daemon: ``driftpilot run`` as a subprocess on a free loopback port, its readiness, the HTTP calls the
traffic makes to it, the wait for it to catch up with the last labels, and its graceful stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli.common import fail

if TYPE_CHECKING:
    from controller.cli.demo.screen import Screen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daemon(config_path: Path, port: int, folder: Path, log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "from controller.cli.main import main; main()", "--log-level", "WARNING",
               "run", "--config", str(config_path), "--port", str(port),
               "--scheduler-db", f"sqlite:///{(folder / 'scheduler.db').resolve()}"]
    log = log_path.open("w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_ready(client: Any, port: int, daemon: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            fail(f"the daemon exited with code {daemon.returncode} before it served; see {log_path}")
        try:
            if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        except Exception:  # noqa: BLE001,S110 - not listening yet
            pass
        time.sleep(0.2)
    fail(f"the daemon did not answer /readyz within 90 s; see {log_path}")


def post(client: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url, json=body)
    if response.status_code != 200:
        fail(f"POST {url} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def settle(store: Any, screen: Screen, model: str, daemon: subprocess.Popen) -> None:
    """After the traffic: give the daemon up to half a minute to tick past the last labels sent (the race judges
    them), printing as it goes. A retrain still training then is not waited for: its challengers could only join a
    race that has no more traffic."""
    from controller.loop.state import load_state

    newest = store.labeled_count(model, datetime.now(UTC))[1]

    def behind() -> bool:
        cursor = load_state(store, model).label_cursor
        return newest is not None and (cursor is None or cursor < newest)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and daemon.poll() is None and behind():
        screen.poll()
        time.sleep(0.5)
    screen.poll()
    training = screen.log.in_flight(model)
    if training is not None:
        screen.write(f"note: {training.action} {training.decision_id} (rule {training.rule}) was still "
                     f"{training.status} when the traffic ended; the demo does not wait for it")


def stop(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)

