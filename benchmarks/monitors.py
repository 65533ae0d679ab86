"""Benchmark: one monitoring cycle (data drift + concept drift + performance), and concept-detector delays.

    .venv/bin/python benchmarks/monitors.py            # full: windows of 10k and 100k rows
    .venv/bin/python benchmarks/monitors.py --quick    # windows of 2k and 10k, fewer seeds

Part 1, cycle: reference and current windows of N rows x 10 features (8 numeric, 2 categorical; drift
injected into 2 of them), a binary classifier's labels/predictions/scores for the current window. One
cycle = DataDriftMonitor.run (sample_cap 5,000, the default) + a fresh ADWIN ConceptDriftMonitor fed the N
zero-one losses + PerformanceMonitor.evaluate over all N rows. Variants: the monitor without a cap, and the
baseline, where data drift is a plain uncapped Evidently Report (DataDriftPreset, same tests) as one would
write it without this package. All variants run interleaved in the same repetitions; ratios are to the
baseline. Wall time is the median of --runs cycles after one untimed warm-up (which pays the Evidently
import); peak memory is tracemalloc's peak during one extra, untimed cycle (Python + numpy allocations).
save_html (the Evidently report, built on demand from the sampled rows) is timed separately.

Part 2, detectors: 0/1 error streams of 10,000 rows, Bernoulli 0.1 switching to 0.3 at row 5,000, over
--seeds seeds: median/min/max detection delay (rows after the change), misses, and streams with an alarm
before the change; plus stationary streams (error rate 0.1 and 0.3, and |N(0,1)| losses for the real-valued
detectors) for the false-alarm rate, and the cost per row.
Writes docs/benchmarks-monitors.md (or --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import bench_kit

bench_kit.repo_first()  # this file's name would shadow the `monitors` package

import numpy as np
import pandas as pd

from monitors import (
    ConceptDriftConfig,
    ConceptDriftMonitor,
    DataDriftConfig,
    PerformanceConfig,
    PerformanceMonitor,
)
from monitors.data_drift import DataDriftMonitor, prepare_column
from monitors.detectors import DETECTORS
from monitors.drift_methods import EVIDENTLY_KIND

FEATURES = {f"num{i}": "numeric" for i in range(8)} | {"cat0": "categorical", "cat1": "categorical"}


@dataclass(frozen=True)
class Window:
    labels: pd.Series
    predictions: pd.Series
    scores: pd.DataFrame
    label_seqs: pd.Series
    label_times: pd.Series
    model_versions: pd.Series


def features(seed: int, rows: int, drift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"num{i}": rng.normal(size=rows) for i in range(8)}
    cat_p = (0.2, 0.3, 0.5) if drift else (0.5, 0.3, 0.2)
    data["cat0"] = rng.choice(["a", "b", "c"], size=rows, p=cat_p).astype(object)
    data["cat1"] = rng.choice(["x", "y", "z"], size=rows, p=(0.5, 0.3, 0.2)).astype(object)
    if drift:
        data["num0"] = data["num0"] + 0.5
    return pd.DataFrame(data)


def labeled_window(seed: int, rows: int) -> Window:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=rows)
    # Concept drift halfway
    wrong = rng.random(rows) < np.where(np.arange(rows) < rows // 2, 0.1, 0.3)
    predictions = np.where(wrong, 1 - labels, labels)
    p1 = np.clip(np.where(predictions == 1, 0.8, 0.2) + rng.normal(0, 0.05, size=rows), 0.01, 0.99)
    return Window(
        labels=pd.Series(labels),
        predictions=pd.Series(predictions, dtype=object),
        scores=pd.DataFrame({0: 1 - p1, 1: p1}),
        label_seqs=pd.Series(np.arange(rows, dtype=np.int64)),
        label_times=pd.Series(pd.date_range("2026-01-01", periods=rows, freq="1s", tz="UTC")),
        model_versions=pd.Series(["1"] * rows, dtype=object),
    )


VARIANTS = {
    "capped": "monitor, sample_cap 5,000 (default)",
    "uncapped": "monitor, no sample cap",
    "report": "baseline: Evidently Report, no cap",
}


def report_drift(reference: pd.DataFrame, current: pd.DataFrame) -> str:
    """The baseline: a plain Evidently Report (DataDriftPreset) on every row, same tests and thresholds."""
    from monitors.evidently_adapter import ColumnTest, report_results, run_report

    config = DataDriftConfig()
    ref = pd.DataFrame({c: prepare_column(reference[c], t) for c, t in FEATURES.items()})
    cur = pd.DataFrame({c: prepare_column(current[c], t) for c, t in FEATURES.items()})
    tests = [
        ColumnTest(c, EVIDENTLY_KIND[t], *config.feature_test(c, t)) for c, t in FEATURES.items()
    ]
    results = report_results(run_report(ref, cur, tests, config.drift_share), tests)
    return ",".join(c for c, r in results.items() if r.drifted)


def cycle(reference: pd.DataFrame, current: pd.DataFrame, window: Window, variant: str) -> dict:
    """One monitoring cycle; returns seconds per part and the outcomes (to check the work was real)."""
    t0 = time.perf_counter()
    if variant == "report":
        drifted = report_drift(reference, current)
    else:
        cap = 5000 if variant == "capped" else None
        signal = DataDriftMonitor(DataDriftConfig(sample_cap=cap)).run(reference, current, FEATURES)
        drifted = ",".join(signal.drifted_features)
    t1 = time.perf_counter()
    concept = ConceptDriftMonitor(ConceptDriftConfig(detector="adwin")).update_rows(window)
    t2 = time.perf_counter()
    config = PerformanceConfig(window_rows=len(window.labels), min_labels=100)
    perf = PerformanceMonitor(config).evaluate(window, 0.9)
    t3 = time.perf_counter()
    return {
        "data_drift": t1 - t0,
        "concept_drift": t2 - t1,
        "performance": t3 - t2,
        "total": t3 - t0,
        "drifted": drifted,
        "detections": len(concept.detections),
        "verdict": perf.verdict,
    }


def peak_mib(reference, current, window, variant) -> float:
    tracemalloc.start()
    cycle(reference, current, window, variant)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def html_seconds(reference: pd.DataFrame, current: pd.DataFrame, out: Path) -> float:
    """save_html after a capped run: the Evidently report is built then, on the sampled rows."""
    monitor = DataDriftMonitor(DataDriftConfig())
    monitor.run(reference, current, FEATURES)
    t = time.perf_counter()
    monitor.save_html(out)
    return time.perf_counter() - t


def bench_cycles(sizes: list[int], runs: int) -> tuple[list[str], list[str]]:
    rows_out, html_out = [], []
    for n in sizes:
        reference, current = features(1, n, False), features(2, n, True)
        window = labeled_window(3, n)
        cycle(reference, current, window, "report")  # warm-up: Evidently import, caches
        results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for _ in range(runs):  # interleaved, so machine load hits every variant alike
            for variant in VARIANTS:
                results[variant].append(cycle(reference, current, window, variant))
        base = statistics.median(r["total"] for r in results["report"])
        for variant, label in VARIANTS.items():
            mem = peak_mib(reference, current, window, variant)
            med = {
                k: statistics.median(r[k] for r in results[variant])
                for k in ("data_drift", "concept_drift", "performance", "total")
            }
            first = results[variant][0]
            rows_out.append(
                f"| {n:,} | {label} | {med['data_drift']:.3f} | {med['concept_drift']:.3f} "
                f"| {med['performance']:.3f} | **{med['total']:.3f}** | {base / med['total']:.1f} "
                f"| {mem:.0f} | {first['drifted']} | {first['detections']} | {first['verdict']} |"
            )
            print(rows_out[-1], flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            html = statistics.median(
                html_seconds(reference, current, Path(tmp) / "drift.html") for _ in range(runs)
            )
        html_out.append(f"| {n:,} | {html:.3f} |")
        print(html_out[-1], flush=True)
    return rows_out, html_out


def error_stream(
    seed: int, n: int, change_at: int | None, before: float, after: float
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.full(n, before)
    if change_at is not None:
        p[change_at:] = after
    return (rng.random(n) < p).astype(np.float64)


def bench_detectors(seeds: int, rows: int) -> list[str]:
    change = rows // 2
    out = []
    for name, spec in DETECTORS.items():
        delays, misses, early, seconds = [], 0, 0, 0.0
        for seed in range(seeds):
            losses = error_stream(1000 + seed, rows, change, 0.1, 0.3)
            t = time.perf_counter()
            signal = ConceptDriftMonitor(ConceptDriftConfig(detector=name)).update(losses)
            seconds += time.perf_counter() - t
            positions = [e.detected_at.position for e in signal.detections]
            early += any(p < change for p in positions)
            after = [p for p in positions if p >= change]
            if after:
                delays.append(after[0] - change)
            else:
                misses += 1
        stationary = {}
        for rate in (0.1, 0.3):
            stationary[rate] = sum(
                ConceptDriftMonitor(ConceptDriftConfig(detector=name))
                .update(error_stream(2000 + s, change, None, rate, rate))
                .drift
                for s in range(seeds)
            )
        real = "n/a (0/1 only)"
        if not spec.binary:
            alarms = sum(
                ConceptDriftMonitor(
                    ConceptDriftConfig(detector=name, loss="absolute"), "regression"
                )
                .update(np.abs(np.random.default_rng(3000 + s).normal(size=change)))
                .drift
                for s in range(seeds)
            )
            real = f"{alarms}/{seeds}"
            real_delays, real_misses = [], 0
            for seed in range(seeds):
                rng = np.random.default_rng(4000 + seed)
                losses = np.abs(rng.normal(size=rows)) * np.where(
                    np.arange(rows) < change, 1.0, 1.5
                )
                signal = ConceptDriftMonitor(
                    ConceptDriftConfig(detector=name, loss="absolute"), "regression"
                ).update(losses)
                after = [
                    e.detected_at.position - change
                    for e in signal.detections
                    if e.detected_at.position >= change
                ]
                if after:
                    real_delays.append(after[0])
                else:
                    real_misses += 1
            real_change = (
                f"{statistics.median(real_delays):.0f} ({real_misses} missed)"
                if real_delays
                else f"– ({real_misses} missed)"
            )
        else:
            real_change = "n/a"
        med = f"{statistics.median(delays):.0f}" if delays else "–"
        span = f"{min(delays)}–{max(delays)}" if delays else "–"
        out.append(
            f"| {name} | {med} | {span} | {misses}/{seeds} | {early}/{seeds} | {stationary[0.1]}/{seeds} "
            f"| {stationary[0.3]}/{seeds} | {real} | {real_change} "
            f"| {seconds / (seeds * rows) * 1e6:.1f} |"
        )
        print(out[-1], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--runs", type=int, default=None, help="timed cycles per size (default 5, quick 3)"
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="streams per detector (default 10, quick 5)"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks-monitors.md"))
    args = parser.parse_args()
    sizes = [2_000, 10_000] if args.quick else [10_000, 100_000]
    runs = args.runs or (3 if args.quick else 5)
    seeds = args.seeds or (5 if args.quick else 10)
    rows = 10_000

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    cycle_rows, html_rows = bench_cycles(sizes, runs)
    detector_rows = bench_detectors(seeds, rows)
    total = time.perf_counter() - started
    load_after = os.getloadavg()[0]

    import evidently
    import river
    import sklearn

    command = "python benchmarks/monitors.py" + (" --quick" if args.quick else "")
    text = f"""# Benchmark: one monitoring cycle, and concept-drift detectors

