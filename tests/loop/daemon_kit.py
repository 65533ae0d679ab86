"""Real ``driftpilot run`` daemons under test: a bootstrapped toy model, the daemon subprocess, and bounded polls.

The test process bootstraps the model (real store, real MLflow on SQLite) on the system clock, starts the daemon
with the venv's ``driftpilot`` script in the test's folder, and watches what it does through the same tables and
registry the CLI reads (decision log, leases, loop state, aliases). Every wait is a poll with a deadline that fails
with the daemon's log; every daemon is killed with its whole process group (training workers included) at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from controller.actions.bootstrap import bootstrap
from controller.actions.datafiles import features_from_table, target_from_table
from controller.actions.model_registry import open_registry
from controller.clock import SystemClock
from controller.config import LoadedPolicy
from controller.loop.rules import ManualRequest
from controller.loop.state import LoopState, load_state, request_manual
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.control import Decision, DecisionLog, Lease, Leases
from lineage import ModelRegistry
from tests.policy_kit import write_policy_file
from tests.ports import free_port
from tests.toy import toy_table

REPO = Path(__file__).resolve().parents[2]
DRIFTPILOT = Path(sys.executable).with_name("driftpilot")
GATED = "tests.loop.gated_estimator.GatedClassifier"

T = TypeVar("T")

POLICY = """\
model: {name}
task: classification
target: {{name: y, classes: [0, 1]}}
features:
  x1: numeric
  x2: numeric
  color: {{type: categorical, required: false}}
storage: {{url: "{storage}"}}
mlflow: {{tracking_uri: "{tracking}", artifact_location: {artifacts}}}
estimator: {{class: sklearn.linear_model.LogisticRegression}}
bootstrap: {{holdout_fraction: 0.25}}
retrain: {{holdout_fraction: 0.25, min_rows: 40}}
serving: {{reload_interval_s: 0.2}}
loop: {{tick: 1s, cooldown: 1h, lease_ttl: {lease_ttl}, min_matured_rows: 100, data_drift_every_rows: 100,
        max_retrains_per_day: 20, training_timeout: 5m, backoff: {{initial: 2s, max: 8s}}{loop_extra}}}
gate: {{min_rows: 60}}
probation: {{enabled: false}}
monitors:
  data_drift: {{current: {{last_rows: 200}}, sample_cap: 1000}}
  concept_drift: {{detector: adwin}}
  performance: {{window_rows: 200, min_labels: 60, max_drop: 0.1}}
rules:
{rules}
{extra}
"""

DRIFT_RULE = """\
  - name: drift
    when: {concept_drift: drift}
    do: {strategy: auto}
"""

#: A manual request trains only the gated pool member (stateless on all rows): slow until the gate file exists.
GATED_RULES = """\
  - name: by-hand
    when: manual
    do: {strategy: stateless, window: all, candidates: [gated]}
"""


def gated_candidate(folder: Path) -> str:
    return f"""\
candidates:
  - name: gated
    estimator:
      class: {GATED}
      params: {{gate_file: "{folder / 'gate-open'}", started_file: "{folder / 'fit-started'}"}}
      allow_packages: [tests]
"""


_SHARED: dict[str, Path] = {}


def shared_mlflow_dir(tmp_path_factory: Any) -> Path:
    """One MLflow store for all daemon tests of a session (each test has its own model name): setting up MLflow's
    schema on a fresh SQLite file costs seconds."""
    if "mlflow" not in _SHARED:
        _SHARED["mlflow"] = tmp_path_factory.mktemp("daemon-mlflow")
    return _SHARED["mlflow"]


# ------------------------------------------------------------------------------------------------------ the model


@dataclass
class Toy:
    """A bootstrapped model, seen from the test process through the store and registry the daemon uses."""

    path: Path
    loaded: LoadedPolicy
    store: EventStore
    registry: ModelRegistry
    clock: SystemClock = field(default_factory=SystemClock)
    ids: Iterable[int] = field(default_factory=itertools.count)

    @property
    def name(self) -> str:
        return self.loaded.config.model

    def decisions(self, actions: Sequence[str] | None = None) -> list[Decision]:
        return DecisionLog(self.store, self.clock).list(self.name, limit=None, actions=actions)

    def decision(self, decision_id: str) -> Decision:
        found = DecisionLog(self.store, self.clock).get(decision_id)
        assert found is not None, decision_id
        return found

    def lease(self) -> Lease | None:
        return Leases(self.store, self.clock).current(self.name)

    def state(self) -> LoopState:
        return load_state(self.store, self.name)

    def aliases(self) -> dict[str, str]:
        return self.registry.aliases(self.loaded.config.registered_model)

    def request_retrain(self, note: str = "test") -> None:
        """What `driftpilot retrain` does when a daemon holds the model: queue a request for its next tick."""
        request_manual(self.store, self.name, ManualRequest(requested_at=self.clock.now(), note=note))

    def serve(self, table: pd.DataFrame) -> list[tuple[str, int]]:
        """Log the champion's predictions for ``table`` into the store (as a serving replica would)."""
        version = self.registry.champion_version(self.loaded.config.registered_model)
        model = self.registry.load(self.loaded.config.registered_model, version=version).model
        predicted = model.predict(table[["x1", "x2", "color"]])
        ids = [f"live-{next(self.ids)}" for _ in range(len(table))]
        self.store.add_predictions(self.name, [
            PredictionRecord({"x1": float(r.x1), "x2": float(r.x2), "color": r.color}, self.clock.now(),
                             prediction=int(p), prediction_id=pid, model_version=version)
            for pid, r, p in zip(ids, table.itertuples(), predicted, strict=True)])
        return list(zip(ids, table.y.astype(int).tolist(), strict=True))

    def label(self, pairs: list[tuple[str, int]]) -> None:
        self.store.add_labels(self.name, [LabelRecord(pid, y) for pid, y in pairs])

    def stream(self, table: pd.DataFrame, batch: int = 100) -> None:
        """Predictions batch by batch; each batch's labels arrive after the next batch's predictions."""
        late: list[tuple[str, int]] = []
        for start in range(0, len(table), batch):
            pairs = self.serve(table.iloc[start:start + batch])
            self.label(late)
            late = pairs
        self.label(late)


