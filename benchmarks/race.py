"""Benchmark: what a race costs a controller tick (issue target: a tick with 6 racers and 100 new rows <= 50 ms).

    nice -n 10 .venv/bin/python benchmarks/race.py            # 60 + 300 measured ticks per variant (~4 min)
    nice -n 10 .venv/bin/python benchmarks/race.py --quick    # a smoke run: smaller racers, 30 + 60 ticks (~1 min)

The issue put this target in benchmarks/controller.py; it is measured here, in its own script, because that file
measures the history and many-models questions and belongs to another area.

One model, built twice side by side in one process on the same traffic: **race** (the policy with its ``race:``
section) and **plain** (the same policy without it). Each has its own SQLite event store and MLflow SQLite registry in
a temp folder, and a Controller built as the daemon builds it (lease, decision log, the daemon's publisher). Both are
bootstrapped on the first ``--bootstrap-rows`` rows of River's Agrawal stream (classification function 0, numeric and
categorical features; only rows before the scenario ``agrawal-abrupt``'s change are used, so no switch is due) with a
scikit-learn champion, HistGradientBoosting (config/backtest-auto.yaml's pool member ``gb``). A retrain of it
(``Refresher.retrain("stateless")``, the controller's retrain verb, on the newest rows) is registered in both
registries and enters the race frozen through ``RaceDriver.enter`` (what the controller does after a retrain passes
the entry filter). The race then has 6 racers: the champion and the retrain (frozen, scikit-learn) and the four
online River racers of config/backtest-auto.yaml (ARF with 10 models, Hoeffding adaptive tree, scaled logistic
regression, no-change). No rules: no measured tick retrains; the script refuses a measured tick that proposed,
decided, switched or changed the racers.

Traffic, on a ManualClock that moves one minute per tick (``loop.tick``): before tick k the labels of the rows logged
two ticks ago arrive; tick k reads the rows logged since tick k-1 (the racers predict them) and those labels (they
score the racers, feed the duels, teach the online racers); after the tick the champion serves the next rows, logged
in both stores. Two regimes: 100 new rows and 100 matured labels per tick (the target), then 1 and 1 (the backtest's
per-row regime). Race and plain ticks alternate within each repetition (which goes first alternates too).

Measured per tick: ``Controller.tick(now)`` wall (perf_counter) and CPU (process_time), medians and spreads; the ratio
race / plain per repetition. Breakdown: timer wrappers put at run time around the real methods of these objects only
(the store's reads and writes, ``RaceDriver.tick``/``save``, ``Race.score``/``mature``/``judge``/``_learn``, every
racer's ``predict_records``/``learn_records``, the observer, the rules, the MLflow alias read); each part's time is
its own, without the wrapped calls inside it. Full garbage collections are timed apart (``gc.callbacks``): they pause
whichever part runs. cProfile over separate ticks (``--profile-ticks``).

Writes docs/benchmarks-race.md (or --out); a hand-written analysis below the marker survives a re-run.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import logging
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_kit

bench_kit.one_thread_per_process()
REPO = bench_kit.repo_first()

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from tqdm import tqdm  # noqa: E402

from controller.actions.bootstrap import bootstrap  # noqa: E402
from controller.actions.model_registry import open_registry  # noqa: E402
from controller.actions.refresh import Refresher  # noqa: E402
from controller.api.serving import predictor_for  # noqa: E402
from controller.backtest.result import EVENT_TIME, ReplayStream  # noqa: E402
from controller.backtest.streams import scenario  # noqa: E402
from controller.clock import ManualClock  # noqa: E402
from controller.config import LoadedPolicy  # noqa: E402
from controller.loop.controller import Controller, TickReport  # noqa: E402
from controller.loop.daemon import publisher_for  # noqa: E402
from controller.policy_loader import load_policy  # noqa: E402
from controller.race.driver import STATE_KEY  # noqa: E402
from controller.store import EventStore, LabelRecord, PredictionRecord  # noqa: E402
from controller.store.control import DecisionLog, Leases  # noqa: E402
from controller.store.events import Sealing  # noqa: E402

ANALYSIS_MARKER = "<!-- analysis: written by hand, kept by benchmarks/race.py when it rewrites the tables -->"
TARGET_MS = 50.0
#: Agrawal's first concept (classification function 0: numeric and categorical features), rows before its change.
SCENARIO = "agrawal-abrupt"
RACERS = 6

# config/backtest-auto.yaml's pool member gb as the estimator, and its monitors, gate and race, without rules (so
# nothing retrains during the measured ticks). Data drift is off there too.
POLICY = """\
model: {name}
task: classification
target: {{name: y, classes: [0, 1]}}
features:
{features}
storage: {{url: "sqlite:///{folder}/events.db"}}
mlflow: {{tracking_uri: "sqlite:///{folder}/mlflow.db", artifact_location: "{folder}/mlartifacts"}}
estimator: {{class: sklearn.ensemble.HistGradientBoostingClassifier, params: {{max_iter: 100}}}}
bootstrap: {{holdout_fraction: 0.2}}
retrain:
  holdout_fraction: 0.25
  min_rows: 100
  stateless: {{window: {{kind: last_rows, rows: 3000}}}}
