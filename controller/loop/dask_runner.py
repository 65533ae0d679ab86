"""Training jobs as tasks on a Dask cluster (``loop.executor: {kind: dask, address: tcp://scheduler:8786}``).

The adapter to ``distributed``: the only module that imports it. :class:`DaskRunner` is a
:class:`~controller.loop.runners.TrainingRunner` like :class:`~controller.loop.runners.ProcessRunner`; each job is one
task running :func:`run_dask_job`, which runs the process worker's own :func:`~controller.loop.runners.run_job`. The
task carries the job and the policy; the worker reads the window from the policy's event store by its URL and
registers through the policy's MLflow tracking URI, so nothing is shared by disk: the store must be one every worker
reaches (PostgreSQL; a SQLite file only when every worker runs on the daemon's machine) and MLflow a tracking server
(with ``--artifacts-destination``, artifacts go through it).

Failures become a failed :class:`~controller.loop.runners.JobState` with the cause in words, which the controller
records as a failed decision (a later trigger trains again, under the loop's cooldown and budget):

* the scheduler unreachable at submit, or lost while the job runs (the client's futures are cancelled);
* the worker running the job lost (``KilledWorker`` once the scheduler gives up on the task; with a scheduler that
  reschedules it, :func:`run_dask_job` refuses the second attempt: a job is trained at most once per decision);
* the job past ``loop.training_timeout``, cancelled (a superseded decision) or the daemon stopping.

Dask cannot interrupt a task that runs: a cancelled or timed-out job's fit goes on to its end on its worker, then
registers nothing, because :func:`run_job` registers only while the decision is still ``training``. Workers never move
aliases, so whatever happens a failed job leaves at most an unaliased version, and none of it is promoted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.loop.runners import JobState, TrainingJob, run_job

log = logging.getLogger("driftpilot.loop.dask")

KEY_PREFIX = "driftpilot-train-"
ATTEMPT_PREFIX = "driftpilot-attempt-"


@dataclass
class _Submitted:
    model: str
    client: Any                      # the connection it was submitted through (a new one replaces a lost one)
    future: Any
    started: datetime
    timeout: timedelta


class DaskRunner:
    """One Dask task per job on the scheduler at ``address``; connects on first use and again after a loss."""

    def __init__(self, policies: Mapping[str, LoadedPolicy], clock: Clock, *, address: str,
                 connect_timeout: timedelta = timedelta(seconds=10)) -> None:
        self.policies = dict(policies)
        self.clock = clock
        self.address = address
        self.connect_timeout = connect_timeout
        self._client: Any = None
        self._jobs: dict[str, _Submitted] = {}
        self._failed: dict[str, tuple[str, JobState]] = {}  # decision id -> (model, why it never ran)
        self._lock = threading.Lock()

    def submit(self, job: TrainingJob) -> None:
        with self._lock:
            try:
                client = self._connected()
                future = client.submit(run_dask_job, job, self.policies[job.model], key=KEY_PREFIX + job.decision_id,
                                       pure=False)
            except OSError as exc:  # distributed raises OSError("Timed out trying to connect to ...")
                error = (f"the Dask scheduler at {self.address} is unreachable ({exc}); the job was not submitted "
                         "(is `dask scheduler` running there? loop.executor.address)")
                log.warning("training %s not submitted: %s", job.decision_id, error)
                self._failed[job.decision_id] = (job.model, JobState("failed", error=error))
                return
            self._jobs[job.decision_id] = _Submitted(job.model, client, future, self.clock.now(), job.timeout)
            log.info("training %s submitted to the Dask scheduler at %s", job.decision_id, self.address)

    def poll(self, decision_id: str) -> JobState:
        with self._lock:
            if decision_id in self._failed:
                return self._failed.pop(decision_id)[1]
            submitted = self._jobs.get(decision_id)
            if submitted is None:
                return JobState("unknown")
            future = submitted.future
            status = future.status
            if status == "finished":
                try:
                    message = future.result(timeout=self.connect_timeout.total_seconds())
                except Exception as exc:  # noqa: BLE001 - the result could not be fetched: the job failed
                    return self._end(decision_id, f"its result could not be fetched from the cluster: "
                                                  f"{type(exc).__name__}: {exc}")
                self._finish(decision_id)
                return JobState.from_message(message)
            if status == "error":
                return self._end(decision_id, _error_of(future, self.connect_timeout))
            if status in ("cancelled", "lost") or submitted.client.status in ("closing", "closed"):
                return self._end(decision_id, self._lost(status, submitted.client.status))
            elapsed = self.clock.now() - submitted.started
            if elapsed > submitted.timeout:
                future.cancel()
                return self._end(decision_id, f"training timed out after {elapsed} (loop.training_timeout "
                                              f"{submitted.timeout}); the Dask task was cancelled (a fit already "
                                              "running finishes on its worker but registers nothing)")
            return JobState("running")

    def cancel(self, decision_id: str) -> None:
        """Cancel a job (a decision superseded by a severe change): it never registers a version."""
        with self._lock:
            self._failed.pop(decision_id, None)
            if decision_id in self._jobs:
                self._jobs[decision_id].future.cancel()
                self._finish(decision_id)

    def running(self) -> dict[str, str]:
        """decision id -> model of every job submitted and not yet reported."""
        with self._lock:
            return {**{d: s.model for d, s in self._jobs.items()}, **{d: m for d, (m, _) in self._failed.items()}}

    def shutdown(self) -> None:
        """Cancel every job and close the connection (a graceful stop marks their decisions failed first)."""
        with self._lock:
            self._failed.clear()
            for decision_id in list(self._jobs):
                self._jobs[decision_id].future.cancel()
                self._finish(decision_id)
            if self._client is not None:
                try:
                    self._client.close(timeout=self.connect_timeout.total_seconds())
                except Exception as exc:  # noqa: BLE001 - a scheduler already gone: nothing left to close
                    log.debug("closing the Dask client: %s", exc)
                self._client = None

    # ------------------------------------------------------------------------------------------------ helpers

    def _connected(self) -> Any:
        """The client, connected now if it is not (first use, or the scheduler was lost and its client closed)."""
        from distributed import Client

        if self._client is not None and self._client.status != "running":
            # Lost: its futures are cancelled already (and reported as such by poll); start over with a new one.
            old, self._client = self._client, None
            try:
                old.close(timeout=1)
            except Exception as exc:  # noqa: BLE001
                log.debug("closing the lost Dask client: %s", exc)
        if self._client is None:
            self._client = Client(self.address, timeout=self.connect_timeout.total_seconds(), set_as_default=False)
        return self._client

    def _lost(self, status: str, client: str) -> str:
        if client != "running":
            return (f"the Dask scheduler at {self.address} was lost while the job ran (client {client}); the worker's "
                    "fit, if it still runs, registers nothing")
        if status == "lost":
            return "the Dask worker holding the job's result was lost"
        return f"the Dask task was cancelled on the scheduler at {self.address} (restarted, or cancelled by hand)"

    def _end(self, decision_id: str, error: str) -> JobState:
        self._finish(decision_id)
        log.warning("training %s failed on the Dask cluster: %s", decision_id, error)
        return JobState("failed", error=error)

    def _finish(self, decision_id: str) -> None:
        submitted = self._jobs.pop(decision_id)
        submitted.future.release()
        if submitted.client.status == "running":
            from distributed import Event

            try:
                Event(ATTEMPT_PREFIX + decision_id, client=submitted.client).clear()  # the attempt marker, see below
            except Exception as exc:  # noqa: BLE001 - only a marker's memory on the scheduler
                log.debug("could not clear the attempt marker of %s: %s", decision_id, exc)


def _error_of(future: Any, timeout: timedelta) -> str:
    """Why a task erred, in words (the job itself reports its own exceptions as data: these are the cluster's)."""
    from distributed.scheduler import KilledWorker

    try:
        exc = future.exception(timeout=timeout.total_seconds())
    except Exception as again:  # noqa: BLE001
        return f"the Dask task failed and its error could not be fetched: {type(again).__name__}: {again}"
    if isinstance(exc, KilledWorker):
        worker = getattr(exc.last_worker, "address", None) or "its worker"
        return (f"the Dask worker running it was lost (KilledWorker: {worker} died while training; out of memory, "
                "or stopped)")
    return f"the Dask task failed on its worker: {type(exc).__name__}: {exc}"


def run_dask_job(job: TrainingJob, loaded: LoadedPolicy) -> dict[str, Any]:
    """The task: :func:`~controller.loop.runners.run_job` once per decision, on a worker that can reach the store.

    A scheduler configured to retry tasks whose worker died (``distributed.scheduler.allowed-failures``, 3 by default)
    would train the same decision again elsewhere; the attempt marker (a scheduler-side event named after the
    decision) turns that second attempt into a failure, so a lost worker fails the decision, as in the daemon's own
    worker processes, and the loop decides whether to train again.
    """
    from distributed import Event, get_worker

    worker = get_worker()
    attempt = Event(ATTEMPT_PREFIX + job.decision_id)
    if attempt.is_set():
        return {"status": "failed", "error": "the Dask worker that trained it was lost mid-training (the scheduler "
                                             f"started it again on {worker.address}; driftpilot trains a decision "
                                             "once: a later trigger retrains)"}
    attempt.set()
    config = loaded.config
    for what, url, instead in (("event store", config.storage.url, "storage.url postgresql+psycopg://..."),
                               ("MLflow store", config.mlflow.tracking_uri, "mlflow.tracking_uri http://mlflow:5000")):
        if _missing_sqlite_file(url):
            return {"status": "failed", "error": (
                f"the {what} {url} is not on Dask worker {worker.address} (a SQLite file is only reachable from its "
                f"own machine and folder): give the cluster one every worker reaches ({instead}), or use "
                "loop.executor kind local")}
    return run_job(job, loaded, only_while_training=True)


def _missing_sqlite_file(url: str) -> bool:
    if not url.startswith("sqlite:"):
        return False
    path = url.split(":///", 1)[-1]
    return bool(path) and path != ":memory:" and not Path(path).exists()
