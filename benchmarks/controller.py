"""Benchmark: a controller tick's cost follows the new events, not the history (issue 8, item 7).

    .venv/bin/python benchmarks/controller.py                 # full: 10k vs 1M rows of history, 100 models (~7 min)
    .venv/bin/python benchmarks/controller.py --quick         # 10k vs 100k rows, 20 models (~1.5 min)
    .venv/bin/python benchmarks/controller.py --backend postgresql   # the event stores on PostgreSQL (127.0.0.1)

Part 1, history. One model, one policy (all three monitors on; rules that do not fire on the stationary stream, so no
tick retrains), built twice side by side in one process: with a small and a large history. History = a bootstrap
window (the first fifth, the champion's training window) plus logged champion predictions whose labels arrive 30
minutes later (the rest), written in batches of 10,000 through ``EventStore.add_predictions/add_labels`` on a
``ManualClock``. Measured, interleaved between the two sizes in every repetition (medians, and the ratio
large/small):

* an **idle tick** (nothing new since the last tick);
* an **active tick**: 1,000 new champion predictions and their 1,000 labels arrived since the last tick (the tick
  runs concept drift on them, performance on the newest matured rows and a data-drift check, since more than
  ``loop.data_drift_every_rows`` = 500 predictions arrived).

One-time costs, measured separately: the first tick of a controller on a history it never saw (re-base, reference
built) and its first tick with new labels (the concept detector consumes every labeled row the champion predicted);
building the data-drift reference sample from the champion's window, and reading it back from the store; a restart
(a new Controller object: the reference comes from the store); the first ticks after a new champion (a version
registered on the newest rows and promoted by hand: the monitors re-base, the reference is rebuilt). On PostgreSQL the
tables get ``ANALYZE`` after each bulk load (``--no-analyze`` to measure a planner without statistics).

Every store statement of the measured ticks is timed by kind (SQLAlchemy cursor events), so the report shows which
read, if any, grows with the history.

Part 2, many models. ``--models`` models on one store and one MLflow store, each with a small history, ticked like
the daemon ticks them (one Controller per model with a lease and a decision log); one round = one idle tick of every
model. Median of several rounds; one round is profiled with cProfile and broken down (MLflow registry calls, store
queries, statements per tick).

Writes docs/benchmarks-controller.md (or --out).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bench_kit

REPO = bench_kit.repo_first()

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from tqdm import tqdm

from controller.actions.bootstrap import bootstrap
from controller.actions.model_registry import open_registry
from controller.actions.training import FIRST_SEQ, LAST_SEQ
from controller.clock import ManualClock
from controller.config import LoadedPolicy
from controller.loop.controller import Controller, TickReport
from controller.loop.observe import REFERENCE_KEY, Observer
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.control import DecisionLog, Leases
from lineage import ModelRegistry

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ANALYSIS_MARKER = "<!-- analysis: written by hand, kept by benchmarks/controller.py when it rewrites the tables -->"
BATCH = 10_000
LABEL_DELAY = timedelta(minutes=30)
NUMERIC = [f"x{i}" for i in range(6)]
CATEGORICAL = {"c0": ["a", "b", "c"], "c1": ["u", "v"]}

POLICY = """\
model: {name}
task: classification
target: {{name: y, classes: [0, 1]}}
features:
{features}
storage: {{url: "{store_url}"}}
mlflow: {{tracking_uri: "{mlflow_uri}", artifact_location: "{artifacts}"}}
estimator:
  class: sklearn.linear_model.LogisticRegression
  params: {{max_iter: 200}}
bootstrap: {{holdout_fraction: 0.2}}
loop: {{tick: 1m, data_drift_every_rows: 500}}
monitors:
  data_drift: {{current: {{last_rows: 5000}}, sample_cap: 5000}}
  concept_drift: {{detector: adwin}}
  performance: {{window_rows: 1000, min_labels: 200}}
# Rules that cannot fire on this stationary stream: the measured ticks observe and decide, never retrain.
rules:
  - name: collapse
    when: {{performance_drop: {{relative: 0.5}}}}
    do: {{strategy: auto}}
  - name: volume
    when: {{new_labels: {{at_least: 1000000000}}}}
    do: {{strategy: auto}}
"""


# --------------------------------------------------------------------------------------------------- the stream


class Stream:
    """A stationary labeled stream (seeded): 6 numeric and 2 categorical features, y = a noisy linear concept."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> tuple[pd.DataFrame, np.ndarray]:
        rng = self.rng
        frame = pd.DataFrame({name: rng.normal(size=n) for name in NUMERIC})
        for name, values in CATEGORICAL.items():
            frame[name] = rng.choice(values, size=n)
        logit = frame.x0 + 0.5 * frame.x1 - 0.3 * frame.x2 + 0.5 * (frame.c0 == "a") + rng.normal(0, 0.5, size=n)
        return frame, (logit > 0).astype(int).to_numpy()


