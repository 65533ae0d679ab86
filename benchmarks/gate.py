"""The promotion gate on large paired samples: wall time and peak Python-heap memory (tracemalloc) of one judge().

Reproduce (about a minute on 2 cores):

    .venv/bin/python benchmarks/gate.py [--rows 1000000] [--resamples 2000] [--runs 3]

Regression runs the paired bootstrap (the costly path); classification runs exact McNemar. The challenger is made a
little better than the champion so judge() reaches the test. tracemalloc counts numpy buffers too; it slows the run,
so time and memory are measured in separate runs. Numbers are the median of ``--runs`` runs (min-max beside them).
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import bench_kit
import numpy as np

bench_kit.repo_first()

from controller.loop.gate import GateConfig, PairedSample, PromotionGate


def regression_sample(rows: int) -> PairedSample:
    rng = np.random.default_rng(0)
    labels = rng.normal(size=rows)
    return PairedSample(labels, labels + rng.normal(0, 1.0, rows), labels + rng.normal(0, 0.99, rows))


def classification_sample(rows: int) -> PairedSample:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, rows)
    champion = np.where(rng.random(rows) < 0.80, labels, 1 - labels)
    challenger = np.where(rng.random(rows) < 0.81, labels, 1 - labels)
    return PairedSample(labels, champion, challenger)


def measure(gate: PromotionGate, sample: PairedSample, runs: int) -> tuple[list[float], list[float], str]:
    seconds, peaks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        verdict = gate.judge(sample)
        seconds.append(time.perf_counter() - start)
    for _ in range(runs):
        tracemalloc.start()
        gate.judge(sample)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    return seconds, peaks, verdict.reason


def spread(values: list[float], unit: str) -> str:
    return f"{statistics.median(values):.2f} {unit} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    config = GateConfig(bootstrap_resamples=args.resamples)
    for task, sample in (("regression", regression_sample(args.rows)),
                         ("classification", classification_sample(args.rows))):
        seconds, peaks, reason = measure(PromotionGate(config, task), sample, args.runs)
        input_mb = sum(a.nbytes for a in (sample.labels, sample.champion, sample.challenger)) / 2**20
        print(f"{task}: {args.rows:,} rows, {args.resamples} resamples: time {spread(seconds, 's')}, "
              f"peak traced memory {spread(peaks, 'MiB')} (inputs {input_mb:.1f} MiB, not counted)\n  {reason}")


if __name__ == "__main__":
    main()
