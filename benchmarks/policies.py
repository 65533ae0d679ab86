"""Benchmark of decision quality: driftpilot's `auto` policy against static, periodic, River-only and oracle baselines.

    .venv/bin/python benchmarks/policies.py            # the protocol below, baselines and auto, in one process
    .venv/bin/python benchmarks/policies.py --quick    # seed 0, 4,000 rows per scenario, Elec2's first 10,000 rows

The protocol (issue "Part 12"): six drifting scenarios of ``--rows`` (10,000) rows, seeds 0..4 (``--seeds``), in two
label-delay regimes (``--label-delays 10 500``: a label arrives 10 or 500 rows after its row); ``sea-stationary``
(no change) of ``--stationary-rows`` (20,000) rows, seeds 0..9 (``--stationary-seeds``), only in the 10-row regime
(``--stationary-delays``); Elec2 whole, seed 0, each label with the next row. A run's identity is (stream, label
delay, seed, policy, family); every table has one row per (stream, label delay), e.g. ``sea-abrupt (delay 500)``,
``elec2 (next row)``.

Baselines and ``auto`` may run as separate processes: ``--skip-auto`` (baselines only) and ``--only-auto`` (auto
only) each write their raw JSON (and a partial report) to ``--out``; ``--merge A.json B.json --out REPORT.md``
joins them into one report (files of different protocols are refused).

``--dask tcp://scheduler:8786`` runs the same jobs as tasks on a Dask cluster, one per (stream, seed, label delay):
the same raw JSON and report as a local run, the runs in job order (workers: the repository on their ``PYTHONPATH``,
``dask worker ADDRESS --nthreads 1``).

Every policy sees the same stream under the same prequential protocol: the first ``--bootstrap`` rows train the
first model (the controller's bootstrap fits on their oldest 80 %, its holdout share; every baseline starts from a
model fitted on those same rows), then each later row is predicted by the model of that moment and scored
(accuracy, or MAE for regression); a label is usable only once its ``label_time`` has passed (scenarios: 10 or
500 rows later; Elec2: with the next row). Policies:

* ``static``: the bootstrap model, never retrained (one per scikit-learn family of the pool);
* ``periodic``: a stateless refit every ``--period`` rows on the last ``--window`` matured rows, no gate;
* ``river-arf`` / ``river-hat``: River's adaptive random forest / Hoeffding adaptive tree alone, test-then-train with
  the same label delay (each label is learned the moment it arrives, every row is served by the current model);
* ``auto``: the real controller (``controller.backtest.replay``: rules, strategy auto, candidate pool, gate,
  probation) with the policy file ``--policy`` (regression streams: ``--regression-policy``), ticking every
  ``--tick-every`` rows;
* ``oracle``: a stateless refit right after each true change point, once ``ORACLE_ROWS`` rows of the new concept have
  matured (and again at 4x that many), on those rows only. A stream without change points (the rotating hyperplane,
  sea-stationary): the periodic refit whose (period, window) is best in hindsight over a grid, per seed.
* ``no-change`` (a reference, not a learner): predict the newest matured label.

Writes docs/benchmarks-policies.md (tables; a hand-written analysis below the marker survives a re-run) and the raw
per-run numbers as JSON next to it. BLAS/OpenMP run on one thread (the machine is shared, 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bench_kit

bench_kit.one_thread_per_process()
REPO = bench_kit.repo_first()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from tqdm import tqdm  # noqa: E402

from controller.backtest.quality import (  # noqa: E402
    detection_delays,
    promotion_impacts,
    race_switch_impacts,
    race_switches,
)
from controller.backtest.replay import replay  # noqa: E402
from controller.backtest.report import registry_loader  # noqa: E402
from controller.backtest.result import EVENT_TIME, LABEL_TIME, BacktestResult, ReplayStream  # noqa: E402
from controller.backtest.streams import SCENARIOS, elec2, scenario  # noqa: E402
from controller.config import LoadedPolicy  # noqa: E402
from controller.loop.scoring import predict  # noqa: E402
from controller.policy_loader import load_policy  # noqa: E402

ANALYSIS_MARKER = "<!-- analysis: written by hand, kept by benchmarks/policies.py when it rewrites the tables -->"
ORACLE_ROWS = 500                 # matured rows of the new concept before the oracle refits (and again at 4x)
HYPERPLANE_GRID = [(k, w) for k in (250, 500, 1000) for w in (500, 1000, 2000)]
HORIZON = 500                     # rows after a promotion on which new and replaced champion are compared


# ------------------------------------------------------------------------------------------------ results


@dataclass
class Run:
    """One policy on one stream (one seed)."""

    stream: str
    seed: int
    policy: str               # static | periodic | river-arf | river-hat | auto | oracle | no-change
    family: str               # the estimator family (pool member name), or "" for auto / no-change
    metric: str               # accuracy | mae
    value: float
    retrains: int = 0         # refits (periodic, oracle) or training decisions (auto)
    models_trained: int = 0   # models fitted after the bootstrap (auto: one per pool member per decision)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    label_delay: int | None = None  # rows until a label arrives (1: with the next row); part of the run's identity

    def key(self) -> tuple:
        return self.stream, self.label_delay, self.seed, self.policy, self.family


def regime_label(stream: str, label_delay: int | None) -> str:
    """How a (stream, label delay) shows in the tables: ``sea-abrupt (delay 10)``, ``elec2 (next row)``."""
    if label_delay is None:
        return stream
    return f"{stream} ({'next row' if label_delay == 1 else f'delay {label_delay}'})"


def better(metric: str, a: float, b: float) -> bool:
    return a > b if metric == "accuracy" else a < b


def score(task: str, predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if task == "classification":
        return (np.asarray(predicted, dtype=object) == np.asarray(labels, dtype=object)).astype(float)
    return np.abs(np.asarray(predicted, dtype=float) - np.asarray(labels, dtype=float))


# ------------------------------------------------------------------------------------------------ protocol


class Protocol:
    """The stream's arrays and the label-maturity rule shared by every baseline."""

    def __init__(self, stream: ReplayStream, bootstrap_rows: int, holdout_fraction: float) -> None:
        self.stream = stream
        self.spec = stream.spec
        self.frame = stream.frame.reset_index(drop=True)
        self.features = list(self.spec.features)
        self.X = self.frame[self.features]
        self.y = self.frame[self.spec.target].to_numpy()
        self.event = self.frame[EVENT_TIME].to_numpy()
        self.label = self.frame[LABEL_TIME].to_numpy()
        self.n = len(self.frame)
        self.B = bootstrap_rows
        # The controller's bootstrap fits on the oldest (1 - holdout) share of the bootstrap rows.
        self.boot_train = round(bootstrap_rows * (1 - holdout_fraction))
        self.classes = tuple(self.spec.classes or ())
        self.task = self.spec.task

    def matured(self, r: int) -> np.ndarray:
        """Rows (before r) whose label had arrived when row r is predicted."""
        return np.flatnonzero(self.label[:r] <= self.event[r])

    def predict(self, model: Any, start: int, stop: int) -> np.ndarray:
        predicted, _ = predict(model, self.X.iloc[start:stop], self.task, self.classes)
        return predicted

    def result(self, predictions: np.ndarray) -> float:
        return float(score(self.task, predictions, self.y[self.B:]).mean())


