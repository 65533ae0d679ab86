"""Benchmark: training jobs through the local executor (a spawned process per job) vs a Dask cluster (Part 14, item 4).

    .venv/bin/python benchmarks/executor.py                 # 100 models, 3 repetitions
    .venv/bin/python benchmarks/executor.py --models 20     # the run shown in docs/benchmarks-executor.md

``--models`` models (one policy each; one SQLite event store and one SQLite MLflow store, as a single-host
``LocalCluster`` allows) are bootstrapped on ``--rows`` labeled rows of a seeded stationary stream. One job = one
model's retrain: :func:`controller.loop.runners.run_job` (read the window from the store, fit the policy's
estimator, register the version in MLflow), exactly what the daemon's runners run. Measured, side by side in one
process, each executor in every repetition (medians of ``--reps``):

* **throughput**: all ``--models`` jobs submitted at once, polled until every one is done (jobs/s);
  ``local`` = :class:`~controller.loop.runners.ProcessRunner` with ``--workers`` (2) slots, ``dask`` =
  :class:`~controller.loop.dask_runner.DaskRunner` on a ``LocalCluster`` of ``--workers`` processes, 1 thread each;
* **one job alone** (``--latency-jobs`` jobs, one after the other): its wall time from submit to done, and the
  **overhead** = that minus the fit alone (the same estimator fitted in this process on the same rows);
  ``inline`` (:func:`run_job` in this process) splits the overhead into the job's own work (store read, MLflow
  registration) and the executor's (process spawn and imports; task dispatch and result transfer).

Every job must end ``done`` with its version registered, or the benchmark stops. Writes docs/benchmarks-executor.md
(or ``--out``); a hand-written analysis below the marker survives a re-run.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bench_kit

bench_kit.one_thread_per_process()
REPO = bench_kit.repo_first()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from controller.actions.bootstrap import bootstrap  # noqa: E402
from controller.actions.model_registry import open_registry  # noqa: E402
from controller.clock import ManualClock, SystemClock  # noqa: E402
from controller.config import LoadedPolicy  # noqa: E402
from controller.loop.runners import JobState, ProcessRunner, TrainingJob, TrainingRunner, run_job  # noqa: E402
from controller.policy_loader import load_policy  # noqa: E402
from controller.store import EventStore  # noqa: E402

ANALYSIS_MARKER = "<!-- analysis: written by hand, kept by benchmarks/executor.py when it rewrites the tables -->"
DEFAULT_OUT = REPO / "docs" / "benchmarks-executor.md"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NUMERIC = [f"x{i}" for i in range(8)]
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
  params: {{max_iter: 300}}
bootstrap: {{holdout_fraction: 0.2}}
loop: {{tick: 1m}}
rules:
  - name: volume
    when: {{new_labels: {{at_least: 1000000000}}}}
    do: {{strategy: stateless}}
"""


def stream(seed: int, rows: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(size=rows) for name in NUMERIC})
    logit = frame.x0 + 0.5 * frame.x1 - 0.3 * frame.x2 + rng.normal(0, 0.5, size=rows)
    return frame, pd.Series((logit > 0).astype(int), name="y")


def build_models(folder: Path, models: int, rows: int) -> dict[str, LoadedPolicy]:
    """``models`` policies on one store and one MLflow store, each bootstrapped (version 1) on ``rows`` rows."""
    clock = ManualClock(T0)
    features = "\n".join(f"  {n}: numeric" for n in NUMERIC)
    store_url, mlflow_uri = f"sqlite:///{folder / 'events.db'}", f"sqlite:///{folder / 'mlflow.db'}"
    policies: dict[str, LoadedPolicy] = {}
    store = None
    for i in tqdm(range(models), desc="bootstrapping models", leave=False):
        name = f"exec-{i:03d}"
        path = folder / f"{name}.yaml"
        path.write_text(POLICY.format(name=name, features=features, store_url=store_url, mlflow_uri=mlflow_uri,
                                      artifacts=folder / "mlartifacts"))
        loaded = load_policy(path, environ={})
        store = store or EventStore.from_url(store_url, clock)
        x, y = stream(i, rows)
        times = pd.Series([T0 - timedelta(minutes=rows - k) for k in range(rows)])
        bootstrap(loaded, x, y, store=store, registry=open_registry(loaded.config, clock), clock=clock,
                  event_times=times)
        policies[name] = loaded
    if store is not None:
        store.dispose()
    return policies


