"""``driftpilot run``: the HTTP API and an APScheduler scheduler that ticks every model, in one process.

* One interval job per model (``tick:<model>``, every ``loop.tick``) calls :meth:`Controller.tick` with the system
  clock's now. Jobs live in a persistent SQLAlchemy job store with textual references to this module (so a restart
  restores them), ``coalesce`` (missed ticks run once), ``max_instances=1`` (a slow tick is never doubled) and a
  misfire grace time.
* A heartbeat job renews this daemon's leases, so a long tick interval never lets another daemon take a model over.
* Training runs in worker processes (:class:`~controller.loop.runners.ProcessRunner`), or as tasks on a Dask cluster
  for a policy with ``loop.executor: {kind: dask, ...}`` (:class:`~controller.loop.dask_runner.DaskRunner`): a long
  retrain never stalls ingestion, ``/predict`` or the other models' ticks.
* SIGTERM/SIGINT stop it gracefully: the scheduler waits for running ticks, training workers are stopped and their
  decisions marked failed, and the leases are released so another daemon can take over at once.
* A model with a race publishes its online champion's state to the store after each tick that changed it
  (:class:`~controller.race.publish.StorePublisher`); every API process, this one included, serves it from there.
* A model whose MLflow is down does not stop the daemon nor hold up the other models: its registry connects on first
  use and pauses after a failure (:class:`DeferredRegistry`), so only that model's ticks fail (recorded, retried
  with backoff).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor

from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.loop.controller import Controller
from controller.loop.runners import build_runner
from controller.race.publish import NoPublisher, ServedStatePublisher, StorePublisher
from controller.store import EventStore
from controller.store.control import DecisionLog, Leases
from lineage import LineageError, LineageUnavailable

log = logging.getLogger("driftpilot.daemon")

# APScheduler stores textual references to the functions below; they find the running daemon here.
_RUNNING: Daemon | None = None
# How often the main thread of `driftpilot run --no-api` looks whether a stop signal came.
SIGNAL_POLL_S = 0.2


def tick_job(model: str) -> None:
    """The scheduled job of one model (textual reference ``controller.loop.daemon:tick_job``)."""
    if _RUNNING is not None:
        _RUNNING.tick(model)


def materialize_job(model: str, view: str) -> None:
    """A batch feature view's refresh (``controller.loop.daemon:materialize_job``)."""
    if _RUNNING is not None:
        _RUNNING.materialize(model, view)


def heartbeat_job() -> None:
    """Renew the leases this daemon holds (``controller.loop.daemon:heartbeat_job``)."""
    if _RUNNING is not None:
        _RUNNING.heartbeat()