def fit(spec: Any, proto: Protocol, rows: np.ndarray, seed: int) -> Any:
    model = spec.build(proto.spec.features, proto.task, seed=seed, classes=proto.classes)
    model.fit(proto.X.iloc[rows], pd.Series(proto.y[rows]))
    return model


def serve_schedule(spec: Any, proto: Protocol, seed: int, refits: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """Predictions of rows B..n-1: the bootstrap model, replaced at each refit position by a model fitted on its rows."""
    model = fit(spec, proto, np.arange(proto.boot_train), seed)
    out, start = [], proto.B
    for position, rows in sorted(refits, key=lambda item: item[0]):
        if position <= start:
            model = fit(spec, proto, rows, seed)
            continue
        out.append(proto.predict(model, start, position))
        model, start = fit(spec, proto, rows, seed), position
    out.append(proto.predict(model, start, proto.n))
    return np.concatenate(out)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.process_time() - cpu, time.perf_counter() - wall


def periodic_refits(proto: Protocol, period: int, window: int) -> list[tuple[int, np.ndarray]]:
    return [(r, proto.matured(r)[-window:]) for r in range(proto.B + period, proto.n, period)]


def oracle_refits(proto: Protocol) -> list[tuple[int, np.ndarray]]:
    points = list(proto.spec.change_points)
    refits = []
    for i, point in enumerate(points):
        end = points[i + 1] if i + 1 < len(points) else proto.n
        for need in (ORACLE_ROWS, 4 * ORACLE_ROWS):
            for r in range(max(point, proto.B), end):
                rows = proto.matured(r)
                rows = rows[rows >= point]
                if len(rows) >= need:
                    refits.append((r, rows))
                    break
    return refits


def run_batch(name: str, family: str, spec: Any, proto: Protocol, seed: int,
              refits_of: Callable[[], list[tuple[int, np.ndarray]]], **extra: Any) -> Run:
    def go() -> tuple[np.ndarray, int]:
        refits = refits_of()
        return serve_schedule(spec, proto, seed, refits), len(refits)

    (predictions, refits), cpu, wall = timed(go)
    return Run(proto.spec.name, seed, name, family, metric(proto), proto.result(predictions), refits, refits, cpu,
               wall, dict(extra))


def metric(proto: Protocol) -> str:
    return "accuracy" if proto.task == "classification" else "mae"


def run_hindsight_periodic(family: str, spec: Any, proto: Protocol, seed: int) -> Run:
    best: Run | None = None
    cpu = wall = 0.0
    for period, window in HYPERPLANE_GRID:
        run = run_batch("oracle", family, spec, proto, seed, lambda p=period, w=window: periodic_refits(proto, p, w),
                        period=period, window=window, kind="periodic best in hindsight")
        cpu, wall = cpu + run.cpu_seconds, wall + run.wall_seconds
        if best is None or better(run.metric, run.value, best.value):
            best = run
    best.cpu_seconds, best.wall_seconds = cpu, wall  # the search is part of what the oracle cost
    return best


def river_learner(kind: str, task: str, seed: int, params: dict[str, Any]) -> Any:
    from river import forest, tree

    if kind == "river-arf":
        cls = forest.ARFClassifier if task == "classification" else forest.ARFRegressor
        return cls(seed=seed, **params)
    cls = tree.HoeffdingAdaptiveTreeClassifier if task == "classification" else tree.HoeffdingAdaptiveTreeRegressor
    return cls(seed=seed, **params)


def run_river(kind: str, proto: Protocol, seed: int, params: dict[str, Any],
              snapshot_every: Sequence[int] = ()) -> list[Run]:
    """River test-then-train with the label delay. ``snapshot_every``: also score, from the same pass, a server that
    only refreshes its copy of the learner every C rows (what serving a registered checkpoint costs)."""

    def go() -> tuple[np.ndarray, dict[int, np.ndarray]]:
        model = river_learner(kind, proto.task, seed, params)
        rows = proto.X.to_dict(orient="records")
        for j in range(proto.B):
            model.learn_one(rows[j], _plain(proto.y[j]))
        pending = np.argsort(proto.label, kind="stable")
        pending = pending[pending >= proto.B]
        pointer = 0
        live = np.empty(proto.n - proto.B, dtype=object if proto.task == "classification" else float)
        snaps = {c: np.empty_like(live) for c in snapshot_every}
        served = {c: copy.deepcopy(model) for c in snapshot_every}
        for i in range(proto.B, proto.n):
            while pointer < len(pending) and proto.label[pending[pointer]] <= proto.event[i] and pending[pointer] < i:
                j = pending[pointer]
                model.learn_one(rows[j], _plain(proto.y[j]))
                pointer += 1
            for c in snapshot_every:
                if (i - proto.B) % c == 0 and i > proto.B:
                    served[c] = copy.deepcopy(model)
                snaps[c][i - proto.B] = served[c].predict_one(rows[i])
            live[i - proto.B] = model.predict_one(rows[i])
        return live, snaps

    (live, snaps), cpu, wall = timed(go)
    out = [Run(proto.spec.name, seed, kind, kind, metric(proto), proto.result(live), 0, 0, cpu,
               wall, {"updates": "every label"})]
    for c, predictions in snaps.items():
        out.append(Run(proto.spec.name, seed, f"{kind} served every {c}", kind, metric(proto),
                       proto.result(predictions), 0, 0, 0.0, 0.0, {"what_if": True, "snapshot_every": c}))
    return out


def run_no_change(proto: Protocol, seed: int) -> Run:
    def go() -> np.ndarray:
        order = np.argsort(proto.label, kind="stable")
        pointer, newest, out = 0, -1, []
        for i in range(proto.B, proto.n):
            while pointer < len(order) and proto.label[order[pointer]] <= proto.event[i]:
                newest = max(newest, int(order[pointer]))
                pointer += 1
            out.append(proto.y[newest])
        return np.asarray(out, dtype=object if proto.task == "classification" else float)

    predictions, cpu, wall = timed(go)
    return Run(proto.spec.name, seed, "no-change", "", metric(proto), proto.result(predictions), 0, 0, cpu, wall)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# ------------------------------------------------------------------------------------------------ auto


def run_auto(loaded: LoadedPolicy, stream: ReplayStream, seed: int, bootstrap_rows: int, tick_every: int | None,
             keep: Path | None) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix=f"policies-{stream.spec.name}-{seed}-"))
    seeded = loaded._replace(config=loaded.config.model_copy(
        update={"bootstrap": loaded.config.bootstrap.model_copy(update={"seed": seed})}))
    try:
        result, cpu, wall = timed(lambda: replay(seeded, stream, workdir, bootstrap_rows=bootstrap_rows,
                                                 tick_every=tick_every, name="auto"))
        if result.race is not None:  # every change of the served model, each arm as it served (learners learning)
            impacts = race_switch_impacts(result, horizon=HORIZON)
        else:
            impacts = promotion_impacts(result, stream, registry_loader(seeded, result), horizon=HORIZON)
        run = auto_run(result, stream, seed, cpu, wall, impacts)
        if keep is not None:
            shutil.copytree(workdir, keep / f"{stream.spec.name}-{seed}", dirs_exist_ok=True)
        return run
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def auto_run(result: BacktestResult, stream: ReplayStream, seed: int, cpu: float, wall: float,
             impacts: list) -> Run:
    decisions = result.decisions
    retrains = [d for d in decisions if d["action"] == "retrain" and d["status"] not in ("failed",)]
    learns = [d for d in decisions if d["action"] == "learn"]
    models = sum(len((d.get("evidence") or {}).get("candidates") or [1]) for d in retrains) + len(learns)
    promotions = result.promotions()
    strategies: dict[str, int] = {}
    for d in retrains:
        strategies[d["strategy"]] = strategies.get(d["strategy"], 0) + 1
    delays = [x.delay for x in detection_delays(result)]
    harmful = [asdict(i) | {"harmful": i.harmful} for i in impacts if i.harmful]
    switches = race_switches(result)
    if result.race is not None:
        promotions = switches
    by_racer: dict[str, int] = {}
    for d in switches:
        key = ((d.get("evidence") or {}).get("race") or {}).get("challenger", "?")
        by_racer[key] = by_racer.get(key, 0) + 1
    extra = {
        "promotions": len(promotions), "learn_checkpoints": len(learns), "strategies": strategies,
        "switches_by_racer": by_racer, "max_promotions_per_racer": max(by_racer.values(), default=0),
        "unjudged_switches": sum(1 for i in impacts if getattr(i, "rows", 1) == 0),
        "served_by_racer": result.served["racer"].value_counts().to_dict() if "racer" in result.served else {},
        "racer_metrics": result.race.drop(columns=["position", "seq", "prediction_id"]).mean().round(5).to_dict()
        if result.race is not None and len(result.race) else {},
        "rollbacks": sum(1 for d in decisions if d["action"] == "rollback" and d["status"] == "done"),
        "rejected": sum(1 for d in decisions if d["verdict"] == "reject"),
        "failed": sum(1 for d in decisions if d["status"] == "failed"),
        "detections": len(result.detections), "detection_delays": delays, "harmful": len(harmful),
        "harmful_detail": harmful, "controller_seconds": result.controller_seconds, "ticks": result.ticks,
        "champions": _champion_families(result),
    }
    return Run(result.spec.name, seed, "auto", "", result.metric, result.value, len(retrains) + len(learns), models,
               cpu, wall, extra)


