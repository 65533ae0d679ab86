"""Data drift: per-feature tests of a current window against a reference window, through Evidently.

Sampling cap: each side is cut to at most ``sample_cap`` rows by a seeded sample without replacement
(reference and current use independent streams of the same seed). Why: the cost of a run grows with the
rows and the daemon runs the monitor on every tick: the tests themselves (10 features x 100k rows: about
0.05 s capped vs 1.3 s uncapped, see docs/benchmarks-monitors.md), the memory held for the report, and the
Evidently HTML report, which is built from the sampled rows (~1-2 s at 5,000 rows a side; an uncapped
Report at 100k rows took ~5 s). Effect on the tests:

- distance methods (the defaults, Wasserstein / Jensen-Shannon, threshold 0.1) estimate a fixed quantity.
  Their noise floor on identical distributions shrinks like 1/sqrt(rows): normed Wasserstein between two
  N(0,1) samples averages 0.055 at 1,000 rows (99th percentile 0.106, so ~1 % false flags per feature),
  0.026 at 5,000 (p99 0.057) and 0.013 at 20,000 (p99 0.027). With the 5,000 cap the floor stays well
  under 0.1, so the cap rarely changes a verdict; small windows (about 1,000 rows) are what is noisy;
- p-value methods lose power with fewer rows: K-S at 5,000 vs 5,000 rows detects a normal mean shift of
  about 0.07 standard deviations (alpha 0.05), at 100,000 rows about 0.015. Above a few thousand rows such
  tiny shifts are rarely worth a retrain, so the cap mostly removes "significant but irrelevant" alarms.
The rows used and the rows available are both recorded on the signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from monitors.config import DataDriftConfig
from monitors.drift_methods import DRIFT_METHODS, EVIDENTLY_KIND
from monitors.signals import DataDriftSignal, FeatureDrift

_REFERENCE, _CURRENT = 0, 1


class NoReportYet(RuntimeError):
    """``save_html`` was called before any ``run`` produced a report."""


def sample_rows(frame: pd.DataFrame, cap: int | None, seed: int, side: int = 0) -> pd.DataFrame:
    """At most ``cap`` rows of ``frame``, drawn without replacement by a generator seeded with (seed, side)."""
    if cap is None or len(frame) <= cap:
        return frame.reset_index(drop=True)
    rng = np.random.default_rng([seed, side])
    keep = np.sort(rng.choice(len(frame), size=cap, replace=False))
    return frame.iloc[keep].reset_index(drop=True)


def prepare_column(values: pd.Series, feature_type: str) -> pd.Series:
    """Numeric -> float64 (NaN missing); categorical -> str/None; boolean -> "True"/"False"/None."""
    if feature_type == "numeric":
        # Evidently drops infinities like missing values; doing it here keeps the value counts honest.
        return (
            pd.to_numeric(values, errors="coerce")
            .astype(np.float64)
            .replace([np.inf, -np.inf], np.nan)
        )
    return pd.Series(
        [
            None if pd.isna(v) else str(bool(v)) if feature_type == "boolean" else str(v)
            for v in values
        ],
        dtype=object,
    )


class DataDriftMonitor:
    """Runs the configured test per feature; keeps the last report for :meth:`save_html`."""

    kind = "data_drift"

    def __init__(self, config: DataDriftConfig) -> None:
        self.config = config
        self._report = None

    def select_current(
        self, frame: pd.DataFrame, times: pd.Series, as_of: datetime
    ) -> pd.DataFrame:
        """The configured current window (last N rows or last duration, as of ``as_of``) of ``frame``."""
        return self.config.current.select(frame, times, as_of)

    def run(
        self,
        reference: pd.DataFrame,
        current: pd.DataFrame,
        feature_types: Mapping[str, str],
        *,
        html_path: str | Path | None = None,
    ) -> DataDriftSignal:
        """Test every feature of ``feature_types``; ``html_path`` also saves the report there."""
        config = self.config
        types = dict(feature_types)
        config.check_features(types)
        for side, frame in (("reference", reference), ("current", current)):
            missing = [name for name in types if name not in frame.columns]
            if missing:
                raise ValueError(
                    f"the {side} frame lacks feature column(s) {missing}; it has {list(frame.columns)}. "
                    "Pass one column per policy feature."
                )
        ref = sample_rows(reference[list(types)], config.sample_cap, config.seed, _REFERENCE)
        cur = sample_rows(current[list(types)], config.sample_cap, config.seed, _CURRENT)
        ref = pd.DataFrame({name: prepare_column(ref[name], t) for name, t in types.items()})
        cur = pd.DataFrame({name: prepare_column(cur[name], t) for name, t in types.items()})

        plans = {name: config.feature_test(name, t) for name, t in types.items()}
        counts = {
            name: (int(ref[name].notna().sum()), int(cur[name].notna().sum())) for name in types
        }
        enough = len(ref) >= config.min_rows and len(cur) >= config.min_rows
        testable = [name for name in types if enough and min(counts[name]) > 0]

        results = {}
        self._report = None
        if testable:
            from monitors.evidently_adapter import (  # Evidently takes ~3 s to import
                ColumnTest,
                run_drift,
            )

            tests = [
                ColumnTest(name, EVIDENTLY_KIND[types[name]], *plans[name]) for name in testable
            ]
            self._report = run_drift(ref, cur, tests, config.drift_share)
            results = self._report.results

        features = []
        for name, feature_type in types.items():
            method, threshold = plans[name]
            result = results.get(name)
            note = None
            if result is None:
                note = (
                    f"not tested: fewer than min_rows={config.min_rows} rows"
                    if not enough
                    else f"not tested: no values in the {'reference' if counts[name][0] == 0 else 'current'} window"
                )
            features.append(
                FeatureDrift(
                    feature=name,
                    feature_type=feature_type,
                    method=method,
                    score_kind=DRIFT_METHODS[method].score,
                    threshold=threshold,
                    score=None if result is None else result.score,
                    drifted=False if result is None else result.drifted,
                    reference_values=counts[name][0],
                    current_values=counts[name][1],
                    note=note,
                )
            )
        drifted = sum(f.drifted for f in features)
        share = drifted / len(testable) if testable else 0.0
        dataset_drifted = bool(testable) and share >= config.drift_share
        saved = (
            self.save_html(html_path)
            if html_path is not None and self._report is not None
            else None
        )
        return DataDriftSignal(
            verdict="insufficient_rows" if not enough else "drift" if dataset_drifted else "ok",
            features=tuple(features),
            drift_share=share,
            drift_share_threshold=config.drift_share,
            dataset_drifted=dataset_drifted,
            reference_rows=len(ref),
            current_rows=len(cur),
            reference_rows_available=len(reference),
            current_rows_available=len(current),
            sample_cap=config.sample_cap,
            seed=config.seed,
            html_path=None if saved is None else str(saved),
        )

    def save_html(self, path: str | Path) -> Path:
        """Write the last run's Evidently report as HTML (about 4 MB) and return the path."""
        if self._report is None:
            raise NoReportYet(
                "no data-drift report to save: call run() first (a run with too few rows or no testable "
                "feature produces no report)"
            )
        return self._report.save_html(path)