class ClosingThreadPoolExecutor(ThreadPoolExecutor):
    """APScheduler's thread pool, except that a job handed over after :meth:`shutdown` is dropped, not a traceback.

    The scheduler thread checks "paused?" before it takes its job-store lock, so a timer that fires while the daemon
    stops can pass the check, wait for the lock that ``shutdown`` holds, and then submit to the closed pool
    (apscheduler issues #285, #985: ``RuntimeError: cannot schedule new futures after shutdown`` in the log).
    """

    _closed = False

    def shutdown(self, wait: bool = True) -> None:
        self._closed = True
        super().shutdown(wait)

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        if self._closed:
            log.debug("not running %s: the scheduler is shutting down", job.id)
            return
        try:
            super()._do_submit_job(job, run_times)
        except RuntimeError:
            if not self._closed:  # closed between the check and the submit; anything else is a real error
                raise
            log.debug("not running %s: the scheduler is shutting down", job.id)


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Daemon:
    """The controllers of a set of policies, ticked by APScheduler; build, :meth:`start`, then :meth:`stop`."""

    def __init__(self, policies: Sequence[LoadedPolicy], stores: dict[str, EventStore], registries: dict[str, Any],
                 clock: Clock, *, scheduler_url: str, max_workers: int = 2, owner: str | None = None) -> None:
        self.policies = {p.config.model: p for p in policies}
        self.stores = stores
        self.registries = registries
        self.clock = clock
        self.scheduler_url = scheduler_url
        self.owner = owner or new_owner_id()
        self.runner = build_runner(self.policies, clock, max_workers=max_workers)
        self.controllers = {
            model: Controller(loaded, stores[model], registries[model], clock, runner=self.runner,
                              decisions=DecisionLog(stores[model], clock), leases=Leases(stores[model], clock),
                              owner=self.owner, publisher=publisher_for(loaded, stores[model]))
            for model, loaded in self.policies.items()}
        self.scheduler: Any = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        global _RUNNING
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger

        if self.scheduler_url.startswith("sqlite:///"):
            Path(self.scheduler_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        _RUNNING = self
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=self.scheduler_url)},
            executors={"default": ClosingThreadPoolExecutor(max(2, min(16, len(self.controllers) + 1)))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone="UTC")
        self.scheduler.start(paused=True)
        wanted = {f"tick:{model}" for model in self.controllers} | {
            f"materialize:{model}:{view.name}" for model, loaded in self.policies.items()
            for view in loaded.config.feature_views.batch_views if view.refresh is not None}
        for job in self.scheduler.get_jobs():
            if job.id.startswith(("tick:", "materialize:")) and job.id not in wanted:
                job.remove()  # a model (or a view's schedule) no longer configured
        now = self.clock.now()
        shortest = min(loaded.config.loop.lease_ttl for loaded in self.policies.values())
        for model, loaded in self.policies.items():
            self.scheduler.add_job("controller.loop.daemon:tick_job", "interval", args=[model], id=f"tick:{model}",
                                   seconds=loaded.config.loop.tick.total_seconds(), next_run_time=now,
                                   replace_existing=True, name=f"tick {model}")
        for model, loaded in self.policies.items():
            for view in loaded.config.feature_views.batch_views:
                if view.refresh is None:
                    continue
                trigger = ({"trigger": "interval", "seconds": view.refresh.every.total_seconds()}
                           if view.refresh.every is not None else
                           {"trigger": CronTrigger.from_crontab(view.refresh.cron, timezone="UTC")})
                self.scheduler.add_job("controller.loop.daemon:materialize_job", args=[model, view.name],
                                       id=f"materialize:{model}:{view.name}", replace_existing=True,
                                       name=f"materialize {model}/{view.name}", **trigger)
        self.scheduler.add_job("controller.loop.daemon:heartbeat_job", "interval", id="heartbeat",
                               seconds=max(1.0, shortest.total_seconds() / 3), replace_existing=True,
                               name="renew leases")
        self.scheduler.resume()
        log.info("controller %s ticking models %s", self.owner, sorted(self.controllers),
                 extra={"owner": self.owner})

    def tick(self, model: str) -> None:
        if self._stopped.is_set():
            return
        report = self.controllers[model].tick(self.clock.now())
        level = logging.WARNING if report.error else logging.INFO if report.events else logging.DEBUG
        log.log(level, "tick %s: %s", model, report.error or "; ".join(report.events) or report.skipped or "idle",
                extra={"model": model, "champion": report.champion, "decisions": report.decisions})

    def materialize(self, model: str, view: str) -> None:
        """Refresh one batch feature view; a failure is logged and retried at the next scheduled run."""
        from controller.features.materialize import materialize_view
        from controller.features.serving import open_store

        if self._stopped.is_set():
            return
        policy = self.policies[model].config
        try:
            store = open_store(policy)
            try:
                report = materialize_view(policy.feature_views.view(view), policy.feature_types, store, self.clock)
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001 - one view's failure never stops the daemon or the other jobs
            log.warning("materialize %s/%s failed: %s", model, view, exc, extra={"model": model})
            return
        log.info("materialized %s/%s: %d entities", model, view, report.entities, extra={"model": model})

    def heartbeat(self) -> None:
        for model, controller in self.controllers.items():
            try:
                controller.leases.renew(model, self.owner, controller.policy.loop.lease_ttl)
            except Exception as exc:  # noqa: BLE001 - the next tick retries (and records) a store failure
                log.warning("could not renew the lease of %s: %s", model, exc)

    def stop(self) -> None:
        """Graceful stop: finish running ticks, stop training workers (their decisions fail), release leases."""
        global _RUNNING
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.scheduler is not None and self.scheduler.running:
            # Paused first, so a timer firing now skips its round; the few that already passed the check are dropped by
            # ClosingThreadPoolExecutor.
            self.scheduler.pause()
            self.scheduler.shutdown(wait=True)
        for decision_id, model in self.runner.running().items():
            self.controllers[model].decisions.update(
                decision_id, status="failed", error="stopped: the daemon was shut down while it trained")
        self.runner.shutdown()
        for model, controller in self.controllers.items():
            try:
                controller.leases.release(model, self.owner)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not release the lease of %s: %s", model, exc)
        _RUNNING = None
        log.info("controller %s stopped", self.owner)

    def wait(self) -> None:
        """Block until SIGTERM or SIGINT (for ``driftpilot run --no-api``), then :meth:`stop`."""
        signalled: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            # The main thread polls instead of blocking in Event.wait(): Python runs a handler only when the main
            # thread executes bytecode, and a signal the kernel hands to another thread (the scheduler's, a tick's)
            # does not wake a main thread blocked on a lock; seen as a daemon that kept ticking after SIGTERM.
            signal.signal(sig, lambda signum, _frame: signalled.append(signum))
        while not signalled:
            time.sleep(SIGNAL_POLL_S)
        log.info("received %s: stopping", signal.Signals(signalled[0]).name)
        self.stop()


