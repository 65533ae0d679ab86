"""`driftpilot run` with ``loop.executor: {kind: dask}``, every part real and its own process: a ``dask scheduler`` and
two ``dask worker`` processes, the daemon, PostgreSQL (the event store, which the workers read by URL) and an
``mlflow server`` with proxied artifacts (the workers register through it; nothing is shared by disk).

A drifting stream -> concept drift -> the retrain runs on a Dask worker -> that worker is SIGKILLed mid-fit -> the
decision fails with the reason (KilledWorker: the scheduler is told not to retry a task whose worker died, as
docs/deployment.md suggests) and nothing is registered -> a new trigger trains again on the cluster -> the gate
promotes -> aliases consistent; SIGTERM stops the daemon cleanly. The fit is the gated estimator's
(tests/loop/gated_estimator.py): it waits for a file the test creates."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from tests.loop.daemon_kit import Daemon, gated_candidate, make_toy, worker_pids
from tests.loop.dask_kit import DaskCluster
from tests.toy import toy_table

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.mlflow_server]

RULES = """\
  - name: drift
    when: {concept_drift: drift}
    do: {strategy: stateless, window: {last_rows: 400}, candidates: [gated]}
  - name: by-hand
    when: manual
    do: {strategy: stateless, window: {last_rows: 400}, candidates: [gated]}
"""


def test_a_drift_retrains_on_dask_workers_a_killed_worker_fails_the_decision_and_a_retry_is_promoted(
        tmp_path: Path, postgres_url: str, mlflow_server_url: str, model_name: str) -> None:
    cluster_dir = tmp_path / "cluster"
    cluster_dir.mkdir()
    cluster = DaskCluster(cluster_dir)
    daemon = None
    try:
        toy = make_toy(tmp_path, model_name, storage=postgres_url, tracking=mlflow_server_url, proxied_artifacts=True,
                       rules=RULES, extra=gated_candidate(tmp_path),
                       loop_extra=f"executor: {{kind: dask, address: \"{cluster.address}\"}}")
        cluster.wait_for_workers(2)
        daemon = Daemon(tmp_path, [toy.path], label="daemon")
        daemon.wait_until(lambda: daemon.owns(getattr(toy.lease(), "holder", None)), "the daemon's lease", 90)

        # The champion (concept "a") serves a stream whose concept changes to "b"; labels arrive late.
        toy.stream(pd.concat([toy_table(300, seed=5), toy_table(600, seed=6, concept="b")], ignore_index=True))
        first = daemon.wait_until(lambda: [d for d in toy.decisions(("retrain",)) if d.status == "training"],
                                  "the drift's retrain decision", 120)[0]
        assert (first.trigger, first.rule) == ("concept_drift", "drift")
        killed = daemon.wait_until(lambda: worker_pids(tmp_path), "the fit to start on a Dask worker", 90)[0]
        assert cluster.group_of(killed) in cluster.worker_groups()  # a `dask worker`'s process, not the daemon's
        os.kill(killed, signal.SIGKILL)

        failed = daemon.wait_until(lambda: (d := toy.decision(first.decision_id)).status == "failed" and d,
                                   "the decision to fail", 60)
        assert failed.error.startswith("training failed: the Dask worker running it was lost (KilledWorker: "
                                       "tcp://127.0.0.1:"), failed.error
        assert [v.version for v in toy.registry.tree(toy.loaded.config.registered_model)] == ["1"]
        assert toy.aliases() == {"champion": "1"}

        # A new trigger trains again on the cluster (the restarted worker or the other one); this fit ends.
        (tmp_path / "gate-open").touch()
        toy.request_retrain("after the lost worker")
        again = daemon.wait_until(
            lambda: [d for d in toy.decisions(("retrain",)) if d.decision_id != first.decision_id and not d.in_flight],
            "the second retrain to end", 120)[0]
        assert (again.trigger, again.status, again.verdict) == ("manual", "done", "promote"), again.error
        trainer = worker_pids(tmp_path)[-1]
        assert trainer != killed and cluster.group_of(trainer) in cluster.worker_groups()
        assert toy.aliases() == {"champion": again.challenger_version, "previous": "1"}
        assert [v.version for v in toy.registry.tree(toy.loaded.config.registered_model)] == ["1", "2"]
        record = toy.registry.get(toy.loaded.config.registered_model, "2").record
        assert record.decision_id == again.decision_id
        # Its artifacts went through the server: the test process loads the champion from there.
        loaded = toy.registry.load(toy.loaded.config.registered_model)
        assert loaded.version == "2" and len(loaded.model.predict(toy_table(5, seed=9)[["x1", "x2", "color"]])) == 5
        submitted = [line for line in daemon.log_lines() if "submitted to the Dask scheduler" in line["message"]]
        assert len(submitted) == 2 and not [line for line in daemon.log_lines()
                                            if "started in worker pid" in line["message"]]

        code, _ = daemon.terminate()
        assert code == 0, daemon.output()
        assert toy.lease() is None
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.output()}") from None
    finally:
        if daemon is not None:
            daemon.cleanup()
        cluster.cleanup()
