"""The Dask executor with a real ``distributed.LocalCluster`` (two worker processes, one thread each, started once for
the module): a job trains and registers on a worker; a job that cannot run reports why; a worker killed in the middle
of a fit fails its job (and the scheduler's own retry of the task is refused); a job past its timeout fails and its
fit, which Dask cannot interrupt, registers nothing once its decision is no longer training; a scheduler killed
mid-job (its own `dask scheduler` subprocess) fails the job, and the next submit finds it unreachable; an
unreachable scheduler fails the job at once with the address. Slow training is the gated estimator (tests/loop/gated_estimator.py): its
fit waits for a file the test creates."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest

from controller.clock import ManualClock
from controller.loop.dask_runner import DaskRunner
from controller.loop.runners import ProcessRunner, RoutedRunner, TrainingJob, build_runner
from controller.policy_loader import load_policy
from controller.store.control import DecisionLog
from tests.loop.daemon_kit import GATED_RULES, gated_candidate, make_toy, shared_mlflow_dir, wait_until
from tests.loop.dask_kit import DaskCluster
from tests.ports import free_port
from tests.toy import toy_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        with Client(local, set_as_default=False) as client:  # the test's own view: worker pids and state
            yield local, client


@pytest.fixture
def toy(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, model_name: str):
    toy = make_toy(tmp_path, model_name, rules=GATED_RULES, extra=gated_candidate(tmp_path),
                   mlflow_dir=shared_mlflow_dir(tmp_path_factory))
    toy.stream(toy_table(200, seed=5))
    return toy


def job(toy, decision_id: str, candidate: str = "default", **changes) -> TrainingJob:
    return TrainingJob(decision_id=decision_id, model=toy.name, strategy="stateless", candidates=(candidate,),
                       trigger="manual", window={"kind": "all"},
                       **{"as_of": toy.clock.now(), "timeout": timedelta(minutes=5), **changes})


# A deadline, not a speed limit: a cold Dask worker imports the training stack first, which took over 60 s in a full
# run on the loaded 2-core machine (it takes ~15 s alone).
def finished(runner: DaskRunner, decision_id: str, what: str, timeout_s: float = 240.0):
    return wait_until(lambda: (state := runner.poll(decision_id)).status != "running" and state, what, timeout_s)


def test_a_job_trains_on_a_worker_and_registers_a_version_without_moving_aliases(cluster, toy) -> None:
    local, _ = cluster
    runner = DaskRunner({toy.name: toy.loaded}, toy.clock, address=local.scheduler_address)
    try:
        runner.submit(job(toy, "d-ok"))
        assert runner.running() == {"d-ok": toy.name}
        state = finished(runner, "d-ok", "the job to finish on the cluster")
        assert state.status == "done", state.error
        [result] = state.results
        assert result["ok"] and result["version"] == "2" and result["candidate"] == "default", result
        record = toy.registry.get(toy.loaded.config.registered_model, "2").record
        assert (record.decision_id, record.parent_version, record.strategy) == ("d-ok", "1", "stateless")
        assert toy.aliases() == {"champion": "1"}  # only the controller moves aliases
        assert runner.running() == {} and runner.poll("d-ok").status == "unknown"

        # A candidate that cannot train is reported in the results, the job itself is done (as with processes).
        runner.submit(job(toy, "d-early", as_of=toy.clock.now() - timedelta(days=1)))
        early = finished(runner, "d-early", "the job with no rows to finish")
        assert early.status == "done" and not early.results[0]["ok"]
        assert early.results[0]["error"].startswith("only 0 labeled rows matured"), early.results
    finally:
        runner.shutdown()


def test_a_sqlite_store_the_worker_cannot_see_fails_the_job_with_what_to_do(cluster, toy, tmp_path: Path) -> None:
    local, _ = cluster
    policy = toy.path.read_text().replace(str(tmp_path / "events.db"), str(tmp_path / "elsewhere" / "events.db"))
    moved = tmp_path / "moved.yaml"
    moved.write_text(policy)
    runner = DaskRunner({toy.name: load_policy(moved, environ={})}, toy.clock, address=local.scheduler_address)
    try:
        runner.submit(job(toy, "d-nostore"))
        state = finished(runner, "d-nostore", "the job to fail")
        assert state.status == "failed"
        assert state.error.startswith(f"the event store sqlite:///{tmp_path}/elsewhere/events.db is not on Dask "
                                      "worker tcp://127.0.0.1:"), state.error
        assert "postgresql+psycopg://" in state.error and "loop.executor kind local" in state.error
    finally:
        runner.shutdown()


def test_a_worker_killed_mid_training_fails_the_job_and_the_schedulers_retry_is_refused(
        cluster, toy, tmp_path: Path) -> None:
    local, client = cluster
    runner = DaskRunner({toy.name: toy.loaded}, toy.clock, address=local.scheduler_address)
    try:
        runner.submit(job(toy, "d-killed", candidate="gated"))
        started = tmp_path / "fit-started"
        pid = int(wait_until(lambda: started.exists() and started.read_text().split(),
                             "the gated fit to start on a worker", 60)[0])
        assert pid in set(client.run(os.getpid).values())  # a worker process of the cluster, not us
        assert runner.poll("d-killed").status == "running"
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
        # The scheduler (allowed-failures 3 by default) starts the task again on a worker: that attempt refuses.
        (tmp_path / "gate-open").touch()
        state = finished(runner, "d-killed", "the runner to report the lost worker")
        assert state.status == "failed"
        assert state.error.startswith("the Dask worker that trained it was lost mid-training"), state.error
        assert [v.version for v in toy.registry.tree(toy.loaded.config.registered_model)] == ["1"]  # nothing registered
        assert toy.aliases() == {"champion": "1"}
        # The nanny restarted the worker; the cluster trains the next job.
        client.wait_for_workers(2, timeout=60)
        runner.submit(job(toy, "d-after", candidate="gated"))
        after = finished(runner, "d-after", "the next job")
        assert after.status == "done" and after.results[0]["ok"], after
    finally:
        runner.shutdown()


def test_a_job_past_its_timeout_fails_and_its_fit_registers_nothing_afterwards(cluster, toy, tmp_path: Path) -> None:
    local, client = cluster
    clock = ManualClock(toy.clock.now())
    decisions = DecisionLog(toy.store, toy.clock)
    decision = decisions.open(toy.name, trigger="manual", action="retrain", status="training", champion_version="1")
    runner = DaskRunner({toy.name: toy.loaded}, clock, address=local.scheduler_address)
    try:
        runner.submit(job(toy, decision.decision_id, candidate="gated"))
        started = tmp_path / "fit-started"
        wait_until(lambda: started.exists() and started.read_text().strip(), "the gated fit to start", 60)
        assert runner.poll(decision.decision_id).status == "running"
        clock.advance(minutes=5, seconds=1)
        state = runner.poll(decision.decision_id)
        assert state.status == "failed"
        assert state.error.startswith("training timed out after 0:05:01 (loop.training_timeout 0:05:00); the Dask "
                                      "task was cancelled"), state.error
        decisions.update(decision.decision_id, status="failed", error=f"training failed: {state.error}")  # the tick
        (tmp_path / "gate-open").touch()  # the fit goes on to its end on the worker...
        wait_until(lambda: not any(client.run(lambda dask_worker: dask_worker.state.executing_count).values()),
                   "the cancelled fit to end on its worker", 60)
        # ... and registers nothing: its decision is no longer training.
        assert [v.version for v in toy.registry.tree(toy.loaded.config.registered_model)] == ["1"]
        assert runner.running() == {}
    finally:
        runner.shutdown()


def test_an_unreachable_scheduler_fails_the_job_with_its_address(toy) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    runner = DaskRunner({toy.name: toy.loaded}, toy.clock, address=address, connect_timeout=timedelta(seconds=0.5))
    runner.submit(job(toy, "d-nowhere"))
    assert runner.running() == {"d-nowhere": toy.name}
    state = runner.poll("d-nowhere")
    assert state.status == "failed"
    assert state.error.startswith(f"the Dask scheduler at {address} is unreachable (Timed out trying to connect to "
                                  f"{address} after 0.5 s)"), state.error
    assert runner.running() == {} and runner.poll("d-nowhere").status == "unknown"
    runner.shutdown()


def test_a_scheduler_lost_mid_job_fails_it_and_the_next_submit_finds_it_unreachable(toy, tmp_path: Path) -> None:
    folder = tmp_path / "cluster"
    folder.mkdir()
    cluster = DaskCluster(folder, workers=1)  # its own scheduler: this one is killed
    runner = DaskRunner({toy.name: toy.loaded}, toy.clock, address=cluster.address,
                        connect_timeout=timedelta(seconds=1))
    try:
        cluster.wait_for_workers(1)
        runner.submit(job(toy, "d-orphan", candidate="gated"))
        wait_until(lambda: (tmp_path / "fit-started").exists(), "the gated fit to start", 60)
        cluster.kill_scheduler()
        state = finished(runner, "d-orphan", "the runner to notice the lost scheduler", 30)
        assert state.status == "failed"
        assert state.error.startswith(f"the Dask scheduler at {cluster.address} was lost while the job ran"), \
            state.error
        runner.submit(job(toy, "d-next"))
        assert runner.poll("d-next").error.startswith(f"the Dask scheduler at {cluster.address} is unreachable")
        assert runner.running() == {}
    finally:
        runner.shutdown()
        cluster.cleanup()


def test_build_runner_sends_each_model_where_its_executor_says(toy, tmp_path: Path) -> None:
    dask = tmp_path / "on-dask.yaml"
    dask.write_text(toy.path.read_text().replace(f"model: {toy.name}", "model: on-dask").replace(
        "training_timeout: 5m,", "training_timeout: 5m, executor: {kind: dask, address: tcp://scheduler:8786},"))
    on_dask = load_policy(dask, environ={})
    assert on_dask.config.loop.executor.address == "tcp://scheduler:8786"
    assert isinstance(build_runner({toy.name: toy.loaded}, toy.clock), ProcessRunner)
    alone = build_runner({"on-dask": on_dask}, toy.clock)
    assert isinstance(alone, DaskRunner) and alone.address == "tcp://scheduler:8786"
    mixed = build_runner({toy.name: toy.loaded, "on-dask": on_dask}, toy.clock)
    assert isinstance(mixed, RoutedRunner)
    assert isinstance(mixed.by_model[toy.name], ProcessRunner) and isinstance(mixed.by_model["on-dask"], DaskRunner)
    assert mixed.running() == {} and mixed.poll("nobody").status == "unknown"
    mixed.shutdown()
