"""The daemon's ProcessRunner with real spawned training workers: a worker past ``loop.training_timeout`` is killed
and its job fails with the reason, and a worker that dies without reporting fails its job with the signal that killed
it. The runner's clock is a ManualClock (the timeout is judged on it). The workers would train the gated estimator on
the real store, which never finishes here, so neither job can end by itself."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest

from controller.clock import ManualClock
from controller.loop.runners import ProcessRunner, TrainingJob
from tests.loop.daemon_kit import GATED_RULES, gated_candidate, make_toy, process_gone, shared_mlflow_dir, wait_until
from tests.toy import toy_table


@pytest.mark.slow
def test_a_worker_past_its_timeout_is_killed_and_a_worker_that_dies_fails_its_job(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, model_name: str) -> None:
    toy = make_toy(tmp_path, model_name, rules=GATED_RULES, extra=gated_candidate(tmp_path),
                   mlflow_dir=shared_mlflow_dir(tmp_path_factory))
    toy.stream(toy_table(200, seed=5))
    clock = ManualClock(toy.clock.now())
    runner = ProcessRunner({toy.name: toy.loaded}, clock, max_workers=2)
    try:
        def job(decision_id: str) -> TrainingJob:
            return TrainingJob(decision_id=decision_id, model=toy.name, strategy="stateless", candidates=("gated",),
                               as_of=toy.clock.now(), trigger="manual", window={"kind": "all"},
                               timeout=timedelta(minutes=5))

        runner.submit(job("slow"))
        runner.submit(job("dies"))
        assert set(runner.running()) == {"slow", "dies"}
        # Neither can end by itself: the gated estimator waits for a file nobody creates.
        assert runner.poll("slow").status == runner.poll("dies").status == "running"

        dead = runner_pid_of(runner, "dies")
        os.kill(dead, signal.SIGKILL)  # as the kernel's OOM killer would
        died = wait_until(lambda: (state := runner.poll("dies")).status != "running" and state,
                          "the runner to notice the dead worker", 10)
        assert (died.status, died.error) == ("failed", ("the training worker was killed by SIGKILL before reporting (is "
                                                       "it out of memory? the kernel's OOM killer sends SIGKILL)"))
        assert process_gone(dead)

        clock.advance(minutes=5, seconds=1)  # past the timeout
        slow = runner_pid_of(runner, "slow")
        timed_out = runner.poll("slow")
        assert timed_out.status == "failed"
        assert timed_out.error.startswith("training timed out after 0:05:01 (loop.training_timeout 0:05:00)")
        assert process_gone(slow)
        assert runner.running() == {} and runner.poll("slow").status == "unknown"
    finally:
        runner.shutdown()  # kills whatever worker is left


def runner_pid_of(runner: ProcessRunner, decision_id: str) -> int:
    return runner._running[decision_id].process.pid  # which worker trains which job