monitors:
  data_drift: {{enabled: false}}
  concept_drift: {{detector: adwin, params: {{delta: 0.01}}}}
  performance: {{window_rows: 500, min_labels: 200, max_drop: 0.05}}
loop: {{tick: 1m}}
gate: {{min_rows: 200, margin: {{absolute: 0.005}}, alpha: 0.05}}
"""

RACE = """\
race:
  racers:
    - name: arf
      estimator: {class: river.forest.ARFClassifier, params: {n_models: 10}}
    - name: hat
      estimator: {class: river.tree.HoeffdingAdaptiveTreeClassifier}
    - name: logreg
      estimator:
        pipeline: [{class: river.preprocessing.StandardScaler}, {class: river.linear_model.LogisticRegression}]
    - name: no-change
      estimator: {class: river.dummy.NoChangeClassifier}
  past_versions: 3
  alpha: 0.05
  margin: {absolute: 0.005}
  max_racers: 10
  # An undecided frozen challenger retires after challenger_rows paired rows (default 5,000: 50 ticks of 100 rows);
  # raised so the retrain races through every measured tick. Nothing a tick computes depends on it.
  challenger_rows: 50000
"""


# ----------------------------------------------------------------------------------------------------- timing


@dataclass
class Part:
    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0


class Timer:
    """Wraps methods of given objects (instance attributes: the class and every other object are untouched) and
    books each call's own time, without the wrapped calls made inside it, under a label."""

    def __init__(self) -> None:
        self.parts: dict[str, Part] = defaultdict(Part)
        self._stack: list[list[float]] = []   # [wall at start, cpu at start, wall of children, cpu of children]

    def wrap(self, obj: Any, attr: str, label: str) -> None:
        original = getattr(obj, attr)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [time.perf_counter(), time.process_time(), 0.0, 0.0]
            self._stack.append(frame)
            try:
                return original(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - frame[0], time.process_time() - frame[1]
                self._stack.pop()
                part = self.parts[label]
                part.wall += wall - frame[2]
                part.cpu += cpu - frame[3]
                part.calls += 1
                if self._stack:
                    self._stack[-1][2] += wall
                    self._stack[-1][3] += cpu

        setattr(obj, attr, timed)

    def take(self) -> dict[str, Part]:
        parts, self.parts = dict(self.parts), defaultdict(Part)
        return parts


class GcWatch:
    """Time spent in the interpreter's full (generation 2) garbage collections, wherever they start: they pause
    whatever runs, so they are not a part of the breakdown but are counted per tick apart."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0
        self._started: float | None = None
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self.count += 1
            self._started = None

    def take(self) -> tuple[int, float]:
        taken = (self.count, self.seconds)
        self.count, self.seconds = 0, 0.0
        return taken

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


GC_WATCH: GcWatch | None = None


# Labels of the breakdown, in the order of a tick. "race:" parts are inside RaceDriver.tick.
READ = "race: store read (recent_events: new rows + matured labels)"
SCORE = "race: Race.score bookkeeping (pending predictions)"
MATURE = "race: Race.mature bookkeeping (collect matured rows)"
JUDGE = "race: judge: per-row scores + duels (Race.judge, own time)"
LEARN = "race: Race._learn bookkeeping"
SAVE = "race: save: pickling state + standings (RaceDriver.save, own time)"
SAVE_WRITE = "race: save: write (put_states, one transaction)"
RACE_OTHER = "race: other (RaceDriver.tick own time: sampling, verdict, follow)"
ALIAS = "rest: MLflow alias read (every 5 min of clock)"
DECISIONS = "rest: decision log reads"
STATE_READ = "rest: loop state read (get_states)"
STATE_WRITE = "rest: state writes (put_state: loop state, detector)"
TO_WINDOW = "rest: race read -> monitors' window (RaceSeat.tick own time)"
OBSERVE = "rest: observer: concept drift + performance (own time)"
RULES = "rest: rules"
LEASE = "rest: lease"
REST_OTHER = "rest: other (Controller.tick own time)"
GC = "gc"   # full garbage collections during the tick (inside the other parts; reported apart)


def online_predict(key: str) -> str:
    return f"race: online predict: {key}"


def frozen_predict(key: str) -> str:
    return f"race: frozen predict: {key}"


def learn(key: str) -> str:
    return f"race: online learn: {key}"


def instrument(timer: Timer, controller: Controller) -> None:
    """The wrappers of one controller (race parts only when it races)."""
    store = controller.store
    timer.wrap(controller.registry, "champion_version", ALIAS)
    timer.wrap(controller.decisions, "newest_mark", DECISIONS)
    timer.wrap(controller.decisions, "in_flight_and_recent", DECISIONS)
    timer.wrap(store, "get_states", STATE_READ)
    timer.wrap(store, "put_state", STATE_WRITE)
    timer.wrap(controller.observer, "observe", OBSERVE)
    timer.wrap(controller.engine, "evaluate", RULES)
    if controller.leases is not None:
        timer.wrap(controller.leases, "acquire", LEASE)
    driver = controller.race
    if driver is None:
        return
    race = driver.race
    assert race is not None, "the race starts on the first tick: instrument after it"
    assert controller.seat is not None
    timer.wrap(controller.seat, "tick", TO_WINDOW)
    timer.wrap(driver, "tick", RACE_OTHER)
    timer.wrap(driver, "save", SAVE)
    timer.wrap(store, "recent_events", READ)
    timer.wrap(store, "put_states", SAVE_WRITE)
    timer.wrap(race, "score", SCORE)
    timer.wrap(race, "mature", MATURE)
    timer.wrap(race, "judge", JUDGE)
    timer.wrap(race, "_learn", LEARN)
    for racer in race.racers.values():
        if racer.online:
            timer.wrap(racer.model, "predict_records", online_predict(racer.key))
            timer.wrap(racer.model, "learn_records", learn(racer.key))
        else:
            timer.wrap(racer.model, "predict_records", frozen_predict(racer.key))


def wrapper_overhead() -> float:
    """Seconds one wrapped call adds (a wrapped no-op against the bare one)."""
    class Box:
        def noop(self) -> None:
            return None

    bare, wrapped, timer = Box(), Box(), Timer()
    timer.wrap(wrapped, "noop", "x")
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        bare.noop()
    mid = time.perf_counter()
    for _ in range(n):
        wrapped.noop()
    return max((time.perf_counter() - mid) - (mid - start), 0.0) / n


# ------------------------------------------------------------------------------------------------- the models


@dataclass
class Model:
    variant: str                 # "race" | "plain"
    loaded: LoadedPolicy
    store: EventStore
    controller: Controller
    timer: Timer = field(default_factory=Timer)

    @property
    def name(self) -> str:
        return self.loaded.config.model

    def tick(self, now: datetime) -> tuple[float, float, TickReport, dict[str, Part]]:
        self.timer.take()
        if GC_WATCH is not None:
            GC_WATCH.take()
        wall, cpu = time.perf_counter(), time.process_time()
        report = self.controller.tick(now)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        parts = self.timer.take()
        if GC_WATCH is not None:
            count, seconds = GC_WATCH.take()
            parts[GC] = Part(wall=seconds, calls=count)
        return wall, cpu, report, parts


def write_policy(folder: Path, name: str, stream: ReplayStream, race: bool) -> LoadedPolicy:
    folder.mkdir(parents=True, exist_ok=True)
    features = "\n".join(f"  {n}: {t}" for n, t in stream.spec.features.items())
    path = folder / f"{name}.yaml"
    path.write_text(POLICY.format(name=name, features=features, folder=folder) + (RACE if race else ""))
    return load_policy(path, environ={})


def build(folder: Path, variant: str, stream: ReplayStream, clock: ManualClock, bootstrap_rows: int) -> Model:
    loaded = write_policy(folder / variant, f"bench-{variant}", stream, race=variant == "race")
    policy = loaded.config
    # No sealing: the history stays far below one segment (20,000 rows beyond the 10,000 kept), and "off" keeps the
    # background sealer's checks out of the label writes.
    store = EventStore.from_url(policy.storage.url, clock, sealing=Sealing(mode="off"))
    registry = open_registry(policy, clock)
    frame = stream.frame.iloc[:bootstrap_rows].reset_index(drop=True)
    bootstrap(loaded, frame[list(stream.spec.features)], frame[stream.spec.target], store=store, registry=registry,
              clock=clock)
    controller = Controller(loaded, store, registry, clock, decisions=DecisionLog(store, clock),
                            leases=Leases(store, clock), owner=f"bench-{variant}",
                            publisher=publisher_for(loaded, store))
    return Model(variant, loaded, store, controller)


class Traffic:
    """Feeds both models the same rows: the champion serves them after each tick; their labels arrive before the
    tick after the next one (so a tick reads the rows logged since the last tick and the labels of the batch before)."""

    def __init__(self, models: list[Model], stream: ReplayStream, start: int, clock: ManualClock) -> None:
        self.models, self.clock = models, clock
        features = list(stream.spec.features)
        self.records = [{k: _plain(v) for k, v in row.items()} for row in stream.frame[features].to_dict("records")]
        self.targets = [int(v) for v in stream.frame[stream.spec.target]]
        self.position = start
        registry, name = models[0].controller.registry, models[0].loaded.config.registered_model
        version = registry.champion_version(name)
        model = registry.load(name, version=version).model
        self.version = version
        self.predictor = predictor_for(model, models[0].loaded.config.feature_types)
        self.due: list[LabelRecord] = []      # labels arriving before the next tick
        self.logged: list[LabelRecord] = []   # labels of the rows logged after the last tick

    def before_tick(self) -> datetime:
        now = self.clock.advance(minutes=1)
        if self.due:
            for model in self.models:
                model.store.add_labels(model.name, self.due)
        return now

    def after_tick(self, rows: int) -> None:
        start, stop = self.position, self.position + rows
        if stop > len(self.records):
            raise SystemExit(f"the stream ran out of rows at {stop}; the script sizes it, so this is a bug")
        records = self.records[start:stop]
        predicted = self.predictor.predict_rows(records)
        scores = predicted.scores or [None] * rows
        now = self.clock.now()
        for model in self.models:
            model.store.add_predictions(model.name, [
                PredictionRecord(features=record, event_time=now, prediction=value, scores=score,
                                 prediction_id=f"r{i}", model_version=self.version)
                for i, record, value, score in zip(range(start, stop), records, predicted.values, scores, strict=True)])
        self.due, self.logged = self.logged, [LabelRecord(f"r{i}", self.targets[i]) for i in range(start, stop)]
        self.position = stop


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def check(model: Model, report: TickReport, racers: Sequence[str] | None) -> None:
    """A measured tick must only observe (and race): no proposal, decision, switch, racer joining or leaving."""
    race = report.race or {}
    if report.error or report.proposal or report.decisions or report.skipped or race.get("joined") or \
            race.get("left"):
        raise SystemExit(f"a measured {model.variant} tick did more than observe and race: {report.to_dict()}")
    if racers is not None:
        now = sorted(model.controller.race.race.racers)
        if now != sorted(racers):
            raise SystemExit(f"the racers changed during the measured ticks: {sorted(racers)} -> {now}")


# ------------------------------------------------------------------------------------------------ measuring


@dataclass
class Regime:
    """The measured ticks of one regime (rows per tick)."""

    rows: int
    wall: dict[str, list[float]] = field(default_factory=lambda: {"race": [], "plain": []})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"race": [], "plain": []})
    parts: dict[str, list[dict[str, Part]]] = field(default_factory=lambda: {"race": [], "plain": []})
    scored: list[int] = field(default_factory=list)
    matured: list[int] = field(default_factory=list)
    profile: str = ""
    profile_ticks: int = 0

    def ratio(self, kind: str = "wall") -> list[float]:
        values = self.wall if kind == "wall" else self.cpu
        return [r / p for r, p in zip(values["race"], values["plain"], strict=True) if p > 0]


def run_regime(models: list[Model], traffic: Traffic, rows: int, warmup: int, reps: int, profile_ticks: int,
               racers: list[str]) -> Regime:
    regime = Regime(rows)
    race, plain = models
    for _ in tqdm(range(warmup), desc=f"{rows}-row ticks: warm-up", leave=False):
        now = traffic.before_tick()
        for model in models:
            model.controller.tick(now)
        traffic.after_tick(rows)
    for rep in tqdm(range(reps), desc=f"{rows}-row ticks: measured", leave=False):
        now = traffic.before_tick()
        for model in (models if rep % 2 == 0 else models[::-1]):
            wall, cpu, report, parts = model.tick(now)
            check(model, report, racers if model is race else None)
            regime.wall[model.variant].append(wall)
            regime.cpu[model.variant].append(cpu)
            regime.parts[model.variant].append(parts)
            if model is race:
                regime.scored.append(report.race["scored"])
                regime.matured.append(report.race["matured"])
        traffic.after_tick(rows)
    if profile_ticks:
        profiler = cProfile.Profile()
        for _ in tqdm(range(profile_ticks), desc=f"{rows}-row ticks: profiled", leave=False):
            now = traffic.before_tick()
            profiler.enable()
            report = race.controller.tick(now)
            profiler.disable()
            check(race, report, racers)
            check(plain, plain.controller.tick(now), None)
            traffic.after_tick(rows)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
        regime.profile, regime.profile_ticks = _trim_profile(text.getvalue()), profile_ticks
    return regime


def _trim_profile(text: str) -> str:
    lines = [line.replace(str(REPO) + "/", "") for line in text.strip().splitlines()]
    site = [i for i, line in enumerate(lines) if "ncalls" in line]
    lines = lines[site[0]:] if site else lines
    return "\n".join(re.sub(r"\S*/site-packages/", "", line) for line in lines)


# ---------------------------------------------------------------------------------------------------- report


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}" if seconds >= 0.001 or seconds == 0 else f"{seconds * 1000:.2f}"


def spread(values: Sequence[float]) -> str:
    """median (p10–p90, max) in ms."""
    q = np.quantile(values, [0.1, 0.9])
    return f"**{ms(median(values))}** ({ms(q[0])}–{ms(q[1])}, max {ms(max(values))})"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"load average: {load_average()}"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "controller", "lineage", "monitors", "trainers",
                                "benchmarks/race.py"], cwd=REPO, capture_output=True, text=True,
                               check=False).stdout.split("\n")
        changed = sorted(line[3:] for line in dirty if line.strip())
        return f"`{head}`" + (f" with uncommitted changes in the working tree to {', '.join(changed)}" if changed
                              else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def breakdown(out: list[str], regime: Regime, variant: str) -> None:
    """Per part: median and mean ms per tick (wall and CPU), calls per tick, share of the mean tick."""
    ticks = regime.parts[variant]
    n = len(ticks)
    labels = sorted({label for parts in ticks for label in parts if label != GC}, key=_order)
    mean_tick = sum(regime.wall[variant]) / n
    out.append("| part | wall ms, median | wall ms, mean | CPU ms, mean | calls per tick | share of the mean tick |")
    out.append("|---|---:|---:|---:|---:|---:|")
    booked_wall = [0.0] * n
    booked_cpu = [0.0] * n
    race_wall = [0.0] * n
    race_cpu = [0.0] * n
    for label in labels:
        wall = [parts.get(label, Part()).wall for parts in ticks]
        cpu = [parts.get(label, Part()).cpu for parts in ticks]
        calls = sum(parts.get(label, Part()).calls for parts in ticks) / n
        for i in range(n):
            booked_wall[i] += wall[i]
            booked_cpu[i] += cpu[i]
            if label.startswith("race:"):
                race_wall[i] += wall[i]
                race_cpu[i] += cpu[i]
        out.append(f"| {label} | {ms(median(wall))} | {ms(sum(wall) / n)} | {ms(sum(cpu) / n)} | {calls:.2f} | "
                   f"{sum(wall) / n / mean_tick:.0%} |")
    other_wall = [t - b for t, b in zip(regime.wall[variant], booked_wall, strict=True)]
    other_cpu = [t - b for t, b in zip(regime.cpu[variant], booked_cpu, strict=True)]
    out.append(f"| {REST_OTHER} | {ms(median(other_wall))} | {ms(sum(other_wall) / n)} | "
               f"{ms(sum(other_cpu) / n)} | 1 | {sum(other_wall) / n / mean_tick:.0%} |")
    if variant == "race":
        rest_wall = [t - r for t, r in zip(regime.wall[variant], race_wall, strict=True)]
        rest_cpu = [t - r for t, r in zip(regime.cpu[variant], race_cpu, strict=True)]
        out.append(f"| **the race's part (RaceDriver.tick, the race: rows above)** | **{ms(median(race_wall))}** | "
                   f"**{ms(sum(race_wall) / n)}** | **{ms(sum(race_cpu) / n)}** | 1 | "
                   f"**{sum(race_wall) / n / mean_tick:.0%}** |")
        out.append(f"| **the rest of the tick (rest: rows)** | **{ms(median(rest_wall))}** | "
                   f"**{ms(sum(rest_wall) / n)}** | **{ms(sum(rest_cpu) / n)}** | 1 | "
                   f"**{sum(rest_wall) / n / mean_tick:.0%}** |")
    out.append(f"| **whole tick** | **{ms(median(regime.wall[variant]))}** | **{ms(mean_tick)}** | "
               f"**{ms(sum(regime.cpu[variant]) / n)}** | 1 | 100% |")


def _order(label: str) -> tuple[int, str]:
    order = [READ, "race: online predict", SCORE, MATURE, "race: frozen predict", JUDGE, "race: online learn", LEARN,
             SAVE, SAVE_WRITE, RACE_OTHER, LEASE, STATE_READ, ALIAS, DECISIONS, TO_WINDOW, OBSERVE, RULES,
             STATE_WRITE]
    for i, prefix in enumerate(order):
        if label.startswith(prefix):
            return i, label
    return len(order), label


def split_race(regime: Regime) -> dict[str, tuple[list[float], list[float]]]:
    """Per measured race tick, wall and CPU of: the online racers' models, the frozen racers' models, the saves,
    driftpilot's own race work, and the race's whole part."""
    groups: dict[str, Callable[[str], bool]] = {
        "online racers: predict + learn (River)": lambda label: label.startswith(("race: online predict",
                                                                                   "race: online learn")),
        "  of which ARF (10 trees)": lambda label: label.endswith(": arf"),
        "frozen racers: predict (scikit-learn, batches of 20)": lambda label: label.startswith("race: frozen"),
        "saves (pickling + write)": lambda label: label in (SAVE, SAVE_WRITE),
        "driftpilot's own race work (read, bookkeeping, scores, duels)": lambda label: label in (
            READ, SCORE, MATURE, JUDGE, LEARN, RACE_OTHER),
        "the race's part, all": lambda label: label.startswith("race:"),
    }
    out = {}
    for name, member in groups.items():
        wall = [sum(p.wall for label, p in parts.items() if member(label)) for parts in regime.parts["race"]]
        cpu = [sum(p.cpu for label, p in parts.items() if member(label)) for parts in regime.parts["race"]]
        out[name] = (wall, cpu)
    return out


def race_share(regime: Regime) -> tuple[list[float], list[float]]:
    """Per measured race tick: the race's wall and CPU time (every race: part)."""
    wall = [sum(p.wall for label, p in parts.items() if label.startswith("race:")) for parts in regime.parts["race"]]
    cpu = [sum(p.cpu for label, p in parts.items() if label.startswith("race:")) for parts in regime.parts["race"]]
    return wall, cpu


def write_report(path: Path, args: argparse.Namespace, command: str, commit: str, regimes: list[Regime],
                 one_time: dict[str, float], seconds: float, uptime_start: str, uptime_end: str,
                 overhead: float, racers: list[dict[str, Any]], stream: ReplayStream, state_bytes: int) -> None:
    import mlflow
    import river
    import sklearn

    out = ["# Benchmark: what a race costs a controller tick", ""]
    out.append("The issue's target **\"a tick with 6 racers and 100 new rows ≤ 50 ms\"** was written against "
               "benchmarks/controller.py; it is measured here, by its own script, `benchmarks/race.py` "
               "(benchmarks/controller.py measures the history and many-models questions).")
    out.append("")
    out.append(f"Reproduce: `{command}` (from the repository root). Measured commit (at the start of the run): "
               f"{commit}.")
    out.append("")
    out.append(f"Python {platform.python_version()}, River {river.__version__}, scikit-learn {sklearn.__version__}, "
               f"MLflow {mlflow.__version__}, numpy {np.__version__}, {platform.machine()}, {platform.system()}; "
               f"{os.cpu_count()} cores shared with other jobs' long benchmarks; BLAS/OpenMP on 1 thread; run "
               f"{datetime.now(UTC):%Y-%m-%d}; total script time {seconds:.0f} s.")
    out.append("")
    out.append(f"Load: `uptime` at the start: `{uptime_start}`; at the end: `{uptime_end}`.")
    out.append("")
    out.append("## Set-up")
    out.append("")
    out.append(f"One model, built twice in one process on the same traffic: **race** (the policy with its `race:` "
               f"section) and **plain** (the same policy without it); each with its own SQLite event store (WAL, "
               f"synchronous=FULL) and MLflow SQLite registry in a temp folder, and a Controller built as the daemon "
               f"builds it (lease, decision log, publisher). Stream: River's Agrawal generator, classification "
               f"function 0 (the rows of scenario `{SCENARIO}` before its change; seed {args.seed}; features "
               f"{', '.join(f'{k} ({v})' for k, v in stream.spec.features.items())}). Bootstrap on its first "
               f"{args.bootstrap_rows:,} rows: champion v1 = HistGradientBoostingClassifier (max_iter 100; "
               f"config/backtest-auto.yaml's pool member `gb`). A stateless retrain of it (`Refresher.retrain`, on "
               f"the newest rows, registered as v2 in both registries) entered the race frozen through "
               f"`RaceDriver.enter`, as the controller enters a retrain that passed the entry filter. The online "
               f"racers are config/backtest-auto.yaml's; at the race's first tick they warm-started on the newest "
               f"{min(args.bootstrap_rows, 5000):,} labels (`race.warm_start_rows`). No rules: no measured tick "
               f"retrains; the script refuses a measured tick that proposed, decided, switched or changed the "
               f"racers. Monitors as in config/backtest-auto.yaml (data drift off, ADWIN concept drift, performance "
               f"over 500 rows).")
    out.append("")
    out.append("Racers after the measured ticks (the race's own standings):")
    out.append("")
    out.append("| racer | kind | origin | rolling accuracy | rows scored | labels learned | duel evidence (better) |")
    out.append("|---|---|---|---:|---:|---:|---:|")
    for r in racers:
        evidence = f"{r['evidence']:.3g}" if r.get("evidence") is not None else "—"
        rolling = f"{r['rolling']:.3f}" if r.get("rolling") is not None else "—"
        out.append(f"| {r['racer']}{' (champion)' if r['champion'] else ''} | {r['kind']} | {r['origin']} | "
                   f"{rolling} | {r['scored']:,} | {r['learned']:,} | {evidence} |")
    out.append("")
    out.append("Traffic, on a ManualClock moving one minute (`loop.tick`) per tick: before tick k the labels of the "
               "rows logged after tick k−2 arrive; tick k reads the rows logged after tick k−1 (the online racers "
               "predict them) and those labels (the racers are scored, the duels fed, the online racers learn); "
               "after the tick the champion serves the next rows (logged in both stores). Race and plain ticks "
               "alternate within each repetition (which goes first alternates too). Race settings are the "
               "defaults: `batch_rows` 20 (frozen racers predict matured rows 20 at a time), `persist_every` 1,000 "
               "labels (a save of the race state), so in the 100-row regime every 10th tick saves and in the "
               "1-row regime every 20th tick judges.")
    out.append("")
    out.append("## Result")
    out.append("")
    out.append("Per tick `Controller.tick(now)`: wall (perf_counter) and CPU (process_time), ms: **median** "
               "(p10–p90, max). Ratio = median over repetitions of race tick / plain tick of the same repetition.")
    out.append("")
    out.append("| regime | measured ticks | race: wall ms | race: CPU ms | plain: wall ms | plain: CPU ms | "
               "ratio race/plain (wall) | ratio (CPU) | race's part, wall ms | target |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for regime in regimes:
        rw, _ = race_share(regime)
        n = len(regime.wall["race"])
        if regime.rows == 100:
            target = ("**met**" if median(regime.wall["race"]) <= TARGET_MS / 1000 else "**missed**") + \
                f" (≤ {TARGET_MS:.0f} ms median wall; mean {ms(sum(regime.wall['race']) / n)} ms)"
        else:
            target = "—"
        out.append(f"| {regime.rows} new row{'s' if regime.rows > 1 else ''} + {regime.rows} matured "
                   f"label{'s' if regime.rows > 1 else ''} | {n} | {spread(regime.wall['race'])} | "
                   f"{spread(regime.cpu['race'])} | {spread(regime.wall['plain'])} | {spread(regime.cpu['plain'])} | "
                   f"**{median(regime.ratio('wall')):.2f}** | {median(regime.ratio('cpu')):.2f} | "
                   f"{spread(rw)} | {target} |")
    out.append("")
    out.append(f"Every measured race tick read {_counts(regimes)}. The breakdown's wrappers add about "
               f"{overhead * 1e6:.1f} µs per wrapped call (a wrapped no-op against a bare one), to both variants.")
    out.append("")
    for regime in regimes:
        for variant in ("race", "plain"):
            collected = [parts[GC].wall for parts in regime.parts[variant] if GC in parts and parts[GC].calls]
            if collected:
                out.append(f"Full (generation 2) garbage collections, {regime.rows}-row regime, {variant}: in "
                           f"{len(collected)} of {len(regime.parts[variant])} measured ticks, median "
                           f"{ms(median(collected))} ms (max {ms(max(collected))}) each time (inside the parts "
                           "below, not a part of their own; the two models share the process and its heap).")
            else:
                out.append(f"Full garbage collections, {regime.rows}-row regime, {variant}: none in the measured "
                           "ticks.")
            out.append("")
    out.append("One-time costs (single runs, s): " + "; ".join(f"{k} {v:.2f}" for k, v in one_time.items()) + ".")
    out.append("")
    out.append("### Where the race's time goes, and whether it grows")
    out.append("")
    out.append("The race's part split into the racers' own models (River and scikit-learn code), the saves, and "
               "driftpilot's own work (store read, bookkeeping, per-row scores and duels); ms per tick. First / last "
               "third: CPU medians over the first and the last third of the measured ticks (the online racers keep "
               "learning, so their models may grow; CPU time is the steadier measure on this shared machine).")
    out.append("")
    out.append("| regime | part | wall ms, median | CPU ms, median | wall ms, mean | first third, CPU ms | "
               "last third, CPU ms |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for regime in regimes:
        for label, values in split_race(regime).items():
            wall, cpu = values
            third = max(len(wall) // 3, 1)
            out.append(f"| {regime.rows} row{'s' if regime.rows > 1 else ''} | {label} | {ms(median(wall))} | "
                       f"{ms(median(cpu))} | {ms(sum(wall) / len(wall))} | {ms(median(cpu[:third]))} | "
                       f"{ms(median(cpu[-third:]))} |")
    out.append("")
    saves = [(parts.get(SAVE, Part()), parts.get(SAVE_WRITE, Part())) for regime in regimes
             for parts in regime.parts["race"] if parts.get(SAVE, Part()).calls]
    if saves:
        out.append(f"A save of the race state (every `persist_every` = 1,000 labels; {len(saves)} in the measured "
                   f"ticks): median {ms(median([a.wall + b.wall for a, b in saves]))} ms wall, "
                   f"{ms(median([a.cpu + b.cpu for a, b in saves]))} ms CPU, of which the write (one transaction) "
                   f"{ms(median([b.wall for _, b in saves]))} ms wall; the pickled state is "
                   f"{state_bytes / 1e6:,.1f} MB at the end of the run.")
        out.append("")
    for regime in regimes:
        out.append(f"## Breakdown: {regime.rows} new row{'s' if regime.rows > 1 else ''} per tick")
        out.append("")
        out.append("Each part's own time (the wrapped calls inside it are booked to themselves); `race:` parts are "
                   "inside `RaceDriver.tick`, `rest:` parts are the rest of `Controller.tick`. Medians of parts "
                   "do not add up to the median tick (saves and judges come every few ticks); means do.")
        out.append("")
        out.append("**race** model:")
        out.append("")
        breakdown(out, regime, "race")
        out.append("")
        out.append("**plain** model (same traffic, same ticks):")
        out.append("")
        breakdown(out, regime, "plain")
        out.append("")
        if regime.profile:
            out.append(f"<details><summary>cProfile of {regime.profile_ticks} further race ticks of this regime "
                       "(top 25 by own time)</summary>")
            out.append("")
            out.append("```")
            out.append(regime.profile)
            out.append("```")
            out.append("")
            out.append("</details>")
            out.append("")
    kept = ""
    if path.is_file() and ANALYSIS_MARKER in path.read_text():
        text = path.read_text()
        kept = text[text.index(ANALYSIS_MARKER):]
    path.write_text("\n".join(out) + "\n" + kept)


def _counts(regimes: list[Regime]) -> str:
    parts = []
    for regime in regimes:
        scored, matured = sorted(set(regime.scored)), sorted(set(regime.matured))
        parts.append(f"{'/'.join(map(str, scored))} new row(s) and {'/'.join(map(str, matured))} matured label(s) "
                     f"({regime.rows}-row regime)")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1,000 bootstrap rows, 30 + 60 measured ticks, no profile")
    parser.add_argument("--reps", type=int, default=None, help="measured ticks of 100 rows per variant (>= 30)")
    parser.add_argument("--row-reps", type=int, default=None, help="measured ticks of 1 row per variant")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured ticks before each regime's measured ones")
    parser.add_argument("--row-warmup", type=int, default=None, help="unmeasured 1-row ticks before the measured ones")
    parser.add_argument("--profile-ticks", type=int, default=None, help="cProfiled race ticks per regime (0: none)")
    parser.add_argument("--bootstrap-rows", type=int, default=None,
                        help="rows of the bootstrap (the online racers warm-start on them); default 5,000, --quick 1,000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks-race.md")
    args = parser.parse_args()
    args.reps = args.reps or (30 if args.quick else 60)
    args.row_reps = args.row_reps or (60 if args.quick else 300)
    args.warmup = args.warmup or (3 if args.quick else 10)
    args.profile_ticks = (0 if args.quick else 10) if args.profile_ticks is None else args.profile_ticks
    args.bootstrap_rows = args.bootstrap_rows or (1000 if args.quick else 5000)
    command = " ".join(["nice -n 10", ".venv/bin/python", "benchmarks/race.py", *sys.argv[1:]])

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    global GC_WATCH
    GC_WATCH = GcWatch()
    uptime_start, commit = uptime(), git_commit()
    started = time.perf_counter()
    # The 1-row regime starts with the labels of 100-row batches in flight: its warm-up ticks absorb them.
    row_warmup = args.row_warmup or (20 if args.quick else 40)
    profile_rows = args.profile_ticks * 100 + args.profile_ticks * 2
    needed = (args.bootstrap_rows + (args.warmup + args.reps + 2) * 100 + profile_rows
              + row_warmup + args.row_reps + 10)
    stream = steady_stream(SCENARIO, needed, args.seed)
    print(f"uptime: {uptime_start}", flush=True)
    one_time: dict[str, float] = {}
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory(prefix="driftpilot-bench-race-") as tmp:
        folder = Path(tmp)
        clock = ManualClock(stream.frame[EVENT_TIME].iloc[0].to_pydatetime())
        t0 = time.perf_counter()
        models = [build(folder, variant, stream, clock, args.bootstrap_rows) for variant in ("race", "plain")]
        one_time["bootstrap of both models"] = time.perf_counter() - t0
        race, plain = models
        traffic = Traffic(models, stream, args.bootstrap_rows, clock)
        # First tick: the race starts (the champion joins frozen, the online racers warm-start on the newest labels).
        now = traffic.before_tick()
        wall, _, report, _ = race.tick(now)
        if report.error:
            raise SystemExit(f"the first race tick failed: {report.error}")
        one_time[f"first race tick (the race starts: the online racers warm-start on "
                 f"{min(args.bootstrap_rows, 5000):,} labels)"] = wall
        wall, _, report, _ = plain.tick(now)
        one_time["first plain tick"] = wall
        # A HistGradientBoosting retrain, registered in both registries; it enters the race frozen.
        t0 = time.perf_counter()
        for model in models:
            outcome = Refresher(model.loaded, model.store, model.controller.registry, clock).retrain(
                "stateless", trigger="manual", mark_challenger=False, comparison=False)
            if model is race:
                refused = race.controller.race.enter(clock.now(), outcome.version, origin="retrain")
                if refused:
                    raise SystemExit(f"the retrain v{outcome.version} could not enter the race: {refused}")
        one_time["HistGradientBoosting retrain in both registries + RaceDriver.enter"] = time.perf_counter() - t0
        traffic.after_tick(100)
        racers = sorted(race.controller.race.race.racers)
        if len(racers) != RACERS:
            raise SystemExit(f"expected {RACERS} racers, the race has {racers}")
        for model in models:
            instrument(model.timer, model.controller)
        overhead = wrapper_overhead()
        regimes = []
        print(f"racers: {', '.join(racers)}; 100-row regime: {args.warmup} warm-up + {args.reps} measured ticks",
              flush=True)
        regimes.append(run_regime(models, traffic, 100, args.warmup, args.reps, args.profile_ticks, racers))
        _print(regimes[-1])
        print(f"1-row regime: {row_warmup} warm-up + {args.row_reps} measured ticks", flush=True)
        regimes.append(run_regime(models, traffic, 1, row_warmup, args.row_reps, args.profile_ticks * 2, racers))
        _print(regimes[-1])
        standings = race.controller.race.standings()
        state_bytes = len(race.store.get_state(race.name, STATE_KEY) or b"")
        for model in models:
            model.store.dispose()
    seconds = time.perf_counter() - started
    uptime_end = uptime()
    print(f"uptime: {uptime_end}", flush=True)
    write_report(args.out, args, command, commit, regimes, one_time, seconds, uptime_start, uptime_end, overhead,
                 standings, stream, state_bytes)
    print(f"wrote {args.out} ({seconds:.0f} s)")


def steady_stream(name: str, rows: int, seed: int) -> ReplayStream:
    """The scenario built long enough that its first ``rows`` rows come before its first change point (one concept:
    no switch is due, so every measured tick is an ordinary one)."""
    length = rows
    while True:
        stream = scenario(name, rows=length, seed=seed)
        changes = stream.spec.change_points
        if not changes or changes[0] >= rows:
            return stream
        length *= 2


def _print(regime: Regime) -> None:
    rw, _ = race_share(regime)
    print(f"  {regime.rows}-row ticks: race {ms(median(regime.wall['race']))} ms wall / "
          f"{ms(median(regime.cpu['race']))} ms CPU, plain {ms(median(regime.wall['plain']))} ms / "
          f"{ms(median(regime.cpu['plain']))} ms; ratio {median(regime.ratio('wall')):.2f}; the race's part "
          f"{ms(median(rw))} ms", flush=True)


if __name__ == "__main__":
    main()
