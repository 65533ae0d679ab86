"""Benchmark: refreshing a model after N new labeled rows, per strategy.

    .venv/bin/python benchmarks/trainers.py            # full: history 100k, N = 10k and 100k
    .venv/bin/python benchmarks/trainers.py --quick    # history 20k, N = 2k and 10k

Compares wall time and holdout accuracy of
- stateless over the full history (history + new rows)  <- the baseline of every ratio,
- stateless on the new rows only,
- finetune (partial_fit of the parent SGD on the new rows only),
- stateless HistGradientBoosting over the full history (HGB cannot be fine-tuned),
- incremental River LogisticRegression and HoeffdingAdaptiveTree (learning the new rows),
on a stationary stream and on one whose concept changes when the new rows start.
The data and the untimed parents (fitted on the history) are built once per stream; each timed
`train()` call is repeated `--runs` times and the median is reported, with the ratio to the
baseline computed from the same repetitions. Every model is seeded, so accuracy is identical
across repetitions. BLAS/OpenMP run on one thread (the box is shared; see the report).
Writes docs/benchmarks-trainers.md (or --out).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bench_kit

REPO = bench_kit.repo_first()  # this file's name would shadow the `trainers` package

import numpy as np
import pandas as pd
import river
import sklearn
from threadpoolctl import threadpool_limits

from trainers import NO_PARENT, EstimatorSpec, ParentModel, TrainingContext, get_trainer

T0 = datetime(2026, 1, 1, tzinfo=UTC)
N_NUMERIC = 8
LEVELS = np.array(["a", "b", "c", "d", "e"], dtype=object)
FEATURE_TYPES = {**{f"x{i}": "numeric" for i in range(N_NUMERIC)}, "shop": "categorical",
                 "member": "boolean"}

SPECS = {
    "sgd": {"pipeline": [{"class": "sklearn.preprocessing.StandardScaler"},
                         {"class": "sklearn.linear_model.SGDClassifier",
                          "params": {"loss": "log_loss"}}]},
    "hgb": {"class": "sklearn.ensemble.HistGradientBoostingClassifier"},
    "river_lr": {"pipeline": [{"class": "river.preprocessing.StandardScaler"},
                              {"class": "river.linear_model.LogisticRegression"}]},
    "river_hat": {"class": "river.tree.HoeffdingAdaptiveTreeClassifier"},
}


# --- data ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Concept:
    weights: np.ndarray
    shop_effect: dict
    member_effect: float

    def drifted(self) -> Concept:
        """Three weights change sign and the shop effects rotate: a partial concept change."""
        weights = self.weights.copy()
        weights[:3] *= -1
        shops = list(self.shop_effect)
        values = list(self.shop_effect.values())
        return Concept(weights, dict(zip(shops, values[2:] + values[:2])), -self.member_effect)


def base_concept() -> Concept:
    rng = np.random.default_rng(0)
    return Concept(rng.normal(scale=1.2, size=N_NUMERIC),
                   dict(zip(LEVELS, rng.normal(scale=1.0, size=len(LEVELS)))), 0.8)


def draw(n: int, concept: Concept, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, N_NUMERIC))
    shop = rng.choice(LEVELS, size=n)
    member = rng.random(n) < 0.4
    logit = numeric @ concept.weights + np.array([concept.shop_effect[s] for s in shop])
    logit += concept.member_effect * (member - 0.4)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(numeric, columns=[f"x{i}" for i in range(N_NUMERIC)])
    frame.loc[rng.random(n) < 0.1, "x7"] = np.nan  # an optional feature
    frame["shop"] = shop.astype(object)
    member_obj = member.astype(object)
    member_obj[rng.random(n) < 0.05] = None
    frame["member"] = member_obj
    return frame, pd.Series(y)


@dataclass(frozen=True)
class Window:
    as_of: datetime
    features: pd.DataFrame
    labels: pd.Series
    prediction_ids: pd.Series
    label_seqs: pd.Series
    start: datetime | None
    end: datetime | None
    fingerprint: str

    @property
    def rows(self) -> int:
        return len(self.labels)


def window(X: pd.DataFrame, y: pd.Series, first_seq: int) -> Window:
    n = len(y)
    seqs = pd.Series(np.arange(first_seq, first_seq + n, dtype="int64"))
    end = T0 + timedelta(seconds=int(first_seq + n))
    digest = hashlib.sha256(f"{first_seq}:{n}".encode()).hexdigest()
    return Window(end, X.reset_index(drop=True), y.reset_index(drop=True),
                  seqs.map(lambda s: f"p{s}"), seqs, T0 + timedelta(seconds=first_seq), end, digest)


def context(spec: str) -> TrainingContext:
    return TrainingContext(estimator=EstimatorSpec.model_validate(SPECS[spec]),
                           feature_types=FEATURE_TYPES, task="classification", classes=(0, 1),
                           seed=0)


def accuracy(model, X: pd.DataFrame, y: pd.Series) -> float:
    return float((np.asarray(model.predict(X)) == y.to_numpy()).mean())


# --- measurement ---------------------------------------------------------------------------
def timed(runs: int, fn):
    """Wall and CPU seconds of `runs` calls, and the last result (results are deterministic)."""
    walls, cpus, result = [], [], None
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus, result


def bench_stream(name: str, drift: bool, history: int, sizes: list[int], holdout: int,
                 runs: int, river_bootstrap: int, log) -> list[dict]:
    old = base_concept()
    new = old.drifted() if drift else old
    X_hist, y_hist = draw(history, old, seed=1)
    X_new_all, y_new_all = draw(max(sizes), new, seed=2)
    X_hold, y_hold = draw(holdout, new, seed=3)
    stateless, finetune, incremental = (get_trainer(n) for n in ("stateless", "finetune",
                                                                   "incremental"))
    log(f"[{name}] fitting untimed parents on {history} history rows")
    hist_window = window(X_hist, y_hist, 1)
    sgd_parent = stateless.train(hist_window, NO_PARENT, context("sgd")).model
    # Online learners need no replay of the whole history; replaying 100k rows through HAT
    # alone costs ~25 s, so they bootstrap on the most recent `river_bootstrap` history rows.
    recent = window(X_hist[-river_bootstrap:], y_hist[-river_bootstrap:],
                    history - min(river_bootstrap, history) + 1)
    river_parents = {s: incremental.train(recent, NO_PARENT, context(s)).model
                     for s in ("river_lr", "river_hat")}
    rows = []
    for n in sizes:
        X_new, y_new = X_new_all[:n], y_new_all[:n]
        new_window = window(X_new, y_new, history + 1)
        full_window = window(pd.concat([X_hist, X_new]), pd.concat([y_hist, y_new]), 1)
        log(f"[{name}] N={n}: timing {runs} runs per method")
        parent = ParentModel(sgd_parent, "1", last_label_seq=history)
        lr_parent = ParentModel(river_parents["river_lr"], "1")
        hat_parent = ParentModel(river_parents["river_hat"], "1")
        cases = {  # (trainer, window, parent, spec)
            "stateless SGD, full history": (stateless, full_window, NO_PARENT, "sgd"),
            "stateless SGD, new rows only": (stateless, new_window, NO_PARENT, "sgd"),
            "finetune SGD (partial_fit), new rows": (finetune, new_window, parent, "sgd"),
            "stateless HGB, full history": (stateless, full_window, NO_PARENT, "hgb"),
            "incremental River LogReg, new rows": (incremental, new_window, lr_parent, "river_lr"),
            "incremental River HAT, new rows": (incremental, new_window, hat_parent, "river_hat"),
        }
        measured = {
            label: timed(runs, lambda t=t, w=w, p=p, s=s: t.train(w, p, context(s)))
            for label, (t, w, p, s) in cases.items()
        }
        base_walls, base_cpus, base_result = measured["stateless SGD, full history"]
        base_acc = accuracy(base_result.model, X_hold, y_hold)
        for label, (walls, cpus, result) in measured.items():
            acc = accuracy(result.model, X_hold, y_hold)
            rows.append({
                "stream": name, "new_rows": n, "method": label,
                "train_rows": result.report.rows,
                "median_s": statistics.median(walls),
                "median_cpu_s": statistics.median(cpus),
                "speedup": statistics.median(b / t for b, t in zip(base_walls, walls, strict=True)),
                "cpu_speedup": statistics.median(
                    b / t for b, t in zip(base_cpus, cpus, strict=True)),
                "accuracy": acc, "delta_pts": 100 * (acc - base_acc),
                "prequential": result.report.fit_metrics.get("accuracy")
                if result.report.details.get("metrics_kind") == "prequential" else None,
            })
    parent_acc = accuracy(sgd_parent, X_hold, y_hold)
    rows.append({"stream": name, "new_rows": 0, "method": "parent SGD (history only, frozen)",
                 "train_rows": history, "median_s": float("nan"), "speedup": float("nan"),
                 "median_cpu_s": float("nan"), "cpu_speedup": float("nan"),
                 "accuracy": parent_acc, "delta_pts": float("nan"), "prequential": None})
    return rows


# --- report --------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    lines = [
        (
            "| stream | new rows | method | rows trained | median wall s | x faster (wall) "
            "| median CPU s | x cheaper (CPU) | holdout acc | Δ acc vs baseline (pts) "
            "| prequential acc |"
        ),
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        def fmt(v, spec):
            return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)
        lines.append(
            f"| {r['stream']} | {r['new_rows']:,} | {r['method']} | {r['train_rows']:,} | "
            f"{fmt(r['median_s'], '.3f')} | {fmt(r['speedup'], '.1f')} | "
            f"{fmt(r['median_cpu_s'], '.3f')} | {fmt(r['cpu_speedup'], '.1f')} | "
            f"{r['accuracy']:.4f} | "
            f"{fmt(r['delta_pts'], '+.2f')} | {fmt(r['prequential'], '.4f')} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["stream"] == "stationary" and r["method"].startswith("finetune"):
            close = abs(r["delta_pts"]) <= 1.0
            wall_ok, cpu_ok = close and r["speedup"] >= 5, close and r["cpu_speedup"] >= 5
            out.append(
                f"- Stationary, N={r['new_rows']:,}: finetune is {r['speedup']:.1f}x faster in wall "
                f"time and {r['cpu_speedup']:.1f}x cheaper in CPU time than stateless over the "
                f"full history, {r['delta_pts']:+.2f} accuracy points -> target (>= 5x, within 1 "
                f"point) **{'met' if wall_ok else 'MISSED'}** on wall time, "
                f"**{'met' if cpu_ok else 'MISSED'}** on CPU time.")
    return out


def observations(rows: list[dict]) -> list[str]:
    """Plain statements computed from this run's numbers."""
    def pick(stream, n, prefix):
        return next(r for r in rows if r["stream"] == stream and r["new_rows"] == n
                    and r["method"].startswith(prefix))

    drifting, hats = [], []
    for n in sorted({r["new_rows"] for r in rows if r["new_rows"]}):
        ft, lr = pick("drifting", n, "finetune"), pick("drifting", n, "incremental River LogReg")
        base = pick("drifting", n, "stateless SGD, full")
        drifting.append(
            f"- Drifting, N={n:,}: stateless over the full history reaches {base['accuracy']:.3f} "
            f"(old-concept rows dominate); finetune {ft['accuracy']:.3f} "
            f"({ft['delta_pts']:+.1f} pts) and incremental LogReg {lr['accuracy']:.3f} "
            f"({lr['delta_pts']:+.1f} pts) on the new concept.")
        hat = pick("stationary", n, "incremental River HAT")
        hats.append(
            f"- Stationary, N={n:,}: incremental HAT takes {hat['median_s']:.1f} s "
            f"({n / hat['median_s']:,.0f} rows/s), {hat['delta_pts']:+.1f} pts vs the baseline "
            "(the concept is linear, so a tree is not expected to win).")
    return drifting + hats


