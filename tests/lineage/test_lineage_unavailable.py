"""An unreachable tracking server fails fast and clearly; MLflow's process globals are left as they were."""

from __future__ import annotations

import os
import socket

import mlflow
import pytest
import urllib3.util.connection

from lineage import HttpLimits, LineageError, LineageUnavailable, ModelRegistry, RegistrySettings
from tests.lineage.lineage_helpers import StepClock


def _closed_port() -> int:
    with socket.socket() as s:  # bound then released: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def connections(monkeypatch) -> list[tuple[tuple[str, int], float | None]]:
    """Every TCP connection urllib3 opens (MLflow's HTTP client, through requests), as (address, timeout)."""
    opened: list[tuple[tuple[str, int], float | None]] = []
    real = urllib3.util.connection.create_connection

    def counted(address, *args, **kwargs):
        opened.append((address, args[0] if args else kwargs.get("timeout")))
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted)
    return opened


def test_unreachable_server_fails_fast_with_the_uri_and_what_to_check(connections):
    port = _closed_port()
    uri = f"http://127.0.0.1:{port}"
    with pytest.raises(LineageUnavailable) as info:
        ModelRegistry.connect(
            RegistrySettings(tracking_uri=uri), clock=StepClock()
        )  # default HttpLimits

    # Default limits must not hang a tick: MLflow's client tried the dead server 1 + 2 retries times, each connection
    # with a 10 s timeout (HttpLimits), not MLflow's own 7 retries of 120 s each.
    tried = [timeout for address, timeout in connections if address == ("127.0.0.1", port)]
    assert tried == [10, 10, 10], f"connection attempts (their timeouts): {tried}"
    message = str(info.value)
    assert info.value.uri == uri
    assert f"MLflow at {uri} is unavailable, could not open experiment 'driftpilot'" in message
    assert f"curl {uri}/health" in message
    assert "Connection refused" in message
    assert "2 retries" in message


def test_retries_zero_fails_at_once_and_a_later_call_still_works(sqlite_settings, connections):
    port = _closed_port()
    dead = RegistrySettings(
        tracking_uri=f"http://127.0.0.1:{port}", http=HttpLimits(max_retries=0)
    )
    with pytest.raises(LineageUnavailable):
        ModelRegistry.connect(dead, clock=StepClock())
    # At once: one connection attempt, so no retry and no backoff pause.
    assert [address for address, _ in connections if address == ("127.0.0.1", port)] == [("127.0.0.1", port)]
    # The process-wide lock was released and the working store is unaffected.
    assert ModelRegistry.connect(sqlite_settings, clock=StepClock()).aliases("nothing-here") == {}


def test_mlflow_globals_and_environment_are_restored_after_each_call(sqlite_settings):
    before_env = {k: os.environ.get(k) for k in os.environ if k.startswith("MLFLOW_")}
    before_uri = mlflow.get_tracking_uri()
    registry = ModelRegistry.connect(sqlite_settings, clock=StepClock())
    registry.check()
    with pytest.raises(LineageError):
        registry.get("no-such-model", 1)
    assert {k: os.environ.get(k) for k in os.environ if k.startswith("MLFLOW_")} == before_env
    assert mlflow.get_tracking_uri() == before_uri


def test_settings_refuse_unknown_keys_with_the_valid_ones():
    with pytest.raises(ValueError, match="tracking_url"):
        RegistrySettings(tracking_url="sqlite:///x.db")
    with pytest.raises(ValueError, match="max_retries"):
        HttpLimits(max_retries=50)
