"""The daemon's DeferredRegistry on a real MLflow client: an unreachable tracking server fails the call, is not asked
again during the pause (so it cannot hold lineage's process-wide lock away from the other models), and is connected
once it answers after the pause."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from controller.clock import ManualClock
from controller.loop.daemon import DeferredRegistry
from lineage import HttpLimits, LineageUnavailable, ModelRegistry, RegistrySettings
from tests.ports import free_port


@pytest.mark.slow  # MLflow creates a SQLite store
def test_an_unreachable_mlflow_is_not_asked_again_during_the_pause_and_connects_after_it(
        tmp_path: Path, clock: ManualClock) -> None:
    where = {"uri": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    attempts = []

    def connect() -> ModelRegistry:
        attempts.append(clock.now())
        settings = RegistrySettings(tracking_uri=where["uri"], experiment="deferred",
                                    artifact_location=str(tmp_path / "artifacts"), http=HttpLimits(max_retries=0))
        return ModelRegistry.connect(settings, clock=clock)

    registry = DeferredRegistry(connect, clock, pause=timedelta(seconds=30))  # nothing is asked yet
    assert attempts == []
    with pytest.raises(LineageUnavailable, match="Connection refused"):
        registry.champion_version("m")
    assert len(attempts) == 1

    clock.advance(seconds=29)
    with pytest.raises(LineageUnavailable, match=r"Connection refused.*\[not asked again before 2026-01-01T00:00:30"):
        registry.aliases("m")
    assert len(attempts) == 1  # failed at once, without MLflow

    where["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow answers again
    clock.advance(seconds=1)
    assert registry.aliases("no-such-model") == {}
    assert len(attempts) == 2
    registry.check()
    assert len(attempts) == 2  # connected once, then every attribute is the registry's
