"""Benchmark of cost-aware retraining: total cost = errors + retrains x a retrain's cost, at three cost ratios.

    .venv/bin/python benchmarks/costs.py                 # the protocol below (two worker processes)
    .venv/bin/python benchmarks/costs.py --quick         # 3,000 rows of two scenarios: a smoke run

Every policy sees the same streams under the prequential protocol of benchmarks/policies.py (the first
``--bootstrap`` rows train the first model; each later row is predicted by the model of that moment; a label is
usable once it arrived, ``--label-delay`` rows later). A policy's **total cost** at a ratio R is its errors
(classification: rows served wrong; regression: summed absolute error) + R x its retrains, at each ratio of
``controller.backtest.costs.BENCHMARK_RATIOS`` (a retrain costs 10, 100 or 1,000 errors). Policies:

* ``auto``: the real controller with ``--policy`` (config/backtest-auto-costs.yaml: the race, and one automatic retrain
  rule, ``when: {cost: pays}``), its ``costs.retrain`` set to the ratio: one replay per ratio. A retrain is a retrain
  decision (it trains the pool's batch members, two models); the race's online learners cost no retrain.
* ``periodic``: a stateless refit every P rows on the newest W matured rows, for every (family, P, W) of the grid
  (``PERIODS`` x ``WINDOWS`` x the pool's scikit-learn families, plus never refitting); **best in hindsight**: the
  grid point with the lowest total cost at that ratio, per stream and seed — the strongest fixed schedule a user
  could have picked had they known the stream.
* ``drift-alarm``: a refit on the newest W matured rows at every ADWIN alarm on the served model's errors (checked
  every ``--tick-every`` rows, as the controller ticks); the best (family, W) in hindsight at each ratio.
* ``river-arf``: River's adaptive random forest alone, learning every label as it arrives (no retrain).
* ``auto (before)``: the Part 12 policy without costs (``--before-policy``, config/backtest-auto.yaml: the same race,
  retraining on every drift alarm and every 500 new labels), run once and scored at each ratio: what the cost
  trigger changed, side by side.
* ``oracle``: a refit right after each true change point once 500 matured rows of the new concept exist, and again at
  2,000 (benchmarks/policies.py); the better family in hindsight. Streams without change points have none.

Targets (issue "Part 13"): ``auto``'s total cost <= the best-in-hindsight periodic schedule's at every ratio and
within 10 % of the oracle's; at the middle ratio <= 1/3 of that periodic schedule's retrains at equal or better
accuracy. Writes docs/benchmarks-costs.md (a hand-written analysis below the marker survives a re-run) and the raw
runs as JSON beside it. BLAS/OpenMP run on one thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bench_kit

bench_kit.one_thread_per_process()
REPO = bench_kit.repo_first()

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from controller.backtest.costs import BENCHMARK_RATIOS, retrain_count, served_loss  # noqa: E402
from controller.backtest.replay import replay  # noqa: E402
from controller.backtest.result import ReplayStream  # noqa: E402
from controller.backtest.streams import scenario  # noqa: E402
from controller.config import LoadedPolicy  # noqa: E402
from controller.policy_loader import load_policy  # noqa: E402

P = bench_kit.load_script("policies")  # its protocol, refit schedules and River baseline

ANALYSIS_MARKER = "<!-- analysis: written by hand, kept by benchmarks/costs.py when it rewrites the tables -->"
DEFAULT_OUT = REPO / "docs" / "benchmarks-costs.md"
STREAMS = ["sea-abrupt", "sea-gradual", "sea-recurring", "hyperplane-incremental", "agrawal-abrupt",
           "friedman-gradual"]
PERIODS = (250, 500, 1000, 2000, 4000)
WINDOWS = (1000, 3000)
ADWIN_DELTA = 0.01                # the auto policy's concept-drift detector setting
ORACLE_SLACK = 0.10               # auto's total cost within 10 % of the oracle's
RETRAIN_SHARE = 1 / 3             # at the middle ratio: <= 1/3 of the best periodic schedule's retrains
POLICIES = ("auto", "auto (before)", "periodic", "drift-alarm", "river-arf", "oracle")


@dataclass
class CostRun:
    """One policy (one grid point) on one stream and seed: what it served and what it retrained."""

    stream: str
    seed: int
    policy: str                   # auto | auto (before) | periodic | drift-alarm | river-arf | oracle
    family: str
    metric: str                   # accuracy | mae
    value: float
    loss: float                   # errors or summed absolute error over the served rows
    retrains: int
    cpu_seconds: float
    ratio: float | None = None    # auto: the costs.retrain it ran with; None: the same run at every ratio
    params: dict[str, Any] = field(default_factory=dict)

    def total(self, ratio: float) -> float:
        return self.loss + ratio * self.retrains


# ------------------------------------------------------------------------------------------------ baselines


def _loss(proto: Any, value: float) -> float:
    served = proto.n - proto.B
    return (1.0 - value) * served if proto.task == "classification" else value * served


def _from_run(run: Any, proto: Any, policy: str, **params: Any) -> CostRun:
    return CostRun(run.stream, run.seed, policy, run.family, run.metric, run.value, _loss(proto, run.value),
                   run.retrains, run.cpu_seconds, params=params)


def drift_alarm_refits(spec: Any, proto: Any, seed: int, window: int, tick: int) -> tuple[np.ndarray, int]:
    """Serve with a batch model; at every ADWIN alarm on its matured errors refit on the newest ``window`` rows."""
    from river import drift

    model = P.fit(spec, proto, np.arange(proto.boot_train), seed)
    detector = drift.ADWIN(delta=ADWIN_DELTA)
    order = np.argsort(proto.label, kind="stable")
    order = order[order >= proto.B]
    pointer, refits = 0, 0
    predictions = np.empty(proto.n - proto.B, dtype=object if proto.task == "classification" else float)
    for start in range(proto.B, proto.n, tick):
        stop = min(proto.n, start + tick)
        predictions[start - proto.B:stop - proto.B] = proto.predict(model, start, stop)
        if stop >= proto.n:
            break
        alarm = False
        while pointer < len(order) and proto.label[order[pointer]] <= proto.event[stop] and order[pointer] < stop:
            j = int(order[pointer])
            pointer += 1
            scored = float(P.score(proto.task, predictions[j - proto.B:j - proto.B + 1], proto.y[j:j + 1])[0])
            detector.update(1.0 - scored if proto.task == "classification" else scored)  # the row's loss
            alarm = alarm or detector.drift_detected
        if alarm:
            model = P.fit(spec, proto, proto.matured(stop)[-window:], seed)
            refits += 1
            detector = drift.ADWIN(delta=ADWIN_DELTA)  # the new model's errors, from scratch
    return predictions, refits


def baselines(stream: ReplayStream, seed: int, loaded: LoadedPolicy, args: argparse.Namespace) -> list[CostRun]:
    proto = P.Protocol(stream, args.bootstrap, loaded.config.bootstrap.holdout_fraction)
    batch, river = P.pool_specs(loaded)
    runs: list[CostRun] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for family, spec in batch.items():
            never = P.run_batch("periodic", family, spec, proto, seed, lambda: [])
            runs.append(_from_run(never, proto, "periodic", period=None, window=None))
            for period in PERIODS:
                for window in WINDOWS:
                    run = P.run_batch("periodic", family, spec, proto, seed,
                                      lambda p=period, w=window: P.periodic_refits(proto, p, w))
                    runs.append(_from_run(run, proto, "periodic", period=period, window=window))
            for window in WINDOWS:
                (predictions, refits), cpu, _ = P.timed(
                    lambda w=window, s=spec: drift_alarm_refits(s, proto, seed, w, args.tick_every))
                value = proto.result(predictions)
                runs.append(CostRun(stream.spec.name, seed, "drift-alarm", family, P.metric(proto), value,
                                    _loss(proto, value), refits, cpu, params={"window": window}))
            if stream.spec.change_points:
                oracle = P.run_batch("oracle", family, spec, proto, seed, lambda: P.oracle_refits(proto))
                runs.append(_from_run(oracle, proto, "oracle"))
        arf = P.run_river("river-arf", proto, seed, river["river-arf"])[0]
        runs.append(_from_run(arf, proto, "river-arf"))
    return runs


def auto(stream: ReplayStream, seed: int, loaded: LoadedPolicy, ratio: float | None,
         args: argparse.Namespace) -> CostRun:
    """The controller's replay; ``ratio`` None: the policy as it is (the before policy has no costs)."""
    update: dict[str, Any] = {"bootstrap": loaded.config.bootstrap.model_copy(update={"seed": seed})}
    if ratio is not None:
        update["costs"] = loaded.config.costs.model_copy(update={"retrain": ratio})
    config = loaded.config.model_copy(update=update)
    label = "auto" if ratio is not None else "auto (before)"
    workdir = Path(tempfile.mkdtemp(prefix=f"costs-{stream.spec.name}-{seed}-{ratio}-"))
    try:
        result, cpu, _ = P.timed(lambda: replay(loaded._replace(config=config), stream, workdir,
                                                bootstrap_rows=args.bootstrap, tick_every=args.tick_every,
                                                name=label))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    retrains = [d for d in result.decisions if d["action"] == "retrain"]
    return CostRun(stream.spec.name, seed, label, "", result.metric, result.value, served_loss(result),
                   retrain_count(result), cpu, ratio=ratio,
                   params={"failed": sum(d["status"] == "failed" for d in retrains),
                           "switches": sum(1 for d in result.decisions if d.get("trigger") == "race"),
                           "controller_seconds": round(result.controller_seconds, 1)})