def _champion_families(result: BacktestResult) -> dict[str, int]:
    """Served rows per champion version (the family shows in the decisions)."""
    counts = result.served["version"].astype(str).value_counts()
    return {str(k): int(v) for k, v in counts.items()}


# ------------------------------------------------------------------------------------------------ one stream


def pool_specs(loaded: LoadedPolicy) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The pool's scikit-learn members (name -> EstimatorSpec) and River members (baseline kind -> params)."""
    batch, river = {}, {}
    for name, member in loaded.config.pool_members().items():
        spec = member.estimator
        if spec.family == "sklearn":
            batch[name if name != "default" else spec.steps[-1].class_path.rsplit(".", 1)[-1].lower()] = spec
        else:
            path = spec.steps[-1].class_path
            kind = "river-arf" if ".forest.ARF" in path else "river-hat" if "HoeffdingAdaptive" in path else None
            if kind:
                river[kind] = dict(spec.steps[-1].params)
    river.setdefault("river-arf", {})
    river.setdefault("river-hat", {})
    return batch, river


def bench_stream(stream: ReplayStream, seed: int, loaded: LoadedPolicy, args: argparse.Namespace,
                 keep: Path | None = None) -> list[Run]:
    """The baselines and/or auto on one stream; ``keep`` (default ``args.keep``): where auto's stores are copied."""
    keep = args.keep if keep is None else keep
    if getattr(args, "only_auto", False):
        return [run_auto(loaded, stream, seed, args.bootstrap, args.tick_every, keep)]
    proto = Protocol(stream, args.bootstrap, loaded.config.bootstrap.holdout_fraction)
    batch, river = pool_specs(loaded)
    runs: list[Run] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skip = set(args.skip)
        for family, spec in batch.items():
            runs.append(run_batch("static", family, spec, proto, seed, lambda: []))
            runs.append(run_batch("periodic", family, spec, proto, seed,
                                  lambda: periodic_refits(proto, args.period, args.window),
                                  period=args.period, window=args.window))
            if "oracle" in skip:
                continue
            if stream.spec.change_points:
                runs.append(run_batch("oracle", family, spec, proto, seed, lambda: oracle_refits(proto)))
            elif not args.no_oracle_grid:
                runs.append(run_hindsight_periodic(family, spec, proto, seed))
        for kind, params in river.items():
            if kind in skip:
                continue
            runs.extend(run_river(kind, proto, seed, params,
                                  snapshot_every=args.snapshot_every if kind == "river-arf" else ()))
        runs.append(run_no_change(proto, seed))
        if not args.skip_auto:
            runs.append(run_auto(loaded, stream, seed, args.bootstrap, args.tick_every, keep))
    return runs


# ------------------------------------------------------------------------------------------------ report


POLICY_ORDER = ["static", "periodic", "river-arf", "river-hat", "auto", "oracle", "no-change"]
BASELINES = ("static", "periodic", "river-arf", "river-hat")  # the non-oracle baselines auto is held against
STATIONARY = "sea-stationary"
ELEC2_DELAY = 1               # Elec2's label arrives with the next row: a delay of one row
DEFAULT_DELAYS = [10, 500]    # the label-delay regimes of the scenarios, in rows
ACCURACY_SLACK = 0.002        # auto >= best non-oracle baseline - 0.002 accuracy ...
MAE_SLACK = 0.01              # ... or <= best + 1 % MAE
ELEC2_TARGET = 0.883          # auto's accuracy on Elec2 (next-row labels)
ELEC2_CPU_TARGET = 120.0      # CPU seconds of auto's Elec2 replay
HARMFUL_SHARE = 0.01          # harmful promotions <= 1 % of promotions
PROTOCOL_KEYS = ("bootstrap", "period", "window", "tick_every", "policy", "regression_policy")
AUTO_ONLY_KEYS = ("tick_every",)  # compared only between files that hold auto runs


