"""Where training runs: in the tick's thread (tests, backtests, the CLI) or in a worker process (the daemon).

A :class:`TrainingJob` says what to train (strategy, window, candidates, as of which maturity cut). A runner takes
it with :meth:`submit` and reports on it with :meth:`poll`; the controller polls on every tick, so a long retrain
never blocks the tick thread, the API or the other models.

* :class:`InlineRunner` trains at once, inside ``submit`` (deterministic; what tests and backtests use).
* :class:`ProcessRunner` starts one spawned process per job, kills it after the job's timeout, and the child exits
  by itself when the daemon dies (it watches its parent), so a ``kill -9`` of the daemon leaves no orphan trainer.
* :class:`~controller.loop.dask_runner.DaskRunner` (``loop.executor: {kind: dask, address: ...}``) sends each job to a
  Dask cluster as one task running the same :func:`run_job`; :func:`build_runner` picks per model.
  Workers only *register* versions; aliases are moved by the controller, so an interrupted job can leave at most
  an unaliased version behind, never half-moved aliases.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from controller.actions.refresh import Refresher, RefreshError
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.errors import DriftpilotError
from controller.loop.results import CandidateResult
from controller.store import EventStore
from lineage import LineageError, ModelRegistry
from trainers import TrainerError, WindowConfig

log = logging.getLogger("driftpilot.loop.runners")


@dataclass(frozen=True)
class TrainingJob:
    """One decision's training: each candidate is trained with the same strategy on the same maturity cut."""

    decision_id: str
    model: str
    strategy: str                    # stateless | finetune
    candidates: tuple[str, ...]
    as_of: datetime
    trigger: str
    window: Mapping[str, Any] | None = None   # WindowConfig as JSON; None: the policy's stateless window
    drift_at: datetime | None = None
    timeout: timedelta = timedelta(minutes=30)
    champion_version: str | None = None       # the champion the decision was made against (None: the alias's now)


@dataclass(frozen=True)
class JobState:
    """A job as its runner last saw it. ``results`` are the candidates' results as plain JSON
    (:meth:`CandidateResult.to_dict`: what a worker sends back and what the decision's evidence stores);
    :meth:`candidate_results` reads them."""

    status: str                      # running | done | failed | unknown
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def candidate_results(self) -> list[CandidateResult]:
        return [CandidateResult.from_dict(body) for body in self.results]

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> JobState:
        """The job from what :func:`run_job` returned (through a pipe or from a Dask task)."""
        return cls(message["status"], message.get("results", []), message.get("error"))


class TrainingRunner(Protocol):
    def submit(self, job: TrainingJob) -> None: ...
    def poll(self, decision_id: str) -> JobState: ...
    def cancel(self, decision_id: str) -> None: ...
    def running(self) -> dict[str, str]: ...     # decision id -> model of every job submitted and not finished
    def shutdown(self) -> None: ...


def train_candidates(job: TrainingJob, loaded: LoadedPolicy, store: EventStore, registry: ModelRegistry,
                     clock: Clock) -> list[CandidateResult]:
    """Train and register one challenger per candidate (no alias). A candidate that cannot be trained is reported
    with its error; the others still run."""
    from pydantic import TypeAdapter

    window = TypeAdapter(WindowConfig).validate_python(dict(job.window)) if job.window else None
    refresher = Refresher(loaded, store, registry, clock)
    pool = loaded.config.pool_members()
    results = []
    for name in job.candidates:
        started = time.process_time()  # CPU seconds of this process: a retrain's compute cost (costs.compute_second)
        try:
            outcome = refresher.retrain(job.strategy, trigger=job.trigger, drift_at=job.drift_at,
                                        decision_id=job.decision_id, window=window, candidate=pool[name],
                                        as_of=job.as_of, mark_challenger=False, champion_version=job.champion_version,
                                        comparison=False)  # the gate logs the comparison, on the same rows
        except (RefreshError, TrainerError) as exc:
            results.append(CandidateResult.failed(name, str(exc)))
            continue
        results.append(CandidateResult.trained(name, outcome, cpu_seconds=round(time.process_time() - started, 3)))
    return results