NOTES = [
    ("- `x faster` / `x cheaper` below 1 means slower than the baseline. Each ratio is the median "
     "of the per-repetition ratios, so baseline and method share the machine state of that "
     "repetition. Everything runs on one thread, so on an idle box wall time equals CPU time; "
     "on a loaded box the CPU-time ratio is the steadier measure of cost."),
    ("- Finetune's advantage shrinks as N approaches the history size: it is one partial_fit "
    "epoch over N rows against SGD's several epochs (until `tol`) over history + N."),
    ("- Incremental River learners are per-row Python: LogReg ~25k rows/s, HAT ~4k rows/s of CPU time "
    "through `RiverModel` (a profile of HAT: ~45% in River's naive-Bayes leaf "
    "prediction, ~10% in driftpilot's dict conversion and one-hot union). They are the right "
    "tool for continuous small updates, not for absorbing 100k rows at once."),
    ("- HistGradientBoosting cannot be fine-tuned (api-notes section 4), so only its stateless "
    "refit appears; it runs single-threaded here."),
    ("- The box is a shared 2-core machine; the load average in the header shows how busy it was. "
    "Absolute seconds move with that load; the same-repetition ratios move much less."),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--runs", type=int, default=3, help="timed repetitions (median)")
    parser.add_argument("--river-bootstrap", type=int, default=20_000,
                        help="history rows the River learners are bootstrapped on")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks-trainers.md")
    args = parser.parse_args(argv)
    history, sizes, holdout = (20_000, [2_000, 10_000], 5_000) if args.quick else (
        100_000, [10_000, 100_000], 20_000)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started, cpu_started = time.perf_counter(), time.process_time()
    load_before = os.getloadavg()[0]
    rows: list[dict] = []
    with threadpool_limits(limits=1):
        for name, drift in (("stationary", False), ("drifting", True)):
            rows += bench_stream(name, drift, history, sizes, holdout, args.runs,
                                 min(args.river_bootstrap, history), log)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    load_after = os.getloadavg()[0]
    command = "python benchmarks/trainers.py" + (" --quick" if args.quick else "") + (
        f" --runs {args.runs}" if args.runs != 3 else "")
    text = "\n".join([
        "# Benchmark: refreshing a model after N new rows, per trainer strategy",
        "",
        f"Reproduce: `{command}` (from the repo root, in the project venv).",
        "",
        (
            f"Python {platform.python_version()}, scikit-learn {sklearn.__version__}, river "
            f"{river.__version__}, {platform.machine()}; history {history:,} rows; holdout "
            f"{holdout:,} rows from the concept in force after the new rows; median of "
            f"{args.runs} timed `train()` calls (fit + fit metrics on the training rows); "
            f"BLAS/OpenMP limited to 1 thread; total script time {total:.0f} s wall, "
            f"{cpu:.0f} s CPU; 1-minute load average {load_before:.1f} at start, "
            f"{load_after:.1f} at end (2 cores, shared with other jobs)."
        ),
        "",
        (
            "Baseline of every ratio and Δ: *stateless SGD over the full history* (history + "
            "new rows), measured in the same repetition. Parents are fitted once, untimed: the "
            "SGD parent on the whole history, the River learners test-then-train on the last "
            f"{min(args.river_bootstrap, history):,} history rows."
        ),
        "",
        table(rows),
        "",
        "## Targets",
        *verdicts(rows),
        (
            f"- Script runtime under 5 minutes: {total:.0f} s wall, {cpu:.0f} s CPU -> "
            + ("**met**." if total < 300 else
               "**MISSED** on wall time; the CPU time shows what an idle box would take "
               "(HAT over 100k rows, 3 repetitions x 2 streams, is most of it).")
        ),
        "",
        "## Observations from this run",
        *observations(rows),
        "",
        "## Notes",
        *NOTES,
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