def regimes(runs: Sequence[Run]) -> dict[str, tuple[str, int | None]]:
    """Table label -> (stream, label delay): streams in order of first appearance, each one's delays ascending."""
    first: dict[str, int] = {}
    for r in runs:
        first.setdefault(r.stream, len(first))
    keys = sorted({(r.stream, r.label_delay) for r in runs},
                  key=lambda k: (first[k[0]], -1 if k[1] is None else k[1]))
    return {regime_label(stream, delay): (stream, delay) for stream, delay in keys}


def summarize(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """(stream, label delay) label -> policy label -> stats over seeds, plus the chosen family for batch policies
    (the family with the best mean, picked in hindsight)."""
    table: dict[str, dict[str, Any]] = {}
    for label, (stream, delay) in regimes(runs).items():
        rows = [r for r in runs if r.stream == stream and r.label_delay == delay]
        cells: dict[str, Any] = {}
        for policy in dict.fromkeys(r.policy for r in rows):
            group = [r for r in rows if r.policy == policy]
            by_family: dict[str, list[Run]] = {}
            for r in group:
                by_family.setdefault(r.family, []).append(r)
            summaries = {fam: _stats(rs) for fam, rs in by_family.items()}
            metric_ = group[0].metric
            best = max(summaries, key=lambda f: summaries[f]["mean"] * (1 if metric_ == "accuracy" else -1))
            cells[policy] = {**summaries[best], "family": best, "families": summaries}
        table[label] = cells
    return table


def _count(value: Any) -> int:
    """A count kept in ``Run.extra``: a number, or a list of the things counted."""
    if value is None:
        return 0
    return len(value) if isinstance(value, (list, tuple)) else int(value)


def _stats(runs: list[Run]) -> dict[str, Any]:
    values = [r.value for r in runs]
    out = {"mean": statistics.fmean(values), "median": statistics.median(values), "min": min(values),
           "max": max(values), "seeds": len(runs), "metric": runs[0].metric,
           "retrains": statistics.fmean(r.retrains for r in runs),
           "models_trained": statistics.fmean(r.models_trained for r in runs),
           "cpu": statistics.fmean(r.cpu_seconds for r in runs), "wall": statistics.fmean(r.wall_seconds for r in runs)}
    if runs[0].policy == "auto":
        # .get: the race-based auto runs may not record every key of the earlier replay
        for key in ("harmful", "promotions", "rollbacks", "failed"):
            out[key] = sum(_count(r.extra.get(key)) for r in runs)
        out["controller"] = statistics.fmean(float(r.extra.get("controller_seconds") or 0.0) for r in runs)
        recorded = [r.extra["detection_delays"] for r in runs if "detection_delays" in r.extra]
        out["delays"] = [d for ds in recorded for d in ds or []] if recorded else None
        per_racer = [r.extra.get("max_promotions_per_racer") for r in runs]
        out["max_per_racer"] = None if None in per_racer else max(_count(x) for x in per_racer)
    return out


def fmt(value: float, metric_: str) -> str:
    return f"{value:.4f}" if metric_ == "accuracy" else f"{value:.3f}"


def spread(cell: dict[str, Any]) -> str:
    """Mean over seeds and, with more than one seed, the seeds' range: ``0.8513 (0.8430–0.8693)``."""
    m = cell["metric"]
    if cell["seeds"] == 1:
        return fmt(cell["mean"], m)
    return f"{fmt(cell['mean'], m)} ({fmt(cell['min'], m)}–{fmt(cell['max'], m)})"


def delays_text(delays: list[int | None] | None) -> str:
    if delays is None:
        return "— (not recorded)"
    if not delays:
        return "no change points"
    found = [d for d in delays if d is not None]
    if not found:
        return f"none detected (0/{len(delays)})"
    return (f"median {statistics.median(found):.0f} rows ({min(found)}–{max(found)}); "
            f"{len(found)}/{len(delays)} detected")


def best_baseline(cells: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The best non-oracle baseline of one (stream, regime) by its mean over seeds, or None if none ran."""
    present = {p: cells[p] for p in BASELINES if p in cells}
    if not present:
        return None
    m = next(iter(present.values()))["metric"]
    best = max(present, key=lambda p: present[p]["mean"] * (1 if m == "accuracy" else -1))
    return best, present[best]


def meets_baseline(metric_: str, auto: float, best: float) -> bool:
    """auto ≥ best − 0.002 accuracy, or auto ≤ best + 1 % MAE."""
    if metric_ == "accuracy":
        return auto >= best - ACCURACY_SLACK - 1e-12
    return auto <= best * (1 + MAE_SLACK) + 1e-12


def gap_text(metric_: str, auto: float, best: float) -> str:
    """auto − best: a difference of accuracy, or MAE relative to the best (the target's 1 % is relative)."""
    return f"{auto - best:+.4f}" if metric_ == "accuracy" else f"{(auto - best) / best:+.1%}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def harmful_ok(harmful: int, promotions: int) -> bool:
    return harmful <= HARMFUL_SHARE * promotions


def targets_table(table: dict[str, dict[str, Any]], regime_map: dict[str, tuple[str, int | None]]) -> list[str]:
    """The targets of Part 12, from the summarized table; "—" where the runs a target needs are missing."""
    out = ["## Targets of Part 12, computed from the tables above", "",
           f"Per stream and regime: `auto` ≥ the best non-oracle baseline ({', '.join(BASELINES)}; the batch "
           f"families picked in hindsight) − {ACCURACY_SLACK} accuracy, or ≤ best + {MAE_SLACK:.0%} MAE; harmful "
           f"promotions (a promoted model worse than the one it replaced on the next {HORIZON} rows) ≤ "
           f"{HARMFUL_SHARE:.0%} of promotions. Means over seeds, the seeds' min–max in brackets; — where no `auto` "
           "(or no baseline) run exists.", "",
           f"| stream (regime) | best non-oracle baseline | auto | auto − best | auto ≥ best − {ACCURACY_SLACK} "
           f"(MAE ≤ best + {MAE_SLACK:.0%}) | harmful / promotions (≤ {HARMFUL_SHARE:.0%}) |",
           "|---|---|---|---:|---|---|"]
    harmful = promotions = 0
    any_auto = False
    for label, cells in table.items():
        best, auto = best_baseline(cells), cells.get("auto")
        best_text = "—" if best is None else f"{best[0]} {spread(best[1])}"
        gap = verdict = harm = "—"
        if auto is not None:
            any_auto = True
            harmful, promotions = harmful + auto["harmful"], promotions + auto["promotions"]
            ok = harmful_ok(auto["harmful"], auto["promotions"])
            harm = f"{auto['harmful']} / {auto['promotions']} {_verdict(ok)}"
            if best is not None:
                m, b = auto["metric"], best[1]["mean"]
                gap = gap_text(m, auto["mean"], b)
                verdict = _verdict(meets_baseline(m, auto["mean"], b))
        out.append(f"| {label} | {best_text} | {'—' if auto is None else spread(auto)} | {gap} | {verdict} | {harm} |")
    out += ["", "| target | result |", "|---|---|"]
    for label, (stream, _) in regime_map.items():
        auto = table[label].get("auto")
        if stream == "elec2":
            out.append(f"| {label}: `auto` accuracy ≥ {ELEC2_TARGET} | " + (
                "— (no auto run)" if auto is None else
                f"{_verdict(auto['mean'] >= ELEC2_TARGET)} ({fmt(auto['mean'], 'accuracy')})") + " |")
            out.append(f"| {label}: `auto` replay ≤ {ELEC2_CPU_TARGET:.0f} s CPU (incl. bootstrap and the "
                       "harmful-promotion check) | " + (
                           "— (no auto run)" if auto is None else
                           f"{_verdict(auto['cpu'] <= ELEC2_CPU_TARGET)} ({auto['cpu']:.0f} s CPU, "
                           f"{auto['wall']:.0f} s wall)") + " |")
        if stream == STATIONARY:
            out.append(f"| {label}: no harmful switch (all seeds) | " + (
                "— (no auto runs)" if auto is None else
                f"{_verdict(auto['harmful'] == 0)} ({auto['harmful']} harmful of {auto['promotions']} promotions, "
                f"{auto['seeds']} runs)") + " |")
            out.append(f"| {label}: each racer promoted at most once per run | " + (
                "— (no auto runs)" if auto is None else
                "— (`max_promotions_per_racer` not recorded)" if auto["max_per_racer"] is None else
                f"{_verdict(auto['max_per_racer'] <= 1)} (at most {auto['max_per_racer']} in one run)") + " |")
    out.append(f"| harmful promotions ≤ {HARMFUL_SHARE:.0%} of promotions, all streams and regimes | " + (
        f"{_verdict(harmful_ok(harmful, promotions))} ({harmful} of {promotions})" if any_auto
        else "— (no auto runs)") + " |")
    return out


def _seeds_text(seeds: Sequence[int]) -> str:
    seeds = sorted(seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}..{seeds[-1]} ({len(seeds)})" if len(seeds) > 1 else str(seeds[0])
    return ", ".join(map(str, seeds))


def protocol_table(runs: Sequence[Run]) -> list[str]:
    """One row per (stream, label delay): rows, seeds and the policies that ran."""
    out = ["| stream (regime) | label delay (rows) | rows | seeds | policies run |", "|---|---:|---:|---|---|"]
    for label, (stream, delay) in regimes(runs).items():
        rs = [r for r in runs if r.stream == stream and r.label_delay == delay]
        rows = sorted({r.extra["rows"] for r in rs if r.extra.get("rows")})
        policies = [p for p in POLICY_ORDER if any(r.policy == p for r in rs)]
        out.append(f"| {label} | {'?' if delay is None else delay} | {', '.join(f'{n:,}' for n in rows) or '?'} | "
                   f"{_seeds_text({r.seed for r in rs})} | {', '.join(policies)} |")
    return out


def write_report(path: Path, runs: list[Run], args: argparse.Namespace, command: str, commit: str, dirty: bool,
                 seconds: float, loads: Sequence[str]) -> None:
    import mlflow
    import river
    import sklearn

    table = summarize(runs)
    regime_map = regimes(runs)
    out = ["# Benchmark: decision quality of the `auto` policy against static, periodic, River-only and oracle", ""]
    out.append(f"Reproduce: `{command}` (from the repository root). Measured commit: {commit}"
               f"{' (plus uncommitted changes of other engineers in the shared tree)' if dirty else ''}.")
    out.append("")
    out.append(f"Python {platform.python_version()}, scikit-learn {sklearn.__version__}, River {river.__version__}, "
               f"MLflow {mlflow.__version__}, {platform.machine()} {platform.system()}; {os.cpu_count()} cores shared "
               f"with other engineers' work (1-min load average, start/end of each process: {', '.join(loads)}); "
               f"BLAS/OpenMP on one thread; run {datetime.now(UTC):%Y-%m-%d}; total {seconds / 60:.1f} min of wall "
               "time (summed over processes). CPU seconds are this process's own; wall seconds are inflated by the "
               "other load on the machine and are not comparable with a quiet machine.")
    out.append("")
    out.append("Protocol: every table has one row per stream and label-delay regime (a label arrives that many rows "
               "after its row; Elec2: with the next row). Scenario rows are one minute apart.")
    out.append("")
    out.extend(protocol_table(runs))
    out.append("")
    out.append(f"Bootstrap {args.bootstrap:,} rows. Periodic: every {args.period} rows on the last {args.window} "
               f"matured rows. River ARF / HAT: test-then-train, each label learned the moment it arrives. auto: "
               f"`{args.policy}` (regression: `{args.regression_policy}`), `tick_every={args.tick_every}`. Oracle: "
               f"refit {ORACLE_ROWS} and {4 * ORACLE_ROWS} matured rows after each change point on the new concept's "
               f"rows; a stream without change points (hyperplane, sea-stationary): best (period, window) in hindsight "
               f"of {HYPERPLANE_GRID}.")
    out.append("")
    out.append("## Headline: mean metric over seeds (accuracy ↑, MAE ↓), the seeds' min–max in brackets")
    out.append("")
    shown = [p for p in POLICY_ORDER if any(p in cells for cells in table.values())]
    out.append("| stream (regime) | " + " | ".join(shown) + " | best non-oracle baseline | auto − best |")
    out.append("|---|" + "---:|" * len(shown) + "---|---:|")
    for label, cells in table.items():
        row = []
        for p in shown:
            c = cells.get(p)
            row.append("—" if c is None else spread(c) + (f" {c['family']}" if p in ("static", "periodic", "oracle")
                                                            else ""))
        best, auto = best_baseline(cells), cells.get("auto")
        best_text = "—" if best is None else f"{best[0]} {fmt(best[1]['mean'], best[1]['metric'])}"
        gap = "—"
        if best is not None and auto is not None:
            m = auto["metric"]
            gap = (f"{gap_text(m, auto['mean'], best[1]['mean'])} "
                   f"{_verdict(meets_baseline(m, auto['mean'], best[1]['mean']))}")
        out.append(f"| {label} | " + " | ".join(row) + f" | {best_text} | {gap} |")
    out.append("")
    out.append("## Retrains, compute and decision quality")
    out.append("")
    out.append("Means per run. Retrains: refits (periodic, oracle), training decisions of auto (stateless / fine-tune "
               "decisions plus incremental checkpoints judged by the gate); models: models fitted after the "
               "bootstrap (auto trains one challenger per pool member per decision). CPU s: process CPU seconds of "
               "the policy's whole run (auto: the replay — store writes, serving, ticks — plus the harmful-promotion "
               "check); wall s on this shared machine.")
    out.append("")
    out.append("| stream (regime) | policy | family | seeds | metric mean (median; min–max) | retrains | models | "
               "CPU s | wall s |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for label, cells in table.items():
        for p in shown:
            if p not in cells:
                continue
            c = cells[p]
            m = c["metric"]
            out.append(f"| {label} | {p} | {c['family'] or '—'} | {c['seeds']} | {fmt(c['mean'], m)} "
                       f"({fmt(c['median'], m)}; {fmt(c['min'], m)}–{fmt(c['max'], m)}) | {c['retrains']:.1f} | "
                       f"{c['models_trained']:.1f} | {c['cpu']:.1f} | {c['wall']:.1f} |")
    with_auto = {label: cells["auto"] for label, cells in table.items() if "auto" in cells}
    if with_auto:
        out.append("")
        out.append("### auto: promotions, harmful promotions, detection delays")
        out.append("")
        out.append("| stream (regime) | promotions (all seeds) | harmful (all seeds) | max promotions of one racer in "
                   "one run | rollbacks | failed decisions | controller s / run | detection delay (rows after the "
                   "change point) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---|")
        for label, c in with_auto.items():
            per_racer = "—" if c["max_per_racer"] is None else c["max_per_racer"]
            out.append(f"| {label} | {c['promotions']} | {c['harmful']} | {per_racer} | {c['rollbacks']} | "
                       f"{c['failed']} | {c['controller']:.1f} | {delays_text(c['delays'])} |")
    fams = list(dict.fromkeys(f for cells in table.values() for p in ("static", "periodic", "oracle") if p in cells
                              for f in cells[p]["families"]))
    if fams:
        out.append("")
        out.append("### Every family of the fixed baselines (mean over seeds)")
        out.append("")
        out.append("| stream (regime) | policy | " + " | ".join(fams) + " |")
        out.append("|---|---|" + "---:|" * len(fams))
        for label, cells in table.items():
            for p in ("static", "periodic", "oracle"):
                if p in cells:
                    fs = cells[p]["families"]
                    out.append(f"| {label} | {p} | " + " | ".join(
                        fmt(fs[f]["mean"], fs[f]["metric"]) if f in fs else "—" for f in fams) + " |")
    whatif = [r for r in runs if r.extra.get("what_if")]
    if whatif:
        out.append("")
        out.append("### What serving a snapshot costs: ARF alone, served from a copy refreshed every C rows")
        out.append("")
        out.append("The same ARF pass as `river-arf` (it learns every label the moment it arrives), but the rows are "
                   "predicted by a copy of it refreshed every C rows — what a River champion that only serves its "
                   "registered checkpoint would score if every checkpoint were promoted at once.")
        out.append("")
        cs = sorted({r.extra["snapshot_every"] for r in whatif})
        out.append("| stream (regime) | river-arf (live) | " + " | ".join(f"copy every {c}" for c in cs) + " |")
        out.append("|---|---:|" + "---:|" * len(cs))
        for label, cells in table.items():
            if "river-arf" not in cells:
                continue
            m = cells["river-arf"]["metric"]
            out.append(f"| {label} | {fmt(cells['river-arf']['mean'], m)} | " + " | ".join(
                fmt(cells[f"river-arf served every {c}"]["mean"], m) if f"river-arf served every {c}" in cells
                else "—" for c in cs) + " |")
    out.append("")
    out.extend(targets_table(table, regime_map))
    out.append("")
    kept = ""
    if path.is_file() and ANALYSIS_MARKER in path.read_text():
        text = path.read_text()
        kept = text[text.index(ANALYSIS_MARKER):]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n" + (kept or ANALYSIS_MARKER + "\n"))


# ------------------------------------------------------------------------------------------------ main


DEFAULT_OUT = REPO / "docs" / "benchmarks-policies.md"


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def git_commit() -> tuple[str, bool]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def protocol_of(args: argparse.Namespace) -> dict[str, Any]:
    """What two raw files must share to be merged (rows per stream and regime are checked on the runs)."""
    return {**{key: getattr(args, key) for key in PROTOCOL_KEYS}, "oracle_rows": ORACLE_ROWS, "horizon": HORIZON,
            "hyperplane_grid": [list(pair) for pair in HYPERPLANE_GRID]}


def _delay_from_command(command: str) -> int:
    """The scenarios' label delay of a raw file written before it was recorded on each run (the old default: 10)."""
    found = set(re.findall(r"--label-delays?[ =](\d+)", command))
    return int(found.pop()) if len(found) == 1 else 10


def load_raw(path: Path) -> tuple[dict[str, Any], list[Run]]:
    """A raw JSON file: its meta and its runs, each with its label delay (inferred for files that predate it)."""
    data = json.loads(path.read_text())
    meta = data["meta"]
    fallback = _delay_from_command(meta.get("command", ""))
    runs = []
    for raw in data["runs"]:
        run = Run(**raw)
        if run.label_delay is None:
            run.label_delay = ELEC2_DELAY if run.stream == "elec2" else fallback
        runs.append(run)
    return meta, runs


class MergeError(ValueError):
    """The files given to --merge are not parts of one protocol."""


def merge_runs(parts: Sequence[tuple[Path, dict[str, Any], list[Run]]]) -> tuple[list[Run], dict[str, Any], int]:
    """Join the runs of several raw files, each run once by its key (stream, label delay, seed, policy, family; the
    first file wins). Returns the runs, the shared protocol and how many duplicates were dropped; raises
    :class:`MergeError` if two files disagree on the protocol or on a stream's rows in one regime."""
    protocol: dict[str, tuple[Path, Any]] = {}
    for path, meta, runs in parts:
        has_auto = any(r.policy == "auto" for r in runs)
        for key, value in (meta.get("protocol") or {}).items():
            if key in AUTO_ONLY_KEYS and not has_auto:
                continue  # how auto ticks does not concern a baselines-only file
            if key in protocol and protocol[key][1] != value:
                raise MergeError(f"{path} has {key}={value!r} but {protocol[key][0]} has {protocol[key][1]!r}: not "
                                 "the same protocol")
            protocol.setdefault(key, (path, value))
    unique: dict[tuple, Run] = {}
    dropped = 0
    for _, _, runs in parts:
        for r in runs:
            if r.key() in unique:
                dropped += 1
            else:
                unique[r.key()] = r
    rows: dict[tuple, dict[int, Path]] = {}
    for path, _, runs in parts:
        for r in runs:
            if r.extra.get("rows"):
                rows.setdefault((r.stream, r.label_delay), {}).setdefault(r.extra["rows"], path)
    mixed = {k: v for k, v in rows.items() if len(v) > 1}
    if mixed:
        (stream, delay), counts = next(iter(mixed.items()))
        raise MergeError(f"{regime_label(stream, delay)} was run on different row counts: " + ", ".join(
            f"{n:,} rows in {p}" for n, p in counts.items()) + "; not the same protocol")
    return list(unique.values()), {k: v for k, (_, v) in protocol.items()}, dropped


def merge(args: argparse.Namespace) -> None:
    """The report from the raw JSON files of earlier runs (e.g. a baselines-only and an auto-only one); their
    commands, load averages and wall times are joined."""
    parts, commands, loads, seconds, commits, dirty = [], [], [], 0.0, [], False
    for path in args.merge:
        meta, runs = load_raw(path)
        parts.append((path, meta, runs))
        commands.append(meta["command"])
        loads.append("/".join(meta["loads"][:1] + meta["loads"][-1:]))
        seconds += meta["seconds"]
        commits.append(meta["commit"])
        dirty = dirty or meta["dirty"]
    try:
        runs, protocol, dropped = merge_runs(parts)
    except MergeError as error:
        sys.exit(f"--merge: {error}")
    if dropped:
        print(f"--merge: {dropped} runs present in more than one file were counted once (the first file's)")
    for key in PROTOCOL_KEYS:  # the report states the runs' protocol, not this command line's defaults
        if key in protocol:
            setattr(args, key, protocol[key])
    command = "`, then `".join(commands + [" ".join([".venv/bin/python benchmarks/policies.py --merge",
                                                     *map(str, args.merge), "--out", str(args.out)])])
    write_report(args.out, runs, args, command, ", ".join(dict.fromkeys(commits)), dirty, seconds, loads)
    meta = {"command": command, "commit": ", ".join(dict.fromkeys(commits)), "dirty": dirty, "loads": loads,
            "seconds": seconds, "merged": [str(p) for p in args.merge], "protocol": protocol_of(args)}
    raw = args.out.with_suffix(".json")
    raw.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=1, default=str))
    print(f"wrote {args.out} and {raw}")


def plan(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """The (stream, seed, label delay) jobs of one process."""
    delays = args.label_delays
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(name, seed, delay) for delay in delays for seed in seeds for name in args.scenarios
            if name != STATIONARY]
    if STATIONARY in args.scenarios:
        stationary = [d for d in delays if d in args.stationary_delays]
        if not stationary:
            print(f"note: {STATIONARY} runs only in the regimes of --stationary-delays "
                  f"({' '.join(map(str, args.stationary_delays)) or 'none'}), none of which is in --label-delays "
                  f"({' '.join(map(str, delays))}); it is left out", file=sys.stderr)
        jobs += [(STATIONARY, seed, delay) for delay in stationary
                 for seed in range(args.first_seed, args.first_seed + args.stationary_seeds)]
    if not args.no_elec2:
        jobs.append(("elec2", 0, ELEC2_DELAY))
    return jobs


Job = tuple[str, int, int]


def bench_job(job: Job, args: argparse.Namespace, policies: dict[str, LoadedPolicy]) -> list[Run]:
    """Every run of one (stream, seed, label delay) job; it depends on nothing but its arguments (the streams and
    the runs are seeded), so it gives the same runs in this process or on a Dask worker."""
    name, seed, delay = job
    if name == "elec2":
        stream = elec2(rows=args.elec2_rows)
    else:
        rows = args.stationary_rows if name == STATIONARY else args.rows
        stream = scenario(name, rows=rows, seed=seed, label_delay=timedelta(minutes=delay))
    keep = args.keep / f"delay-{delay}" if args.keep is not None else None
    with threadpool_limits(1):
        new = bench_stream(stream, seed, policies[stream.spec.task], args, keep=keep)
    for r in new:
        r.extra["rows"] = stream.rows
        r.label_delay = delay
    return new


def run_jobs_local(jobs: Sequence[Job], args: argparse.Namespace,
                   policies: dict[str, LoadedPolicy]) -> Iterator[tuple[int, list[Run]]]:
    """The jobs one after the other in this process: (index, runs) as each ends."""
    for index, job in enumerate(jobs):
        yield index, bench_job(job, args, policies)


def _dask_task(job: Job, args: argparse.Namespace, policies: dict[str, LoadedPolicy]) -> list[dict[str, Any]]:
    """One job on a Dask worker; its runs go back as plain dicts (this script's ``Run`` is not importable there)."""
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    return [asdict(r) for r in bench_job(job, args, policies)]


def run_jobs_dask(jobs: Sequence[Job], args: argparse.Namespace,
                  policies: dict[str, LoadedPolicy]) -> Iterator[tuple[int, list[Run]]]:
    """One task per job on the Dask scheduler at ``args.dask``: (index, runs) as each task ends.

    A script is no module a worker can import, so its functions travel by value (cloudpickle); the workers need
    driftpilot importable (the repository on their ``PYTHONPATH``, or installed) and, for ``--keep``, write the stores
    on their own disk. A task that fails stops the benchmark with its error (the runs so far are in the raw JSON)."""
    import cloudpickle
    from distributed import Client, as_completed

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        client = Client(args.dask, timeout=30, set_as_default=False)
    except OSError as exc:
        sys.exit(f"--dask: the Dask scheduler at {args.dask} is unreachable ({exc}); start one (`dask scheduler`, "
                 "`dask worker ADDRESS --nthreads 1`) or run without --dask")
    with client:
        workers = len(client.scheduler_info()["workers"])
        print(f"--dask: {len(jobs)} jobs on {workers} workers at {args.dask}", file=sys.stderr)
        def task(job: Job) -> list[dict[str, Any]]:  # a closure: plain pickle refuses it, so cloudpickle sends it
            return _dask_task(job, args, policies)

        futures = [client.submit(task, job, pure=False, key=f"policies-{job[0]}-seed{job[1]}-delay{job[2]}-{index}")
                   for index, job in enumerate(jobs)]
        index_of = {future.key: index for index, future in enumerate(futures)}
        with client.as_current():  # as_completed finds its client as the current one
            completed = as_completed(futures)
        for future in completed:
            yield index_of[future.key], [Run(**raw) for raw in future.result()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="seed 0, 4,000 rows per scenario (sea-stationary too), 10,000 Elec2 rows")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per regime of the drifting scenarios")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first..first+seeds-1 (split one protocol over processes, then --merge)")
    parser.add_argument("--rows", type=int, default=10_000, help="rows of each drifting scenario")
    parser.add_argument("--bootstrap", type=int, default=1_000)
    parser.add_argument("--label-delays", type=int, nargs="+", default=None, metavar="ROWS",
                        help="the scenarios' label-delay regimes in rows (minutes), each a full set of runs in this "
                             f"process (default: {' '.join(map(str, DEFAULT_DELAYS))})")
    parser.add_argument("--label-delay", type=int, default=None, metavar="ROWS",
                        help="a single regime: the same as --label-delays ROWS")
    parser.add_argument("--stationary-rows", type=int, default=20_000, help=f"rows of {STATIONARY}")
    parser.add_argument("--stationary-seeds", type=int, default=10, help=f"seeds of {STATIONARY} (from --first-seed)")
    parser.add_argument("--stationary-delays", type=int, nargs="*", default=[10], metavar="ROWS",
                        help=f"the regimes (of --label-delays) in which {STATIONARY} runs (default: 10)")
    parser.add_argument("--elec2-rows", type=int, default=None)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS), metavar="NAME",
                        help=f"scenarios to run (default: all: {', '.join(SCENARIOS)})")
    parser.add_argument("--no-elec2", action="store_true")
    parser.add_argument("--period", type=int, default=500)
    parser.add_argument("--window", type=int, default=2000)
    parser.add_argument("--tick-every", type=int, default=None,
                        help="auto ticks every N rows; default: at the policy's loop.tick of event time (the "
                             "scenarios' rows come a minute apart, Elec2's half an hour: a tick between two rows)")
    parser.add_argument("--snapshot-every", type=int, nargs="*", default=[], metavar="C",
                        help="what-ifs: also score ARF served from a copy refreshed every C rows (costly; default: "
                             "none)")
    parser.add_argument("--no-oracle-grid", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=["river-arf", "river-hat", "oracle"],
                        help="baselines not to run (the expensive ones, when the machine is short of time)")
    parser.add_argument("--policy", default="config/backtest-auto.yaml")
    parser.add_argument("--regression-policy", default="config/backtest-auto-regression.yaml")
    parser.add_argument("--skip-auto", action="store_true",
                        help="baselines only; writes the raw JSON and a partial report (needs its own --out)")
    parser.add_argument("--only-auto", action="store_true",
                        help="auto only, no baselines; writes the raw JSON and a partial report (needs its own --out)")
    parser.add_argument("--keep", type=Path, default=None, help="copy each auto run's stores into this folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--dask", default=None, metavar="ADDRESS",
                        help="run the (stream, seed, delay) jobs as tasks on the Dask scheduler at ADDRESS "
                             "(tcp://host:8786), one task per job; the same runs and report as a local run")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="write the report from the raw JSON of earlier runs (e.g. a --skip-auto and an "
                             "--only-auto run of the same protocol) instead of running anything")
    args = parser.parse_args(argv)
    if args.label_delays is not None and args.label_delay is not None:
        parser.error("give --label-delays or --label-delay, not both")
    delays = args.label_delays or ([args.label_delay] if args.label_delay is not None else DEFAULT_DELAYS)
    if any(d < 0 for d in delays):
        parser.error("a label delay is a number of rows, >= 0")
    args.label_delays = list(dict.fromkeys(delays))
    if args.skip_auto and args.only_auto:
        parser.error("--skip-auto and --only-auto exclude each other (run both parts, then --merge them)")
    if (args.skip_auto or args.only_auto) and not args.merge and args.out.resolve() == DEFAULT_OUT.resolve():
        parser.error("--skip-auto / --only-auto write a partial result: give it its own --out, then --merge the "
                     f"parts into {DEFAULT_OUT.relative_to(REPO)}")
    if args.quick:
        args.seeds, args.rows = 1, 4_000
        args.stationary_seeds, args.stationary_rows = 1, 4_000
        args.elec2_rows = args.elec2_rows or 10_000
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        merge(args)
        return
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    command = "  ".join([".venv/bin/python benchmarks/policies.py", *(argv if argv is not None else sys.argv[1:])])
    command = " ".join(command.split())
    commit, dirty = git_commit()
    loads = [load_average()]
    started = time.perf_counter()
    policies = {"classification": load_policy(REPO / args.policy),
                "regression": load_policy(REPO / args.regression_policy)}
    jobs = plan(args)
    slots: list[list[Run] | None] = [None] * len(jobs)  # each job's runs, in job order whatever order they finish in
    raw = args.out.with_suffix(".json")
    raw.parent.mkdir(parents=True, exist_ok=True)
    part = "baselines" if args.skip_auto else "auto" if args.only_auto else "baselines and auto"
    results = run_jobs_dask(jobs, args, policies) if args.dask else run_jobs_local(jobs, args, policies)
    with tqdm(total=len(jobs), desc="streams", unit="stream") as bar:
        for index, new in results:
            name, seed, delay = jobs[index]
            label = regime_label(name, delay)
            bar.update()
            bar.set_postfix_str(f"{label} seed {seed}")
            slots[index] = new
            runs = [r for slot in slots if slot for r in slot]
            meta = {"command": command, "commit": commit, "dirty": dirty, "loads": [*loads, load_average()],
                    "seconds": time.perf_counter() - started, "protocol": protocol_of(args),
                    "label_delays": args.label_delays, "part": part,
                    "executor": f"dask {args.dask}" if args.dask else "local"}
            raw.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=1, default=str))
            tqdm.write(f"{label} seed {seed}: " + " ".join(
                f"{r.policy}/{r.family or '-'} {r.value:.4f} ({r.cpu_seconds:.0f}s)" for r in new))
            auto = next((r for r in new if r.policy == "auto"), None)
            if auto is not None:
                tqdm.write(f"  auto retrains {auto.retrains} promotions {auto.extra.get('promotions')} harmful "
                           f"{auto.extra.get('harmful')} delays {auto.extra.get('detection_delays')} strategies "
                           f"{auto.extra.get('strategies')} wall {auto.wall_seconds:.0f}s")
    runs = [r for slot in slots if slot for r in slot]
    loads.append(load_average())
    write_report(args.out, runs, args, command, commit, dirty, time.perf_counter() - started, ["/".join(loads)])
    print(f"wrote {args.out} and {raw}")


if __name__ == "__main__":
    main()