def publisher_for(loaded: LoadedPolicy, store: EventStore) -> ServedStatePublisher:
    """Where the daemon publishes a model's live champion: the store, read by every API process (the in-process API
    too, so one path serves both), for a policy with a race; nowhere otherwise."""
    return StorePublisher(store) if loaded.config.race is not None else NoPublisher()


class DeferredRegistry:
    """A model's MLflow registry, connected on first use, that stops asking an unreachable MLflow for a while.

    Every attribute is the connected :class:`lineage.ModelRegistry`'s. While MLflow is unreachable, a use raises
    :class:`lineage.LineageUnavailable`, which fails that model's tick (recorded, retried with backoff) and its
    ``/predict`` reloads, but not the daemon's start, ingestion or the other models. After such a failure, uses fail
    at once for ``pause`` without asking MLflow: lineage runs every MLflow call of the process under one lock, and a
    call to a dead server holds it for its whole timeout and retries (seconds), so the champion watcher and the
    ticks of a model whose MLflow is down would otherwise keep every other model from reaching its own MLflow.
    """

    def __init__(self, connect: Callable[[], Any], clock: Clock, *, pause: timedelta = timedelta(seconds=30)) -> None:
        self._connect = connect
        self._clock = clock
        self._pause = pause
        self._registry: Any = None
        self._lock = threading.Lock()
        self._down: tuple[LineageUnavailable, datetime] | None = None  # the last failure, and until when it stands

    def connected(self) -> Any:
        self._fail_while_down()
        with self._lock:
            if self._registry is None:
                self._registry = self._guarded(self._connect)
            return self._registry

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attribute = getattr(self.connected(), name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._fail_while_down()
            return self._guarded(lambda: attribute(*args, **kwargs))

        return call

    def _guarded(self, action: Callable[[], Any]) -> Any:
        try:
            result = action()
        except LineageUnavailable as exc:
            self._down = (exc, self._clock.now() + self._pause)
            raise
        self._down = None
        return result

    def _fail_while_down(self) -> None:
        down = self._down
        if down is not None and self._clock.now() < down[1]:
            error, until = down
            raise LineageUnavailable(error.uri, f"{error} [not asked again before {until.isoformat(timespec='seconds')}"
                                                f", so that it cannot hold up the other models]")


def open_registries(policies: Sequence[LoadedPolicy], clock: Clock) -> dict[str, DeferredRegistry]:
    """One :class:`DeferredRegistry` per model, connected now where MLflow answers; where it does not, the error is
    logged and the model's ticks retry."""
    from controller.actions.model_registry import open_registry

    registries = {}
    for loaded in policies:
        registry = DeferredRegistry(lambda loaded=loaded: open_registry(loaded.config, clock), clock)
        try:
            registry.connected()
        except LineageError as exc:
            log.error("MLflow of %s is unavailable at start (its ticks fail and retry with backoff; ingestion and "
                      "the other models run): %s", loaded.config.model, exc, extra={"model": loaded.config.model})
        registries[loaded.config.model] = registry
    return registries


def keep_running_after_uvicorn_signals() -> None:
    """Call right before ``uvicorn.run``, so that a SIGTERM/SIGINT ends it and the caller's ``finally`` stops the
    daemon gracefully.

    uvicorn (0.29+) handles the signal, shuts the server down, restores the handlers it found and then re-raises the
    signal. With Python's default handlers that kills the process inside ``uvicorn.run`` (exit status -15): in-flight
    decisions were never marked failed, leases never released, workers left to their parent watchdog. Handlers that
    ignore the re-raised signal let ``uvicorn.run`` return; a second signal during the stop is ignored as well.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)


def default_scheduler_url() -> str:
    return f"sqlite:///{Path('.driftpilot/scheduler.db').resolve()}"