Reproduce: `{command}` (from the repo root, in the project venv).

Python {platform.python_version()}, evidently {evidently.__version__}, river {river.__version__}, scikit-learn {sklearn.__version__}, pandas {pd.__version__}, {platform.machine()}, {platform.system()}; {os.cpu_count()} cores shared with other jobs (1-min load average {load_before:.1f} at start, {load_after:.1f} at end: absolute times are inflated, ratios within a repetition much less); run {datetime.now(UTC):%Y-%m-%d}; total script time {total:.0f} s.

## One cycle: data drift + concept drift + performance

Reference and current windows of N rows x 10 features (8 numeric, 2 categorical); drift injected into `num0` (+0.5 sd) and `cat0` (class priors reversed); a binary classifier whose error rate goes 0.1 -> 0.3 halfway through the current window. Data drift uses the default tests (Wasserstein / Jensen-Shannon, threshold 0.1); concept drift is a fresh ADWIN fed all N zero-one losses; performance scores all N rows (with ROC AUC and log loss from the scores).
Times are medians of {runs} cycles (seconds), the three variants interleaved in the same repetitions. **x faster** = median baseline total / median total of the row. Peak memory: tracemalloc peak of one extra cycle.
The baseline differs only in the data-drift part: a plain Evidently `Report([DataDriftPreset(...)], include_tests=True)` on all N rows, flags read from its tests. The monitor calls the same Evidently stat tests directly (identical scores and flags: `tests/monitors/test_data_drift.py`) and builds the Report only when `save_html` is called.

