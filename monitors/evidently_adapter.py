"""The only module that imports Evidently (0.7 "new" API: Report, Dataset, DataDefinition, DataDriftPreset).

Why the shape: a metric's ``value`` is only a score, with no drift flag, so the report runs with
``include_tests=True`` and each column's flag is read from its ``Value Drift`` test status (Evidently's own
comparison, p-value or distance). Note ``Report.run(current, reference)``: current first.
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
from evidently.presets import DataDriftPreset

from monitors.drift_methods import is_drift


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


class DriftReport:
    """Per-column results of one Evidently run, and its snapshot for the HTML report."""

    def __init__(self, results: dict[str, ColumnResult], snapshot: Any) -> None:
        self.results = results
        self._snapshot = snapshot

    def save_html(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._snapshot.save_html(str(target))
        return target


def run_drift(
    reference: pd.DataFrame, current: pd.DataFrame, tests: Sequence[ColumnTest], drift_share: float
) -> DriftReport:
    """One DataDriftPreset over ``tests`` (explicit method and threshold per column)."""
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
        snapshot = Report([preset], include_tests=True).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
        )
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
    return DriftReport(results, snapshot)


def registered_methods() -> dict[str, set[str]]:
    """Evidently's registered drift tests and the column kinds each accepts (checked against our table in tests)."""
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    return {
        name: {kind.value for kind in by_kind} for name, by_kind in _registered_stat_tests.items()
    }


def default_thresholds() -> dict[str, float]:
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    return {
        name: next(iter(by_kind.values())).default_threshold
        for name, by_kind in _registered_stat_tests.items()
    }
