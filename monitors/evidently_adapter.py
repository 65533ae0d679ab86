"""The only module that imports Evidently (0.7: Report, Dataset, DataDefinition, DataDriftPreset, stat tests).

Two paths over the same sampled frames, methods and thresholds:

- the scores and flags of every tick come from Evidently's registered stat tests, called exactly as its
  ``ValueDrift`` metric calls them (infinities and missing values dropped, then the named test with the
  column's threshold). That takes ~0.04 s for 10 columns of 5,000 rows, where a ``Report`` run takes
  0.6-1.5 s, almost all of it drawing plotly widgets nobody looks at on a quiet tick;
- the full ``Report`` (``DataDriftPreset``, ``include_tests=True``) is built only when the HTML is asked
  for (``DriftReport.save_html``), and ``report_results`` reads the flags back from its test statuses.
  ``tests/monitors`` checks that both paths give identical scores and flags, so an upstream change in
  either one fails a test instead of drifting silently.

Notes: ``Report.run(current, reference)`` takes current first; a metric's ``value`` is only a score, the
drift flag lives in its test status.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations.stattests.registry import _registered_stat_tests, get_stattest
from evidently.legacy.core import ColumnType
from evidently.presets import DataDriftPreset

from monitors.drift_methods import is_drift

_COLUMN_TYPE = {"num": ColumnType.Numerical, "cat": ColumnType.Categorical}


@dataclass(frozen=True)
class ColumnTest:
    column: str
    kind: str  # "num" | "cat"
    method: str
    threshold: float


@dataclass(frozen=True)
class ColumnResult:
    column: str
    method: str
    threshold: float
    score: float
    drifted: bool


def _clean(values: pd.Series) -> pd.Series:
    # What Evidently's get_one_column_drift does before testing a column.
    return values.replace([-np.inf, np.inf], np.nan).dropna()


def score_column(reference: pd.Series, current: pd.Series, test: ColumnTest) -> ColumnResult:
    """One column through Evidently's registered stat test (same call as its ValueDrift metric)."""
    kind = _COLUMN_TYPE[test.kind]
    ref, cur = _clean(reference), _clean(current)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        result = get_stattest(ref, cur, kind, test.method)(ref, cur, kind, test.threshold)
    return ColumnResult(
        test.column, test.method, test.threshold, float(result.drift_score), bool(result.drifted)
    )


class DriftReport:
    """Per-column results of one run; the Evidently ``Report`` behind it is built on first ``save_html``."""

    def __init__(
        self,
        results: dict[str, ColumnResult],
        reference: pd.DataFrame,
        current: pd.DataFrame,
        tests: Sequence[ColumnTest],
        drift_share: float,
    ) -> None:
        self.results = results
        self._inputs = (reference, current, tuple(tests), drift_share)
        self._snapshot: Any = None

    def snapshot(self) -> Any:
        if self._snapshot is None:
            self._snapshot = run_report(*self._inputs)
        return self._snapshot

    def save_html(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.snapshot().save_html(str(target))
        return target


def run_drift(
    reference: pd.DataFrame, current: pd.DataFrame, tests: Sequence[ColumnTest], drift_share: float
) -> DriftReport:
    """Test every column of ``tests`` (explicit method and threshold per column)."""
    results = {t.column: score_column(reference[t.column], current[t.column], t) for t in tests}
    return DriftReport(results, reference, current, tests, drift_share)


def run_report(
    reference: pd.DataFrame, current: pd.DataFrame, tests: Sequence[ColumnTest], drift_share: float
) -> Any:
    """The full Evidently report (DataDriftPreset with tests) over the same columns and settings."""
    columns = [t.column for t in tests]
    definition = DataDefinition(
        numerical_columns=[t.column for t in tests if t.kind == "num"],
        categorical_columns=[t.column for t in tests if t.kind == "cat"],
    )
    preset = DataDriftPreset(
        columns=columns,
        per_column_method={t.column: t.method for t in tests},
        per_column_threshold={t.column: t.threshold for t in tests},
        drift_share=drift_share,
    )
    # The preset also draws correlation widgets; a constant column makes numpy warn about 0/0 there.
    # That is presentation only (the drift scores are unaffected), so the warnings are silenced here.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return Report([preset], include_tests=True).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
        )


def report_results(snapshot: Any, tests: Sequence[ColumnTest]) -> dict[str, ColumnResult]:
    """Scores and flags as the Report states them (flag = the column's ``Value Drift`` test failed)."""
    body = snapshot.dict()
    scores = {
        m["config"]["column"]: float(m["value"])
        for m in body["metrics"]
        if m["config"]["type"].endswith(":ValueDrift")
    }
    statuses = {
        t["metric_config"]["params"]["column"]: str(t["status"]).rsplit(".", 1)[-1]
        for t in body.get("tests", [])
        if t["metric_config"]["params"]["type"].endswith(":ValueDrift")
    }
    results = {}
    for test in tests:
        score = scores[test.column]
        status = statuses.get(test.column)
        drifted = (
            status == "FAIL" if status is not None else is_drift(test.method, score, test.threshold)
        )
        results[test.column] = ColumnResult(
            test.column, test.method, test.threshold, score, drifted
        )
    return results


def registered_methods() -> dict[str, set[str]]:
    """Evidently's registered drift tests and the column kinds each accepts (checked against our table)."""
    return {
        name: {kind.value for kind in by_kind} for name, by_kind in _registered_stat_tests.items()
    }


def default_thresholds() -> dict[str, float]:
    return {
        name: next(iter(by_kind.values())).default_threshold
        for name, by_kind in _registered_stat_tests.items()
    }