# ---------------------------------------------------------------------------------------------------- one model


@dataclass
class Bench:
    """One model under measurement: policy, store, registry, the champion's fitted model, a stream, a controller."""

    loaded: LoadedPolicy
    store: EventStore
    registry: ModelRegistry
    clock: ManualClock
    stream: Stream
    model: Any = None
    version: str = "1"
    controller: Controller | None = None
    next_id: int = 0
    owner: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:6]}")

    @property
    def name(self) -> str:
        return self.loaded.config.model

    def new_controller(self) -> Controller:
        """A controller as the daemon builds it: a lease and a decision log on the model's store."""
        self.controller = Controller(self.loaded, self.store, self.registry, self.clock,
                                     decisions=DecisionLog(self.store, self.clock),
                                     leases=Leases(self.store, self.clock), owner=self.owner)
        return self.controller

    def bootstrap(self, rows: int, progress: Callable[[int], None]) -> None:
        features, y = self.stream.batch(rows)
        step = (LABEL_DELAY / max(rows, 1))
        times = pd.Series([self.clock.now() - (rows - i) * step for i in range(rows)])
        bootstrap(self.loaded, features, pd.Series(y, name="y"), store=self.store, registry=self.registry,
                  clock=self.clock, event_times=times, progress=progress)
        self.version = self.registry.champion_version(self.name)
        self.model = self.registry.load(self.name, version=self.version).model

    def serve(self, rows: int) -> list[LabelRecord]:
        """Log ``rows`` champion predictions now (as /predict would); return their labels, to send later."""
        features, y = self.stream.batch(rows)
        proba = self.model.predict_proba(features)
        predicted = proba.argmax(axis=1)
        now = self.clock.now()
        ids = [f"p{self.next_id + i}" for i in range(rows)]
        self.next_id += rows
        records = [
            PredictionRecord(features=row, event_time=now, prediction=int(p),
                             scores={"0": float(s0), "1": float(s1)}, prediction_id=pid, model_version=self.version)
            for pid, row, p, s0, s1 in zip(ids, features.to_dict(orient="records"), predicted, proba[:, 0],
                                           proba[:, 1], strict=True)]
        self.store.add_predictions(self.name, records)
        return [LabelRecord(pid, int(label)) for pid, label in zip(ids, y, strict=True)]

    def label(self, labels: list[LabelRecord]) -> None:
        self.store.add_labels(self.name, labels)

    def tick(self) -> tuple[float, TickReport]:
        start = time.perf_counter()
        report = self.controller.tick(self.clock.now())
        elapsed = time.perf_counter() - start
        check(report)
        return elapsed, report


def check(report: TickReport) -> None:
    if report.error or report.proposal or report.decisions or report.skipped:
        raise SystemExit(f"a measured tick did more than observe: {report.to_dict()}")


def write_policy(folder: Path, name: str, store_url: str, mlflow_uri: str) -> LoadedPolicy:
    features = "\n".join([f"  {n}: numeric" for n in NUMERIC] + [f"  {n}: categorical" for n in CATEGORICAL])
    path = folder / f"{name}.yaml"
    path.write_text(POLICY.format(name=name, features=features, store_url=store_url, mlflow_uri=mlflow_uri,
                                  artifacts=folder / "mlartifacts"))
    return load_policy(path, environ={})