class InlineRunner:
    """Trains in the caller's thread, inside :meth:`submit`; its results are plain JSON, as from the other runners."""

    def __init__(self, work: Callable[[TrainingJob], list[CandidateResult]]) -> None:
        self.work = work
        self._done: dict[str, JobState] = {}

    def submit(self, job: TrainingJob) -> None:
        try:
            self._done[job.decision_id] = JobState("done", [result.to_dict() for result in self.work(job)])
        except (DriftpilotError, LineageError, TrainerError) as exc:
            self._done[job.decision_id] = JobState("failed", error=str(exc))

    def poll(self, decision_id: str) -> JobState:
        return self._done.pop(decision_id, JobState("unknown"))

    def cancel(self, decision_id: str) -> None:
        self._done.pop(decision_id, None)

    def running(self) -> dict[str, str]:
        return {}  # a job ends inside submit

    def shutdown(self) -> None:
        self._done.clear()


# --------------------------------------------------------------------------------------- choosing by executor


def build_runner(policies: Mapping[str, LoadedPolicy], clock: Clock, *, max_workers: int = 2) -> TrainingRunner:
    """The daemon's runner: each model's jobs go where its ``loop.executor`` says (one :class:`ProcessRunner` for
    ``local``, one :class:`~controller.loop.dask_runner.DaskRunner` per scheduler address for ``dask``)."""
    groups: dict[tuple[str, str | None], dict[str, LoadedPolicy]] = {}
    for model, loaded in policies.items():
        executor = loaded.config.loop.executor
        groups.setdefault((executor.kind, getattr(executor, "address", None)), {})[model] = loaded
    runners: dict[tuple[str, str | None], TrainingRunner] = {}
    for (kind, address), members in groups.items():
        if kind == "local":
            runners[(kind, address)] = ProcessRunner(members, clock, max_workers=max_workers)
        else:
            from controller.loop.dask_runner import DaskRunner  # distributed is imported only when a policy uses it

            executor = next(iter(members.values())).config.loop.executor
            runners[(kind, address)] = DaskRunner(members, clock, address=executor.address,
                                                  connect_timeout=executor.connect_timeout)
    if len(runners) == 1:
        return next(iter(runners.values()))
    return RoutedRunner({model: runners[key] for key, members in groups.items() for model in members})


class RoutedRunner:
    """Several runners behind one: a job goes to its model's runner; a decision id is asked of every runner."""

    def __init__(self, by_model: Mapping[str, TrainingRunner]) -> None:
        self.by_model = dict(by_model)

    def _distinct(self) -> list[TrainingRunner]:
        return list({id(runner): runner for runner in self.by_model.values()}.values())

    def submit(self, job: TrainingJob) -> None:
        self.by_model[job.model].submit(job)

    def poll(self, decision_id: str) -> JobState:
        for runner in self._distinct():
            state = runner.poll(decision_id)
            if state.status != "unknown":
                return state
        return JobState("unknown")

    def cancel(self, decision_id: str) -> None:
        for runner in self._distinct():
            runner.cancel(decision_id)

    def running(self) -> dict[str, str]:
        return {k: v for runner in self._distinct() for k, v in runner.running().items()}

    def shutdown(self) -> None:
        for runner in self._distinct():
            runner.shutdown()


# ---------------------------------------------------------------------------------------------------- processes


@dataclass
class _Running:
    model: str
    process: Any
    conn: Any
    started: datetime
    timeout: timedelta


