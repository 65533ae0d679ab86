"""Two `driftpilot run` daemons on one PostgreSQL event store (each with its own scheduler database, one MLflow
store): the model's lease lets exactly one of them act, so a drifting stream is retrained once, by the holder; a
SIGTERM of the holder releases the lease and the other daemon takes over at once (long before the lease expires)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.loop.daemon_kit import Daemon, make_toy, shared_mlflow_dir, wait_until
from tests.toy import toy_table


@pytest.mark.slow
@pytest.mark.postgres
def test_two_daemons_on_one_postgres_store_retrain_once_and_hand_over_on_sigterm(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, postgres_url: str, model_name: str) -> None:
    toy = make_toy(tmp_path, model_name, storage=postgres_url, lease_ttl="60s",
                   mlflow_dir=shared_mlflow_dir(tmp_path_factory))
    daemons = [Daemon(tmp_path, [toy.path], label=label, scheduler_db=f"sqlite:///{tmp_path / label}-jobs.db",
                      log_level="DEBUG")  # DEBUG: the ticks skipped on the lease are logged
               for label in ("a", "b")]
    try:
        def holder() -> Daemon | None:
            lease = toy.lease()
            return next((d for d in daemons if lease is not None and d.owns(lease.holder)), None)

        active = wait_until(holder, "one daemon holding the lease", 90, watch=daemons)
        standby = next(d for d in daemons if d is not active)
        # A drifting stream, written by a serving replica straight to the shared store.
        toy.stream(pd.concat([toy_table(300, seed=5), toy_table(600, seed=6, concept="b")], ignore_index=True))
        decision = wait_until(lambda: [d for d in toy.decisions(("retrain",)) if not d.in_flight],
                              "the retrain decision to end", 120, watch=daemons)[0]
        assert (decision.status, decision.verdict) == ("done", "promote"), decision.error
        assert len(toy.decisions(("retrain",))) == 1
        # Every decision, and every tick that acted, was the lease holder's; the other one only skipped.
        assert all(active.owns(d.owner) for d in toy.decisions())
        assert not [line for line in standby.log_lines() if "started in worker pid" in line["message"]]
        skipped = [line for line in standby.log_lines() if line["message"].startswith(f"tick {model_name}: ")]
        assert skipped and {line["message"] for line in skipped} == \
            {f"tick {model_name}: lease held by {toy.lease().holder}"}
        assert holder() is active and toy.aliases() == {"champion": decision.challenger_version, "previous": "1"}

        # A graceful stop of the holder releases the lease; the other daemon takes over on its next tick.
        code, _ = active.terminate()
        assert code == 0, active.output()
        stopped_at = toy.clock.now()
        standby.wait_until(lambda: holder() is standby, "the standby daemon to take the lease", 20)  # ttl is 60 s
        standby.wait_until(lambda: toy.state().last_tick > stopped_at, "a tick of the new holder")
        assert len(toy.decisions(("retrain",))) == 1
    finally:
        for daemon in daemons:
            daemon.cleanup()