# ------------------------------------------------------------------------------------------------ jobs


def job(task: tuple[str, int, str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One (stream, seed, what) job: ``baselines``, ``before`` or ``auto:<ratio>``. Depends only on its arguments."""
    name, seed, what = task
    stream = scenario(name, rows=args.rows, seed=seed, label_delay=timedelta(minutes=args.label_delay))
    regression = stream.spec.task == "regression"
    loaded = load_policy(args.regression_policy if regression else args.policy)
    if what == "baselines":
        runs = baselines(stream, seed, loaded, args)
    elif what == "before":
        runs = [auto(stream, seed, load_policy(args.before_regression_policy if regression else args.before_policy),
                     None, args)]
    else:
        runs = [auto(stream, seed, loaded, float(what.split(":", 1)[1]), args)]
    return [asdict(r) for r in runs]


def task_of(run: CostRun) -> tuple[str, int, str]:
    """The job a run came from (``--resume`` skips jobs whose runs are in the raw JSON already)."""
    what = {"auto (before)": "before", "auto": f"auto:{run.ratio:g}" if run.ratio is not None else ""}
    return run.stream, run.seed, what.get(run.policy, "baselines")


def plan(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    # The auto replays are the long jobs: first, so the pool's last minutes are not one straggler.
    autos = [(s, seed, f"auto:{ratio:g}") for s in args.streams for seed in args.seeds for _, ratio in args.ratio_list]
    before = [] if args.skip_before else [(s, seed, "before") for s in args.streams for seed in args.seeds]
    return before + autos + [(s, seed, "baselines") for s in args.streams for seed in args.seeds]


# ------------------------------------------------------------------------------------------------ report


def best(runs: list[CostRun], ratio: float) -> CostRun | None:
    return min(runs, key=lambda r: (r.total(ratio), r.retrains)) if runs else None


def cells(runs: list[CostRun], stream: str, ratio: float) -> dict[str, list[CostRun]]:
    """Per policy, one run per seed: the one that ran at this ratio (auto) or the best in hindsight (the others)."""
    out: dict[str, list[CostRun]] = {}
    for seed in sorted({r.seed for r in runs if r.stream == stream}):
        mine = [r for r in runs if r.stream == stream and r.seed == seed]
        for policy in POLICIES:
            group = [r for r in mine if r.policy == policy and (r.ratio is None or r.ratio == ratio)]
            chosen = best(group, ratio)
            if chosen is not None:
                out.setdefault(policy, []).append(chosen)
    return out


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _describe(run: CostRun) -> str:
    if run.policy in ("periodic",):
        return (f"{run.family}, every {run.params['period']:,} rows on {run.params['window']:,}"
                if run.params.get("period") else f"{run.family}, never refit")
    if run.policy == "drift-alarm":
        return f"{run.family}, on {run.params['window']:,} rows"
    return run.family or ""


def _value(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "accuracy" else f"{value:.3f}"


def write_report(path: Path, runs: list[CostRun], args: argparse.Namespace, command: str, commit: str) -> None:
    streams = list(dict.fromkeys(r.stream for r in runs))
    lines = ["# Cost-aware retraining: total cost at three cost ratios", "",
             f"Reproduce: `{command}` (commit {commit}; {platform.machine()}, Python {platform.python_version()}; "
             f"{datetime.now(UTC):%Y-%m-%d}). Streams of {args.rows:,} rows, label delay {args.label_delay} rows, "
             f"seeds {', '.join(map(str, args.seeds))}, bootstrap {args.bootstrap:,} rows, ticks every "
             f"{args.tick_every} rows. Raw runs: `{path.with_suffix('.json').name}`.", "",
             ("Total cost = errors (regression: summed absolute error) + retrains x a retrain's cost. `auto` runs once "
              "per ratio with that ratio as its `costs.retrain`; every other policy runs once and is scored at each "
              "ratio, its grid point (family, period, window) chosen **in hindsight** for that ratio — a bar no "
              "fixed schedule can beat without knowing the stream. Means over seeds."), ""]
    verdicts: list[tuple[str, str, bool, bool, bool | None]] = []
    for name, ratio in args.ratio_list:
        lines += [f"## {name.capitalize()} retrains: one costs {ratio:g} errors", "",
                  "| stream | auto: total (retrains, metric) | auto before costs | periodic, best in hindsight | "
                  "drift alarm, best | river-arf | oracle | auto <= periodic | auto <= 1.1 x oracle |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for stream in streams:
            c = cells(runs, stream, ratio)
            if "auto" not in c or "periodic" not in c:
                continue
            metric = c["auto"][0].metric

            def show(policy: str, detail: bool = False) -> str:
                group = c.get(policy)
                if not group:
                    return "—"
                text = (f"{_mean([r.total(ratio) for r in group]):,.0f} ({_mean([r.retrains for r in group]):.1f}, "
                        f"{_value(metric, _mean([r.value for r in group]))})")
                return text + (f" — {_describe(group[0])}" if detail and len(group) == 1 else "")

            auto_total = _mean([r.total(ratio) for r in c["auto"]])
            periodic_total = _mean([r.total(ratio) for r in c["periodic"]])
            oracle_total = _mean([r.total(ratio) for r in c["oracle"]]) if "oracle" in c else None
            ok_periodic = auto_total <= periodic_total
            ok_oracle = None if oracle_total is None else auto_total <= (1 + ORACLE_SLACK) * oracle_total
            middle = None
            if name == "middle":
                auto_retrains = _mean([r.retrains for r in c["auto"]])
                periodic_retrains = _mean([r.retrains for r in c["periodic"]])
                auto_value = _mean([r.value for r in c["auto"]])
                periodic_value = _mean([r.value for r in c["periodic"]])
                middle = (auto_retrains <= RETRAIN_SHARE * periodic_retrains
                          and (P.better(metric, auto_value, periodic_value) or auto_value == periodic_value))
            verdicts.append((stream, name, ok_periodic, ok_oracle, middle))
            lines.append(f"| {stream} | {show('auto')} | {show('auto (before)')} | {show('periodic', True)} | "
                         f"{show('drift-alarm', True)} | "
                         f"{show('river-arf')} | {show('oracle')} | {_yes(ok_periodic)} | {_yes(ok_oracle)} |")
        lines.append("")
    lines += ["## Targets", "", "| target | met on |", "|---|---|"]
    for label, index, ratios in (("total cost <= the best periodic schedule in hindsight", 2, None),
                                 ("total cost within 10 % of the oracle's", 3, None),
                                 ("middle ratio: <= 1/3 of periodic's retrains at equal or better accuracy", 4,
                                  ("middle",))):
        rows = [v for v in verdicts if v[index] is not None and (ratios is None or v[1] in ratios)]
        met = sum(1 for v in rows if v[index])
        missed = ", ".join(f"{v[0]} ({v[1]})" for v in rows if not v[index])
        lines.append(f"| {label} | {met} of {len(rows)}" + (f"; missed: {missed}" if missed else "") + " |")
    lines += ["", "CPU seconds per run (mean over streams and seeds): " + ", ".join(
        f"{policy} {_mean([r.cpu_seconds for r in runs if r.policy == policy]):.1f}"
        for policy in POLICIES
        if any(r.policy == policy for r in runs)) + " (a periodic or drift-alarm figure is one grid point).", ""]
    analysis = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if ANALYSIS_MARKER in old:
            analysis = old.split(ANALYSIS_MARKER, 1)[1]
    path.write_text("\n".join(lines) + "\n" + ANALYSIS_MARKER + analysis, encoding="utf-8")


def _yes(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", nargs="+", default=STREAMS, choices=STREAMS)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--label-delay", type=int, default=10, help="rows until a label arrives")
    parser.add_argument("--bootstrap", type=int, default=1_000)
    parser.add_argument("--tick-every", type=int, default=50)
    parser.add_argument("--ratios", type=float, nargs=3, default=[r for _, r in BENCHMARK_RATIOS],
                        metavar=("CHEAP", "MIDDLE", "EXPENSIVE"))
    parser.add_argument("--policy", type=Path, default=REPO / "config" / "backtest-auto-costs.yaml")
    parser.add_argument("--regression-policy", type=Path,
                        default=REPO / "config" / "backtest-auto-costs-regression.yaml")
    parser.add_argument("--before-policy", type=Path, default=REPO / "config" / "backtest-auto.yaml",
                        help="the policy without costs shown beside auto (Part 12's)")
    parser.add_argument("--before-regression-policy", type=Path,
                        default=REPO / "config" / "backtest-auto-regression.yaml")
    parser.add_argument("--skip-before", action="store_true", help="leave the before policy out")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the raw JSON beside --out")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs in the raw JSON beside --out and run only the jobs it lacks")
    parser.add_argument("--quick", action="store_true", help="3,000 rows of sea-abrupt and friedman-gradual")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.streams, args.bootstrap = 3_000, ["sea-abrupt", "friedman-gradual"], 500
    args.ratio_list = list(zip(("cheap", "middle", "expensive"), args.ratios, strict=True))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python benchmarks/costs.py " + " ".join(sys.argv[1:] if argv is None else argv)
    raw = args.out.with_suffix(".json")
    runs: list[CostRun] = []
    commit = P.git_commit()[0]
    if args.report_only:  # the page names the run's own command and commit, not this rewrite's
        saved = json.loads(raw.read_text())
        runs = [CostRun(**r) for r in saved["runs"]]
        command, commit = saved.get("command", command), saved.get("commit", commit)
    else:
        if args.resume and raw.exists():
            runs = [CostRun(**r) for r in json.loads(raw.read_text())["runs"]]
        done = {task_of(r) for r in runs}
        tasks = [t for t in plan(args) if t not in done]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool, \
                tqdm(total=len(tasks), desc="jobs", unit="job") as bar:
            futures = {pool.submit(job, task, args): task for task in tasks}
            for future in as_completed(futures):
                runs.extend(CostRun(**r) for r in future.result())
                bar.update()
                bar.set_postfix_str(" ".join(map(str, futures[future])))
                raw.parent.mkdir(parents=True, exist_ok=True)
                raw.write_text(json.dumps({"command": command, "commit": commit,
                                           "runs": [asdict(r) for r in runs]}, indent=1))
    write_report(args.out, runs, args, command, commit)
    print(f"wrote {args.out} and {raw}")


if __name__ == "__main__":
    main()
