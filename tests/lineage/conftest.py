"""Fixtures for the lineage tests: a real sqlite MLflow store, a real `mlflow server`, a stepping clock.

No mocks: the registry talks to real MLflow stores. The only extra is :class:`AliasWatchingClient`, a real
MlflowClient that re-reads the aliases after every alias call so tests can see every intermediate state.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from lineage_helpers import AliasWatchingClient, StepClock

from lineage import ModelRegistry, RegistrySettings

# ------------------------------------------------------------------------------------------------ backends


@pytest.fixture(scope="session")
def sqlite_settings(tmp_path_factory) -> RegistrySettings:
    root = tmp_path_factory.mktemp("mlflow-sqlite")
    return RegistrySettings(
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        experiment="lineage-tests",
        artifact_location=str(root / "artifacts"),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server_url(tmp_path_factory):
    """A lean real `mlflow server` on a free loopback port; killed (whole process group) at teardown."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root}/server.db",
        "--default-artifact-root",
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


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.mlflow_server)])
def backend_settings(request, sqlite_settings) -> RegistrySettings:
    if request.param == "sqlite":
        return sqlite_settings
    url = request.getfixturevalue("mlflow_server_url")
    return RegistrySettings(tracking_uri=url, experiment="lineage-tests")


@pytest.fixture
def registry(backend_settings) -> ModelRegistry:
    """A registry on each backend, with a stepping clock and an alias-watching client."""
    return ModelRegistry.connect(
        backend_settings, clock=StepClock(), client_class=AliasWatchingClient
    )


@pytest.fixture
def sqlite_registry(sqlite_settings) -> ModelRegistry:
    return ModelRegistry.connect(
        sqlite_settings, clock=StepClock(), client_class=AliasWatchingClient
    )


_names = itertools.count(1)


@pytest.fixture
def model_name(request) -> str:
    """A registered-model name unique to the test (all tests share one store per backend)."""
    return f"{re.sub(r'[^A-Za-z0-9]+', '-', request.node.name).strip('-')[:60]}-{next(_names)}"
