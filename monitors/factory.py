"""Build the monitors of one model from its config; a disabled monitor is a :class:`DisabledMonitor`.

>>> from monitors.config import MonitorsConfig
>>> monitors = build_monitors(MonitorsConfig.model_validate({"performance": {"enabled": False}}),
...                           task="classification", feature_types={"x": "numeric"})
>>> monitors.performance.evaluate(None, None).to_dict()
{'kind': 'performance', 'enabled': False, 'triggered': False}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from monitors.concept_drift import ConceptDriftMonitor
from monitors.config import MonitorsConfig
from monitors.performance import PerformanceMonitor
from monitors.protocols import ConceptDriftMonitorLike, DataDriftMonitorLike, PerformanceMonitorLike
from monitors.signals import DisabledSignal


class DisabledMonitor:
    """Null object for a monitor switched off in the policy: every verb is accepted and nothing triggers."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._signal = DisabledSignal(kind=kind)

    def run(
        self, reference: Any = None, current: Any = None, feature_types: Any = None, **_: Any
    ) -> DisabledSignal:
        return self._signal

    def update(self, losses: Any = None, row_ids: Any = None, times: Any = None) -> DisabledSignal:
        return self._signal

    def update_rows(self, rows: Any = None, **_: Any) -> DisabledSignal:
        return self._signal

    def evaluate(self, rows: Any = None, reference_metric: Any = None, **_: Any) -> DisabledSignal:
        return self._signal

    def select_current(
        self, frame: pd.DataFrame, times: pd.Series, as_of: datetime
    ) -> pd.DataFrame:
        return frame.iloc[0:0]

    def save_html(self, path: str | Path) -> None:
        return None

    def dumps(self) -> bytes:
        return b""

    def loads(self, state: bytes) -> None:
        return None

    def reset(self) -> None:
        return None


@dataclass(frozen=True)
class Monitors:
    """The three monitors of one model, each real or disabled."""

    data_drift: DataDriftMonitorLike
    concept_drift: ConceptDriftMonitorLike
    performance: PerformanceMonitorLike


def build_monitors(
    config: MonitorsConfig,
    *,
    task: str,
    feature_types: Mapping[str, str],
    classes: Sequence[Any] | None = None,
) -> Monitors:
    """Validate ``config`` against the policy's task and features and build the monitors.

    Raises ``ValueError`` at start-up for a loss/metric that does not fit the task, a per-feature entry for an
    unknown feature or a drift method that does not fit a feature's type.
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be classification or regression, got {task!r}")
    data_drift: DataDriftMonitorLike = DisabledMonitor("data_drift")
    if config.data_drift.enabled:
        config.data_drift.check_features(dict(feature_types))
        from monitors.data_drift import DataDriftMonitor

        data_drift = DataDriftMonitor(config.data_drift)
    concept: ConceptDriftMonitorLike = (
        ConceptDriftMonitor(config.concept_drift, task)
        if config.concept_drift.enabled
        else DisabledMonitor("concept_drift")
    )
    performance: PerformanceMonitorLike = (
        PerformanceMonitor(config.performance, task)
        if config.performance.enabled
        else DisabledMonitor("performance")
    )
    positive = config.performance.positive_class
    known = classes is None or any(c == positive for c in classes)
    if config.performance.enabled and positive is not None and not known:
        raise ValueError(
            f"performance.positive_class {positive!r} is not one of the target classes {list(classes or [])}"
        )
    return Monitors(data_drift=data_drift, concept_drift=concept, performance=performance)