def make_toy(folder: Path, name: str, *, storage: str | None = None, mlflow_dir: Path | None = None,
             tracking: str | None = None, rules: str = DRIFT_RULE, extra: str = "", lease_ttl: str = "10s",
             bootstrap_rows: int = 400, do_bootstrap: bool = True, proxied_artifacts: bool = False,
             loop_extra: str = "") -> Toy:
    """Write the policy file ``<folder>/<name>.yaml`` and bootstrap version 1 (concept "a") as champion.

    ``proxied_artifacts``: no artifact location (a tracking server's own store, through the server);
    ``loop_extra``: more keys of the ``loop`` section, e.g. ``executor: {kind: dask, address: ...}``."""
    mlflow_dir = mlflow_dir or folder / "mlflow"
    path = write_policy_file(folder, name, POLICY.format(
        name=name, storage=storage or f"sqlite:///{folder / 'events.db'}",
        tracking=tracking or f"sqlite:///{mlflow_dir / 'mlflow.db'}", lease_ttl=lease_ttl, rules=rules,
        extra=extra, artifacts="null" if proxied_artifacts else f'"{mlflow_dir}/artifacts"',
        loop_extra=f", {loop_extra}" if loop_extra else ""))
    loaded = load_policy(path, environ={})
    clock = SystemClock()
    store = EventStore.from_url(loaded.config.storage.url, clock)
    if not do_bootstrap:
        return Toy(path, loaded, store, None, clock)  # type: ignore[arg-type]
    registry = open_registry(loaded.config, clock)
    table = toy_table(bootstrap_rows, seed=0)
    bootstrap(loaded, features_from_table(table, loaded.config, "t"), target_from_table(table, loaded.config, "t"),
              store=store, registry=registry, clock=clock)
    return Toy(path, loaded, store, registry, clock)


# ----------------------------------------------------------------------------------------------------- the daemon


class Daemon:
    """One ``driftpilot run`` subprocess in its own process group (its training workers are in it too)."""

    def __init__(self, folder: Path, configs: Sequence[Path], *, label: str = "daemon", api: bool = False,
                 scheduler_db: str | None = None, log_level: str = "INFO") -> None:
        self.folder = folder
        self.label = label
        self.port = free_port() if api else None
        self.log = folder / f"{label}.log"
        command = [str(DRIFTPILOT), "--log-level", log_level, "run"]
        for config in configs:
            command += ["--config", str(config)]
        command += ["--port", str(self.port)] if api else ["--no-api"]
        if scheduler_db:
            command += ["--scheduler-db", scheduler_db]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        with open(self.log, "a") as out:
            out.write(f"=== {' '.join(command)}\n")
            out.flush()
            self.proc = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def owns(self, owner: str | None) -> bool:
        """Whether a lease holder / decision owner (``host:pid:suffix``) is this daemon."""
        return owner is not None and owner.split(":")[-2] == str(self.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (uvicorn's own lines are skipped)."""
        lines = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return lines

    def wait_until(self, condition: Callable[[], T], what: str, timeout_s: float = 60.0) -> T:
        return wait_until(condition, what, timeout_s, watch=[self])

    def wait_http(self, path: str = "/readyz", timeout_s: float = 90.0) -> None:
        import httpx

        def answers() -> bool:
            try:
                return httpx.get(self.url + path, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        self.wait_until(answers, f"{self.label} answers 200 on {path}", timeout_s)

    def terminate(self, timeout_s: float = 30.0) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the graceful stop took (fails after ``timeout_s``)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.label} did not stop within {timeout_s} s of SIGTERM:\n"
                                 f"{tail(self.output())}") from None
        return code, time.monotonic() - started

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        """The finalizer: kill the whole process group (the daemon and any worker it left), never anything else."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)


def wait_until(condition: Callable[[], T], what: str, timeout_s: float = 60.0, *,
               watch: Sequence[Daemon] = ()) -> T:
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout_s`` or as soon as a
    watched daemon exits, with its log."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        for daemon in watch:
            if daemon.proc.poll() is not None:
                raise AssertionError(f"{daemon.label} exited with {daemon.proc.returncode} while waiting for "
                                     f"{what}:\n{tail(daemon.output())}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {d.label}:\n{tail(d.output())}" for d in watch)
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{logs}")
        pause.wait(0.2)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie (an orphan waits for PID 1 to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def worker_pids(folder: Path) -> list[int]:
    """Process ids of the training workers that entered the gated estimator's fit, in order."""
    started = folder / "fit-started"
    return [int(line) for line in started.read_text().split()] if started.exists() else []