def build_history(bench: Bench, history: int, bar: tqdm) -> None:
    """The first fifth bootstraps the champion; the rest is champion traffic whose labels arrive 30 min later."""
    reference = max(history // 5, 500)
    bench.bootstrap(reference, bar.update)
    left = history - reference
    pending: list[LabelRecord] = []
    while left > 0:
        n = min(BATCH, left)
        bench.clock.advance(minutes=10)
        labels = bench.serve(n)
        bench.clock.advance(seconds=LABEL_DELAY.total_seconds())
        bench.label(labels)
        left -= n
        bar.update(n)
    del pending


# -------------------------------------------------------------------------------------------- counting queries


# What a store statement is, by its text: (label, substrings that must all be in it), first match wins.
STATEMENT_KINDS = [
    ("labeled_window after the cursor (the tick's one read of new rows)",
     ("SELECT labels.seq, labels.prediction_id", "ORDER BY labels.seq", "!DESC")),
    ("labeled_window, newest rows (the live metric's tail, after a start)",
     ("SELECT labels.seq, labels.prediction_id", "DESC")),
    ("labeled_count", ("SELECT count(*) AS count_1, max(labels.seq)",)),
    ("tail_start", ("SELECT labels.arrived_at", "JOIN predictions")),
    ("arrival of the cursor row (the arrival floor of a cursor read)", ("SELECT labels.arrived_at", "labels.seq =")),
    ("traffic_since", ("max(predictions.event_time)",)),
    ("predictions_frame (data-drift current window)", ("SELECT predictions.features",)),
    ("controller_state (loop state, detector, reference, manual)", ("controller_state",)),
    ("leases", ("leases",)),
    ("decisions", ("decisions",)),
]


def statement_kind(statement: str) -> str:
    for label, parts in STATEMENT_KINDS:
        if all((part[1:] not in statement) if part.startswith("!") else (part in statement) for part in parts):
            return label
    return "other (" + " ".join(statement.split())[:40] + ")"


class StatementCounter:
    """SQL statements executed per database (the event store vs MLflow's own engines), and the event store's
    statements timed by kind, for the breakdowns."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        event.listen(sa.engine.Engine, "before_cursor_execute", self._before)
        event.listen(sa.engine.Engine, "after_cursor_execute", self._after)

    @staticmethod
    def _database(conn: Any) -> str:
        return "mlflow" if "mlflow" in (conn.engine.url.database or "") else "store"

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, *_: Any) -> None:
        self.counts[self._database(conn)] += 1
        if context is not None:
            context._bench_started = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, *_: Any) -> None:
        started = getattr(context, "_bench_started", None)
        if started is not None and self._database(conn) == "store":
            self.seconds[statement_kind(statement)] += time.perf_counter() - started

    @contextmanager
    def measure(self) -> Iterator[Counter[str]]:
        """Statements per database, plus ``sql:<kind>`` seconds of the store's statements, within the block."""
        before, before_seconds = Counter(self.counts), Counter(self.seconds)
        found: Counter[str] = Counter()
        yield found
        found.update({k: v - before.get(k, 0) for k, v in self.counts.items()})
        found.update({f"sql:{k}": v - before_seconds.get(k, 0) for k, v in self.seconds.items()
                      if v - before_seconds.get(k, 0) > 0})


# -------------------------------------------------------------------------------------------------- helpers


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def spread_ms(values: list[float]) -> str:
    return f"{ms(median(values))} ({ms(min(values))}–{ms(max(values))})"


def rows_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def git_commit() -> str:
    """HEAD, and which files that a tick runs differ from it in the working tree (a shared tree: other engineers'
    uncommitted work is part of what was measured)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "controller", "lineage", "monitors", "trainers",
                                "benchmarks/controller.py"], cwd=REPO, capture_output=True, text=True,
                               check=False).stdout.split("\n")
        changed = sorted(line[3:] for line in dirty if line.strip())
        return f"`{head}`" + (f" with uncommitted changes in the working tree to {', '.join(changed)}" if changed
                              else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass
class Backend:
    """Where the event stores live: SQLite files in the run's folder, or fresh PostgreSQL databases."""

    name: str
    admin_url: str | None = None
    analyze: bool = True
    created: list[str] = field(default_factory=list)

    def settle(self, store: EventStore) -> None:
        """After a bulk load, give PostgreSQL's planner statistics, as autovacuum would on a default server (this
        machine's server runs with autovacuum off; without statistics the planner misjudges a model's row count
        and some reads scan the model's whole history: see the report)."""
        if self.admin_url is not None and self.analyze:
            with store.engine.begin() as conn:
                conn.execute(sa.text("ANALYZE labels, predictions"))

    def describe(self) -> str:
        if self.admin_url is None:
            return "SQLite (WAL, synchronous=FULL)"
        engine = sa.create_engine(self.admin_url)
        with engine.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar()
            autovacuum = conn.execute(sa.text("SHOW autovacuum")).scalar()
        engine.dispose()
        analyzed = "ANALYZE run after each bulk load" if self.analyze else "no ANALYZE (--no-analyze)"
        return f"PostgreSQL {version} on 127.0.0.1 (autovacuum {autovacuum}; {analyzed})"

    def store_url(self, folder: Path, tag: str) -> str:
        if self.admin_url is None:
            return f"sqlite:///{folder / f'events-{tag}.db'}"
        url = bench_kit.create_database(self.admin_url, f"driftpilot_bench_{tag.replace('-', '_')}")
        self.created.append(sa.make_url(url).database)
        return url

    def drop(self) -> None:
        if self.admin_url is not None:
            bench_kit.drop_databases(self.admin_url, self.created)


# ------------------------------------------------------------------------------------------------ part 1


@dataclass
class HistoryResult:
    backend: str
    sizes: tuple[int, int]
    build_seconds: dict[int, float]
    idle: dict[int, list[float]]
    active: dict[int, list[float]]
    idle_ratio: list[float]
    active_ratio: list[float]
    statements: dict[tuple[int, str], Counter]
    sql: dict[tuple[int, str], list[Counter]]
    one_time: dict[int, dict[str, float]]
    reference_rows: dict[int, int]
    new_champion_window: dict[int, int]


def part_history(backend: Backend, folder: Path, sizes: tuple[int, int], reps: int, counter: StatementCounter,
                 mlflow_uri: str) -> HistoryResult:
    clock = ManualClock(T0)
    benches: dict[int, Bench] = {}
    build: dict[int, float] = {}
    for size in sizes:
        tag = f"{backend.name}-{rows_label(size)}"
        loaded = write_policy(folder, f"hist-{tag}", backend.store_url(folder, tag), mlflow_uri)
        store = EventStore.from_url(loaded.config.storage.url, clock)
        registry = open_registry(loaded.config, clock)
        bench = Bench(loaded, store, registry, clock, Stream(seed=7))
        start = time.perf_counter()
        with tqdm(total=size, desc=f"{backend.name}: history of {rows_label(size)} rows", unit="row",
                  unit_scale=True, leave=False) as bar:
            build_history(bench, size, bar)
        backend.settle(store)
        build[size] = time.perf_counter() - start
        benches[size] = bench
        print(f"  built {rows_label(size)} rows of history in {build[size]:.0f} s", flush=True)

    one_time: dict[int, dict[str, float]] = {size: {} for size in sizes}
    reference_rows: dict[int, int] = {}
    for size, bench in benches.items():
        # The first tick of a controller on a history nobody watched: the counters start at the champion's window,
        # the data-drift reference sample is built from that window, the data-drift check runs at once.
        clock.advance(minutes=1)
        bench.new_controller()
        elapsed, _ = bench.tick()
        one_time[size]["first tick on unwatched history (re-base, reference built, data-drift check)"] = elapsed
        # The first tick with new labels: the concept detector consumes every labeled row the champion predicted
        # since its window (the whole traffic history here), once.
        elapsed = active_tick(bench)
        one_time[size]["first tick with new labels: the detector reads the champion's unwatched rows"] = elapsed
        champion = bench.registry.get(bench.name, bench.version)
        reference_rows[size] = champion.record.window_rows
        # The reference sample alone: rebuilt from the champion's window, then read back from the store.
        observer = Observer(bench.controller.cycle, bench.loaded.config.loop)
        bench.store.put_state(bench.name, REFERENCE_KEY, b"")
        start = time.perf_counter()
        observer.reference(champion)
        one_time[size]["reference sample alone: built from the champion's window"] = time.perf_counter() - start
        observer = Observer(bench.controller.cycle, bench.loaded.config.loop)
        start = time.perf_counter()
        observer.reference(champion)
        one_time[size]["reference sample alone: read back from the store"] = time.perf_counter() - start

    idle: dict[int, list[float]] = {size: [] for size in sizes}
    active: dict[int, list[float]] = {size: [] for size in sizes}
    statements: dict[tuple[int, str], Counter] = {}
    sql: dict[tuple[int, str], list[Counter]] = {(size, kind): [] for size in sizes for kind in ("idle", "active")}
    small, large = sizes
    idle_ratio, active_ratio = [], []
    for rep in tqdm(range(reps), desc=f"{backend.name}: ticks", leave=False):
        clock.advance(minutes=1)
        order = sizes if rep % 2 == 0 else sizes[::-1]  # neither size always goes first
        for size in order:
            with counter.measure() as found:
                elapsed, _ = benches[size].tick()
            idle[size].append(elapsed)
            statements[(size, "idle")] = found
            sql[(size, "idle")].append(found)
        pending = {size: benches[size].serve(1_000) for size in sizes}
        clock.advance(seconds=LABEL_DELAY.total_seconds())
        for size in sizes:
            benches[size].label(pending[size])
        for size in order:
            with counter.measure() as found:
                elapsed, report = benches[size].tick()
            if "data_drift" not in report.signals or "concept_drift" not in report.signals:
                raise SystemExit(f"an active tick skipped a monitor: {report.to_dict()}")
            active[size].append(elapsed)
            statements[(size, "active")] = found
            sql[(size, "active")].append(found)
        idle_ratio.append(idle[large][-1] / idle[small][-1])
        active_ratio.append(active[large][-1] / active[small][-1])

    for size, bench in benches.items():
        # A restart: a new Controller object (empty memory) on the same store; the reference comes from the store.
        clock.advance(minutes=1)
        bench.new_controller()
        elapsed, _ = bench.tick()
        one_time[size]["restart: first idle tick of a new controller"] = elapsed
        bench.new_controller()
        elapsed = active_tick(bench)
        one_time[size]["restart: first active tick of a new controller (reference from the store)"] = elapsed

    window_rows: dict[int, int] = {}
    for size, bench in benches.items():
        window_rows[size] = new_champion(bench)
        clock.advance(minutes=1)
        elapsed, _ = bench.tick()
        one_time[size]["new champion: first tick (re-base, reference rebuilt from its window)"] = elapsed
        elapsed = active_tick(bench)
        one_time[size]["new champion: first active tick (the detector reads from its window's end)"] = elapsed
        clock.advance(minutes=1)
        elapsed, _ = bench.tick()
        one_time[size]["new champion: the idle tick after"] = elapsed
    for bench in benches.values():
        bench.store.dispose()
    return HistoryResult(backend.name, sizes, build, idle, active, idle_ratio, active_ratio, statements, sql, one_time,
                         reference_rows, window_rows)


def active_tick(bench: Bench) -> float:
    """1,000 champion predictions, their labels 30 minutes later, then one tick (timed)."""
    pending = bench.serve(1_000)
    bench.clock.advance(seconds=LABEL_DELAY.total_seconds())
    bench.label(pending)
    return bench.tick()[0]


def new_champion(bench: Bench) -> int:
    """Register the champion's model again as if retrained on the newest fifth of the rows (the newest 1,000 rows
    held out), and promote it by hand; returns its window's rows. The fitted model is reused: what is measured is
    the loop's reaction to a new champion, not training."""
    store, name = bench.store, bench.name
    _, newest = store.labeled_count(name, bench.clock.now())
    champion = bench.registry.get(name, bench.version)
    rows = max(bench.next_id // 5, 1_000)
    last = newest - 1_000
    first = last - rows + 1
    window = store.labeled_window(name, bench.clock.now(), after_seq=first - 1, through_seq=last,
                                  feature_types=bench.loaded.config.feature_types)
    record = replace(champion.record, parent_version=bench.version, strategy="stateless", trigger="manual",
                     window_rows=window.rows, window_start=window.start, window_end=window.end,
                     window_fingerprint=window.fingerprint, maturity_cut=window.as_of,
                     decision_id=f"bench-{uuid.uuid4().hex[:8]}",
                     extra={**champion.record.extra, FIRST_SEQ: first, LAST_SEQ: last})
    info = bench.registry.register(name, bench.model, record)
    bench.registry.promote(name, info.version)
    bench.version = str(info.version)
    return window.rows


# ------------------------------------------------------------------------------------------------ part 2


@dataclass
class ManyResult:
    backend: str
    models: int
    rows_per_model: int
    setup_seconds: float
    rounds: list[float]
    profile: str
    breakdown: list[tuple[str, float, int]]
    statements_per_tick: dict[str, float]


# Where a profiled round's time goes: (label, predicate on "file:function" of a call-stack frame), first match wins.
BUCKETS: list[tuple[str, Callable[[str], bool]]] = [
    ("MLflow registry reads (lineage.ModelRegistry: champion_version, get)",
     lambda f: "lineage/registry.py" in f and f.rsplit(":", 1)[1] in ("champion_version", "get", "aliases")),
    ("lease (Leases.acquire)", lambda f: "store/control.py" in f and f.endswith(":acquire")),
    ("decision log reads (in_flight, list)",
     lambda f: "store/control.py" in f and f.rsplit(":", 1)[1] in ("in_flight", "list")),
    ("loop state load/save + manual request (controller_state)",
     lambda f: "loop/state.py" in f and f.rsplit(":", 1)[1] in ("load_state", "save_state", "pending_manual")),
    ("observer: store reads (labeled_window after the cursor, traffic_since, ...)",
     lambda f: "store/events.py" in f and f.rsplit(":", 1)[1] in ("labeled_window", "labeled_count", "traffic_since",
                                                                  "tail_start", "predictions_frame")),
    ("probation check", lambda f: "loop/probation.py" in f and f.endswith(":check")),
    ("rules engine", lambda f: "loop/rules.py" in f and f.endswith(":evaluate")),
]


def part_many(backend: Backend, folder: Path, models: int, rows: int, rounds: int, counter: StatementCounter,
              mlflow_uri: str) -> ManyResult:
    clock = ManualClock(T0 + timedelta(days=30))
    store_url = backend.store_url(folder, "many")
    store: EventStore | None = None
    benches: list[Bench] = []
    start = time.perf_counter()
    for i in tqdm(range(models), desc=f"{backend.name}: {models} models", leave=False):
        loaded = write_policy(folder, f"many-{backend.name}-{i:03d}", store_url, mlflow_uri)
        store = store or EventStore.from_url(store_url, clock)
        registry = open_registry(loaded.config, clock)
        bench = Bench(loaded, store, registry, clock, Stream(seed=100 + i))
        bench.bootstrap(rows // 2, lambda _n: None)
        labels = bench.serve(rows - rows // 2)
        clock.advance(seconds=5)
        bench.label(labels)
        bench.new_controller()
        benches.append(bench)
    backend.settle(store)
    setup = time.perf_counter() - start
    # One catch-up round: every model's first tick (reference built, counters start).
    clock.advance(minutes=1)
    for bench in benches:
        bench.tick()

    times: list[float] = []
    for _ in tqdm(range(rounds), desc=f"{backend.name}: idle rounds", leave=False):
        clock.advance(minutes=1)
        start = time.perf_counter()
        for bench in benches:
            bench.tick()
        times.append(time.perf_counter() - start)

    clock.advance(minutes=1)
    profiler = cProfile.Profile()
    with counter.measure() as found:
        profiler.enable()
        for bench in benches:
            bench.tick()
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    breakdown = []
    raw = stats.stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    for label, match in BUCKETS:
        keys = [k for k in raw if match(f"{k[0]}:{k[2]}")]
        # Cumulative time of the outermost matching frames (a recursive or nested match would count twice).
        cumulative = sum(raw[k][3] for k in keys if not any(match(f"{c[0]}:{c[2]}") for c in raw[k][4]))
        calls = sum(raw[k][1] for k in keys if not any(match(f"{c[0]}:{c[2]}") for c in raw[k][4]))
        breakdown.append((label, cumulative, calls))
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
    store.dispose()
    return ManyResult(backend.name, models, rows, setup, times, text.getvalue(),
                      [(label, cum, calls) for label, cum, calls in breakdown] + [("total (profiled round)", total, 0)],
                      {k: v / models for k, v in found.items() if not k.startswith("sql:")})


# ------------------------------------------------------------------------------------------------ report


def write_report(path: Path, args: argparse.Namespace, command: str, commit: str, history: list[HistoryResult],
                 many: list[ManyResult], seconds: float, load_start: str, backends: list[str]) -> None:
    import mlflow
    import sklearn

    out: list[str] = ["# Benchmark: a controller tick's cost follows the new events, not the history", ""]
    out.append(f"Reproduce: `{command}` (from the repository root). Measured commit (at the start of the run): "
               f"{commit}.")
    out.append("")
    out.append(f"Python {platform.python_version()}, SQLAlchemy {sa.__version__}, MLflow {mlflow.__version__}, "
               f"scikit-learn {sklearn.__version__}, pandas {pd.__version__}, {platform.machine()}, "
               f"{platform.system()}; {os.cpu_count()} cores shared with other jobs (1-min load average "
               f"{load_start} at start, {load_average()} at end); run {datetime.now(UTC):%Y-%m-%d}; "
               f"total script time {seconds:.0f} s. Event stores: {'; '.join(backends)}. MLflow: a local SQLite "
               f"tracking and registry store.")
    out.append("")
    if history:
        report_history(out, args, history)
    if many:
        report_many(out, many)
    # The hand-written reading of the numbers below the marker survives a re-run; re-read it against the new tables.
    kept = ""
    if path.is_file() and ANALYSIS_MARKER in path.read_text():
        kept = path.read_text()[path.read_text().index(ANALYSIS_MARKER):]
    path.write_text("\n".join(out) + "\n" + kept)


def report_history(out: list[str], args: argparse.Namespace, history: list[HistoryResult]) -> None:
    out.append("## 1. Idle and active ticks at a small vs a large history")
    out.append("")
    out.append("One model, one policy (data drift, concept drift (ADWIN) and performance monitors on; two rules that "
               "cannot fire on this stationary stream, so no measured tick retrains — the script checks every "
               "report). History = the champion's bootstrap window (the first fifth) + logged champion "
               "predictions (with scores) whose labels arrive 30 minutes later, written in batches of 10,000. "
               "The controller is built as the daemon builds it (lease, decision log). Both sizes are measured "
               "in the same repetitions, alternating which goes first; **ratio** = the median over repetitions of "
               "(large tick / small tick of the same repetition). Active tick: 1,000 new predictions and their "
               "labels since the last tick (concept drift on the 1,000 losses, performance on the newest 2,000 "
               "matured rows, a data-drift check of the newest 5,000 predictions against the cached reference).")
    out.append("")
    out.append("| backend | tick | small history | ms, median (min–max) | large history | ms, median (min–max) | "
               "ratio large/small (median) | target | SQL statements per tick (store / MLflow) |")
    out.append("|---|---|---:|---:|---:|---:|---:|---|---|")
    for h in history:
        small, large = h.sizes
        for kind, values, ratios in (("idle", h.idle, h.idle_ratio), ("1,000 new labeled rows", h.active,
                                                                        h.active_ratio)):
            key = "idle" if kind == "idle" else "active"
            ratio = median(ratios)
            st_small, st_large = h.statements.get((small, key), {}), h.statements.get((large, key), {})
            out.append(f"| {h.backend} | {kind} | {rows_label(small)} | {spread_ms(values[small])} | "
                       f"{rows_label(large)} | {spread_ms(values[large])} | **{ratio:.2f}** | "
                       f"{'met' if ratio <= 1.5 else 'missed'} (≤ 1.5) | "
                       f"{st_small.get('store', 0)} / {st_small.get('mlflow', 0)} vs "
                       f"{st_large.get('store', 0)} / {st_large.get('mlflow', 0)} |")
    out.append("")
    out.append(f"Repetitions: {args.reps} per size and kind. Building the histories (not a tick cost): " + "; ".join(
        f"{h.backend} {rows_label(s)} in {h.build_seconds[s]:.0f} s" for h in history for s in h.sizes) + ".")
    out.append("")
    out.append("### Where the store's SQL time of a tick goes")
    out.append("")
    out.append("The event store's statements of the measured ticks, timed by kind (cursor execute only: fetching "
               "and decoding rows is not included), median ms per tick over the repetitions, small vs large "
               "history. MLflow's statements are counted above, not timed here.")
    out.append("")
    out.append("| backend | tick | statement | " + " | ".join(f"{rows_label(s)} ms" for s in history[0].sizes)
               + " | large − small ms |")
    out.append("|---|---|---|" + "---:|" * (len(history[0].sizes) + 1))
    for h in history:
        small, large = h.sizes
        for kind in ("idle", "active"):
            kinds = sorted({k for c in h.sql[(large, kind)] + h.sql[(small, kind)] for k in c if k.startswith("sql:")})
            rows = []
            for key in kinds:
                values = [median([c.get(key, 0.0) for c in h.sql[(size, kind)]]) for size in h.sizes]
                rows.append((values[-1] - values[0], key, values))
            for delta, key, values in sorted(rows, reverse=True):
                if max(values) < 0.0001:
                    continue
                out.append(f"| {h.backend} | {'idle' if kind == 'idle' else '1,000 new rows'} | {key[4:]} | "
                           + " | ".join(ms(v) for v in values) + f" | {ms(delta)} |")
    out.append("")
    out.append("### One-time costs (single runs, seconds)")
    out.append("")
    out.append("| backend | event | " + " | ".join(f"{rows_label(s)} history" for s in history[0].sizes) + " |")
    out.append("|---|---|" + "---:|" * len(history[0].sizes))
    for h in history:
        for label in h.one_time[h.sizes[0]]:
            out.append(f"| {h.backend} | {label} | " + " | ".join(f"{h.one_time[s][label]:.3f}" for s in h.sizes)
                       + " |")
    out.append("")
    for h in history:
        out.append(f"{h.backend}: the bootstrap champion's training window has "
                   + ", ".join(f"{h.reference_rows[s]:,} rows ({rows_label(s)} history)" for s in h.sizes)
                   + "; the new champion's window "
                   + ", ".join(f"{h.new_champion_window[s]:,} rows" for s in h.sizes) + ".")
    out.append("")


def report_many(out: list[str], many: list[ManyResult]) -> None:
    out.append("## 2. Many models in one process: one round of idle ticks")
    out.append("")
    for m in many:
        out.append(f"**{m.backend}**: {m.models} models on one event store and one MLflow store, each with "
                   f"{m.rows_per_model:,} rows (half bootstrap window, half champion traffic with labels), one "
                   f"Controller per model with a lease and a decision log (as the daemon builds them). "
                   f"Set-up {m.setup_seconds:.0f} s. Round times over {len(m.rounds)} rounds: median "
                   f"**{median(m.rounds):.2f} s** (min {min(m.rounds):.2f}, max {max(m.rounds):.2f}); "
                   f"{median(m.rounds) / m.models * 1000:.1f} ms per model. Target ≤ 2 s per round of 100 models"
                   + (f" (scaled to 100 models: {median(m.rounds) / m.models * 100:.2f} s)" if m.models != 100 else "")
                   + ".")
        out.append("")
        out.append("SQL statements per idle tick: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                               sorted(m.statements_per_tick.items())) + ".")
        out.append("")
        out.append("Where one profiled round's time goes (cProfile, cumulative time of the outermost calls; "
                   "profiling slows the round):")
        out.append("")
        out.append("| part of the tick | s in the round | calls | ms per model | share |")
        out.append("|---|---:|---:|---:|---:|")
        total = m.breakdown[-1][1]
        for label, cum, calls in m.breakdown:
            out.append(f"| {label} | {cum:.3f} | {calls or ''} | {cum / m.models * 1000:.1f} | "
                       f"{cum / total:.0%} |")
        out.append("")
        out.append("<details><summary>cProfile, top 25 by cumulative time</summary>")
        out.append("")
        out.append("```")
        out.append(m.profile.strip())
        out.append("```")
        out.append("")
        out.append("</details>")
        out.append("")


# -------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k vs 100k rows, 20 models, fewer repetitions")
    parser.add_argument("--sizes", type=int, nargs=2, default=None, help="small and large history (rows)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of each measured tick")
    parser.add_argument("--models", type=int, default=None, help="models in part 2")
    parser.add_argument("--rounds", type=int, default=None, help="idle rounds in part 2")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite",
                        help="event store backend(s) to measure (MLflow stays on a local SQLite file)")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test", metavar="URL",
                        help="admin URL: fresh databases are created through it and dropped at the end")
    parser.add_argument("--no-analyze", action="store_true",
                        help="PostgreSQL: do not ANALYZE after the bulk loads (planner without statistics)")
    parser.add_argument("--skip", choices=["history", "many"], default=None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks-controller.md")
    args = parser.parse_args()
    args.sizes = tuple(args.sizes or ((10_000, 100_000) if args.quick else (10_000, 1_000_000)))
    args.reps = args.reps or (9 if args.quick else 15)
    args.models = args.models or (20 if args.quick else 100)
    args.rounds = args.rounds or (3 if args.quick else 5)
    command = " ".join([".venv/bin/python", "benchmarks/controller.py", *sys.argv[1:]])

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import monitors.data_drift  # imported lazily by the tick; imported now, with the code measured
    import monitors.evidently_adapter  # noqa: F401 - Evidently's ~3 s import is paid here, not in a measured tick
    load_start = load_average()
    commit = git_commit()  # now: the code this process imports is the code of this moment
    started = time.perf_counter()
    backends = ([Backend("sqlite")] if args.backend in ("sqlite", "both") else []) + \
        ([Backend("postgresql", args.postgres_url, analyze=not args.no_analyze)]
         if args.backend in ("postgresql", "both") else [])
    described = [backend.describe() for backend in backends]
    counter = StatementCounter()
    history: list[HistoryResult] = []
    many: list[ManyResult] = []
    with tempfile.TemporaryDirectory(prefix="driftpilot-bench-controller-") as tmp:
        folder = Path(tmp)
        mlflow_uri = f"sqlite:///{folder / 'mlflow.db'}"
        try:
            for backend in backends:
                if args.skip != "history":
                    print(f"part 1 ({backend.name}): histories of {', '.join(map(rows_label, args.sizes))} rows",
                          flush=True)
                    h = part_history(backend, folder, args.sizes, args.reps, counter, mlflow_uri)
                    history.append(h)
                    for kind, values, ratios in (("idle", h.idle, h.idle_ratio), ("active", h.active, h.active_ratio)):
                        print(f"  {kind}: " + ", ".join(f"{rows_label(s)} {spread_ms(values[s])} ms" for s in h.sizes)
                              + f"; ratio {median(ratios):.2f}", flush=True)
                if args.skip != "many":
                    print(f"part 2 ({backend.name}): {args.models} models", flush=True)
                    m = part_many(backend, folder, args.models, 1_000, args.rounds, counter, mlflow_uri)
                    many.append(m)
                    print(f"  round of {m.models} idle ticks: median {median(m.rounds):.2f} s", flush=True)
        finally:
            for backend in backends:
                backend.drop()
    seconds = time.perf_counter() - started
    write_report(args.out, args, command, commit, history, many, seconds, load_start, described)
    print(f"wrote {args.out} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