| rows N | variant | data drift s | concept drift s | performance s | total s | x faster than baseline | peak MiB | drifted features | detections | verdict |
|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|
{chr(10).join(cycle_rows)}

Target: <= 2 s per cycle at 100k rows. Where the time goes in the baseline: Evidently draws plotly widgets for every column on every run (about 80 % of a Report run); the tests themselves take milliseconds.

`save_html` after a capped run (builds the Evidently Report on the <= 5,000 sampled rows a side, then writes ~4 MB), median of {runs}:

| rows N | save_html s |
|---|---:|
{chr(10).join(html_rows)}

## Concept-drift detectors on 0/1 error streams

{rows:,}-row streams, error rate 0.1 switching to 0.3 at row {rows // 2:,}, {seeds} seeds, project default parameters (see `monitors/detectors.py`). Delay = rows from the change to the first detection at or after it. Stationary columns: streams of {rows // 2:,} rows with no change and at least one alarm; the last one feeds |N(0,1)| losses to the real-valued detectors. "Real-valued change": |N(0,1)| losses scaled by 1.5 from the change on (absolute loss up 50 %), same seeds count.

| detector | median delay (rows) | delay min–max | missed | alarm before change | false alarm, rate 0.1 | false alarm, rate 0.3 | false alarm, real-valued | median delay, real-valued change | µs per row |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(detector_rows)}

Reading: ADWIN is the default: among the fastest to detect, no false alarm here, no tuning, and it works on 0/1 and real-valued losses alike. Page-Hinkley works on real-valued losses only because the monitor divides them by the warm-up spread (River's raw threshold of 50 false-alarms on unscaled input). KSWIN pays one K-S test per row, and with its false-alarm-safe alpha its 150-row samples cannot see a 0.1 -> 0.3 step in 0/1 errors: use it on real-valued losses if at all. DDM is slow to react with the safer thresholds. FHDDM (fed 1 - error) reacts fast but false-alarms at a 30 % error rate. EDDM false-alarms on stationary streams whatever we tried; it is offered because policies ask for it, not recommended.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} in {total:.0f} s")


if __name__ == "__main__":
    main()