class ProcessRunner:
    """One spawned worker process per job, with a timeout; results come back through a pipe."""

    def __init__(self, policies: Mapping[str, LoadedPolicy], clock: Clock, *, max_workers: int = 2) -> None:
        import multiprocessing

        self.policies = dict(policies)
        self.clock = clock
        self.max_workers = max_workers
        self._context = multiprocessing.get_context("spawn")  # fork would copy the daemon's threads and sockets
        self._queued: list[TrainingJob] = []
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    def submit(self, job: TrainingJob) -> None:
        with self._lock:
            self._queued.append(job)
            self._start_queued()

    def poll(self, decision_id: str) -> JobState:
        with self._lock:
            self._start_queued()
            if any(job.decision_id == decision_id for job in self._queued):
                return JobState("running")
            running = self._running.get(decision_id)
            if running is None:
                return JobState("unknown")
            if running.conn.poll():
                try:
                    message = running.conn.recv()
                except EOFError:  # the worker died: its end of the pipe closed without a result
                    running.process.join(timeout=5)
                    message = {"status": "failed", "error": _died(running.process.exitcode)}
                self._finish(decision_id)
                return JobState.from_message(message)
            if not running.process.is_alive():
                code = running.process.exitcode
                self._finish(decision_id)
                return JobState("failed", error=_died(code))
            elapsed = self.clock.now() - running.started
            if elapsed > running.timeout:
                running.process.kill()
                self._finish(decision_id)
                return JobState("failed", error=f"training timed out after {elapsed} (loop.training_timeout "
                                                f"{running.timeout}); the worker was killed")
            return JobState("running")

    def cancel(self, decision_id: str) -> None:
        """Drop a queued job or kill a running one (a decision superseded by a severe change)."""
        with self._lock:
            self._queued = [job for job in self._queued if job.decision_id != decision_id]
            if decision_id in self._running:
                self._running[decision_id].process.kill()
                self._finish(decision_id)

    def running(self) -> dict[str, str]:
        """decision id -> model of every job started or queued."""
        with self._lock:
            return {**{decision_id: run.model for decision_id, run in self._running.items()},
                    **{job.decision_id: job.model for job in self._queued}}

    def shutdown(self) -> None:
        """Kill the workers (a graceful stop marks their decisions failed on the next start)."""
        with self._lock:
            self._queued.clear()
            for decision_id in list(self._running):
                self._running[decision_id].process.kill()
                self._finish(decision_id)

    def _start_queued(self) -> None:
        while self._queued and len(self._running) < self.max_workers:
            job = self._queued.pop(0)
            receiver, sender = self._context.Pipe(duplex=False)
            process = self._context.Process(target=_worker_main, name=f"driftpilot-train-{job.decision_id}",
                                            args=(job, self.policies[job.model], sender, os.getpid()))
            process.start()
            sender.close()  # the child holds its own copy; EOF reaches us if it dies
            self._running[job.decision_id] = _Running(job.model, process, receiver, self.clock.now(), job.timeout)
            log.info("training %s started in worker pid %s", job.decision_id, process.pid)

    def _finish(self, decision_id: str) -> None:
        running = self._running.pop(decision_id)
        running.process.join(timeout=5)
        running.conn.close()


def _died(exitcode: int | None) -> str:
    """Why a worker ended without a result, in words (a SIGKILL from the kernel's OOM killer is the usual one)."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (is it out of memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"the training worker was killed by {name} before reporting{hint}"
    return f"the training worker exited with code {exitcode} before reporting"


def _worker_main(job: TrainingJob, loaded: LoadedPolicy, conn: Any, parent_pid: int) -> None:
    """Entry point of a training worker process."""
    _exit_with_parent(parent_pid)
    try:
        conn.send(run_job(job, loaded))
    finally:
        conn.close()


def run_job(job: TrainingJob, loaded: LoadedPolicy, *, only_while_training: bool = False) -> dict[str, Any]:
    """What a training worker does, in a spawned process or a Dask task: open the policy's store and registry, train
    every candidate, report as plain data (``{"status": "done", "results": [...]}`` or ``{"status": "failed",
    "error": ...}``).

    With ``only_while_training`` a version is registered only while the job's decision is still ``training`` in the
    decision log: a worker that cannot be killed (a Dask task runs to its end) registers nothing for a decision that
    timed out, was superseded or was stopped meanwhile.
    """
    from controller.actions.model_registry import open_registry
    from controller.clock import SystemClock

    clock = SystemClock()
    store = None
    try:
        store = EventStore.from_url(loaded.config.storage.url, clock, migrate=False)
        registry = open_registry(loaded.config, clock)
        if only_while_training:
            registry = _RegisterWhileTraining(registry, store, clock, job.decision_id)
        results = train_candidates(job, loaded, store, registry, clock)
        return {"status": "done", "results": [result.to_dict() for result in results]}
    except Exception as exc:  # noqa: BLE001 - reported to the controller, which records the failed decision
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if store is not None:
            store.dispose()  # a Dask worker lives on: no pool per job left behind


class _RegisterWhileTraining:
    """A registry whose ``register`` first checks that the job's decision still waits for it (else RefreshError,
    which the job reports as that candidate's error); everything else is the wrapped registry's."""

    def __init__(self, registry: ModelRegistry, store: EventStore, clock: Clock, decision_id: str) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        self._decision_id = decision_id

    def register(self, *args: Any, **kwargs: Any) -> Any:
        from controller.store.control import DecisionLog

        decision = DecisionLog(self._store, self._clock).get(self._decision_id)
        if decision is not None and decision.status != "training":  # None: a job without a decision (tests, CLI)
            raise RefreshError(f"not registered: decision {self._decision_id} is {decision.status} "
                               f"({decision.error or 'no longer training'}) by the time training ended")
        return self._registry.register(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)


def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose daemon died (kill -9) stops within a second instead of finishing a decision nobody owns."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            threading.Event().wait(1.0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