class Jobs:
    """Numbered retrain jobs, one per model per round (each registers a new version)."""

    def __init__(self) -> None:
        self.count = 0

    def make(self, model: str) -> TrainingJob:
        self.count += 1
        return TrainingJob(decision_id=f"bench-{self.count:05d}", model=model, strategy="stateless",
                           candidates=("default",), as_of=T0 + timedelta(hours=1), trigger="manual",
                           window={"kind": "all"}, timeout=timedelta(minutes=30))


def check(job: TrainingJob, state: JobState) -> None:
    if state.status != "done" or not all(r.ok for r in state.candidate_results()):
        raise SystemExit(f"job {job.decision_id} of {job.model} did not train: {state}")


def drain(runner: TrainingRunner, jobs: list[TrainingJob], poll_every: float = 0.01) -> float:
    """Submit every job, poll until all are done; the wall seconds from the first submit to the last result."""
    start = time.perf_counter()
    for job in jobs:
        runner.submit(job)
    pending = {job.decision_id: job for job in jobs}
    while pending:
        for decision_id in list(pending):
            state = runner.poll(decision_id)
            if state.status != "running":
                check(pending.pop(decision_id), state)
        time.sleep(poll_every)
    return time.perf_counter() - start


def fit_seconds(loaded: LoadedPolicy, rows: int, seed: int) -> float:
    """The fit alone: the policy's estimator on the job's rows (the window's 80 % training share), in this process."""
    from sklearn.linear_model import LogisticRegression

    x, y = stream(seed, rows)
    n = int(rows * (1 - loaded.config.bootstrap.holdout_fraction))
    start = time.perf_counter()
    LogisticRegression(max_iter=300).fit(x.iloc[:n], y.iloc[:n])
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return commit + (" (plus uncommitted changes of other engineers in the shared tree)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100, help="models, each retraining once per throughput run")
    parser.add_argument("--rows", type=int, default=2_000, help="labeled rows per model (the retrain window)")
    parser.add_argument("--workers", type=int, default=2, help="ProcessRunner slots = Dask worker processes")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--latency-jobs", type=int, default=5, help="jobs run alone, one after the other, per rep")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    from distributed import LocalCluster

    from controller.loop.dask_runner import DaskRunner

    command = " ".join([".venv/bin/python benchmarks/executor.py", *(argv if argv is not None else sys.argv[1:])])
    loads = [load_average()]
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    policies = build_models(folder, args.models, args.rows)
    names = list(policies)
    setup = time.perf_counter() - started
    jobs = Jobs()
    clock = SystemClock()
    fits = [fit_seconds(policies[names[i % len(names)]], args.rows, i % len(names)) for i in range(20)]

    class Inline:  # run_job in this process, behind the runner interface (what a job costs without an executor)
        def __init__(self) -> None:
            self.done: dict[str, JobState] = {}

        def submit(self, job: TrainingJob) -> None:
            out = run_job(job, policies[job.model])
            self.done[job.decision_id] = JobState.from_message(out)

        def poll(self, decision_id: str) -> JobState:
            return self.done.pop(decision_id, JobState("unknown"))

    throughput: dict[str, list[float]] = {"local": [], "dask": []}
    latency: dict[str, list[float]] = {"inline": [], "local": [], "dask": []}
    with LocalCluster(n_workers=args.workers, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster:
        runners: dict[str, Callable[[], Any]] = {
            "inline": Inline,
            "local": lambda: ProcessRunner(policies, clock, max_workers=args.workers),
            "dask": lambda: DaskRunner(policies, clock, address=cluster.scheduler_address),
        }
        dask_runner = runners["dask"]()
        drain(dask_runner, [jobs.make(names[0]) for _ in range(args.workers)])  # connect, warm the workers' imports
        for rep in tqdm(range(args.reps), desc="repetitions"):
            for kind in ("local", "dask") if rep % 2 == 0 else ("dask", "local"):  # interleaved, order alternating
                runner = dask_runner if kind == "dask" else runners[kind]()
                throughput[kind].append(args.models / drain(runner, [jobs.make(m) for m in names]))
            for kind in ("inline", "local", "dask"):
                runner = dask_runner if kind == "dask" else runners[kind]()
                for i in range(args.latency_jobs):
                    latency[kind].append(drain(runner, [jobs.make(names[(rep * args.latency_jobs + i) % len(names)])]))
        dask_runner.shutdown()
    loads.append(load_average())
    total = time.perf_counter() - started
    result = {"throughput": throughput, "latency": latency, "fit": median(fits), "setup": setup, "total": total,
              "jobs": jobs.count}
    write_report(args.out, args, command, loads, result)
    print(f"wrote {args.out}")
    for kind, values in throughput.items():
        print(f"{kind}: {median(values):.2f} jobs/s; alone {median(latency[kind]) * 1000:.0f} ms")
    print(f"inline alone {median(latency['inline']) * 1000:.0f} ms; fit {median(fits) * 1000:.1f} ms")


def write_report(path: Path, args: argparse.Namespace, command: str, loads: list[str], r: dict[str, Any]) -> None:
    import distributed
    import mlflow
    import sklearn

    fit = r["fit"]
    lat = {k: median(v) for k, v in r["latency"].items()}
    tput = {k: median(v) for k, v in r["throughput"].items()}
    out = ["# Benchmark: training jobs on the local executor vs a Dask cluster", ""]
    out.append(f"Reproduce: `{command}` (from the repository root). Measured commit: {git_commit()}.")
    out.append("")
    out.append(f"Python {platform.python_version()}, scikit-learn {sklearn.__version__}, MLflow {mlflow.__version__}, "
               f"distributed {distributed.__version__}, {platform.machine()} {platform.system()}; {os.cpu_count()} "
               f"cores shared with other engineers' work (1-min load average at start/end: {'/'.join(loads)}); "
               f"BLAS/OpenMP on one thread; run {datetime.now(UTC):%Y-%m-%d}; {r['total'] / 60:.1f} min in all "
               f"({r['setup']:.0f} s bootstrapping {args.models} models), {r['jobs']} jobs.")
    out.append("")
    out.append(f"Protocol: {args.models} models (LogisticRegression on {len(NUMERIC)} numeric features, "
               f"{args.rows:,} labeled rows each, one SQLite event store and one SQLite MLflow store); one job = one "
               f"model's stateless retrain on all its rows through `run_job` (store read, fit, MLflow registration "
               f"of a new version). `local`: `ProcessRunner`, {args.workers} slots, one spawned process per job. "
               f"`dask`: `DaskRunner` on a `LocalCluster` of {args.workers} worker processes × 1 thread (warmed by "
               f"{args.workers} jobs first). `inline`: `run_job` in the benchmark's own process. Medians of "
               f"{args.reps} repetitions, the executors interleaved in each.")
    out.append("")
    out.append(f"| executor | throughput, {args.models} jobs at once (jobs/s) | per rep | one job alone (ms) | "
               "overhead = alone − fit (ms) |")
    out.append("|---|---:|---|---:|---:|")
    for kind in ("inline", "local", "dask"):
        t = tput.get(kind)
        reps = ", ".join(f"{v:.2f}" for v in r["throughput"].get(kind, []))
        out.append(f"| {kind} | {'—' if t is None else f'{t:.2f}'} | {reps or '—'} | {lat[kind] * 1000:.0f} | "
                   f"{(lat[kind] - fit) * 1000:.0f} |")
    out.append("")
    out.append(f"Fit alone (the same estimator on the same {int(args.rows * 0.8):,} rows in this process, median of "
               f"20): {fit * 1000:.1f} ms. One job alone: median of {args.reps} × {args.latency_jobs} jobs, each "
               f"submitted and polled (10 ms) to its end before the next. Split of a job alone: the job's own work "
               f"besides the fit (store read, MLflow registration) = inline − fit = {(lat['inline'] - fit) * 1000:.0f} "
               f"ms; the executor's = local − inline = {(lat['local'] - lat['inline']) * 1000:.0f} ms (spawning a "
               f"process that imports driftpilot, scikit-learn and MLflow), dask − inline = "
               f"{(lat['dask'] - lat['inline']) * 1000:.0f} ms (dispatch, pickled job and policy, result back).")
    out.append("")
    keep = ""
    if path.exists() and ANALYSIS_MARKER in path.read_text():
        keep = path.read_text().split(ANALYSIS_MARKER, 1)[1]
    out.append(ANALYSIS_MARKER)
    path.write_text("\n".join(out) + (keep if keep else "\n"))


if __name__ == "__main__":
    main()
