"""Typed, frozen results of the monitors. Each one carries its numbers and serializes with ``to_dict()``.

Every signal has ``kind``, ``enabled`` and ``triggered`` (the one boolean a policy rule reads first), so the
controller can treat a :class:`DisabledSignal` like any other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: NaN/inf -> None, datetimes -> ISO 8601, numpy scalars -> Python, tuples -> lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


class _Signal:
    kind: ClassVar[str]
    enabled: ClassVar[bool] = True

    @property
    def triggered(self) -> bool:  # pragma: no cover - every signal overrides
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        body = to_jsonable(self)
        return {"kind": self.kind, "enabled": self.enabled, "triggered": self.triggered, **body}


# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's test. ``score`` is a p-value (drift when small) or a distance (drift when large)."""

    feature: str
    feature_type: str
    method: str
    score_kind: Literal["p_value", "distance"]
    threshold: float
    score: float | None
    drifted: bool
    reference_values: int  # non-missing values the test saw
    current_values: int
    note: str | None = None  # why a feature was not tested


@dataclass(frozen=True)
class DataDriftSignal(_Signal):
    """Per-feature drift tests of a current window against a reference window."""

    kind: ClassVar[str] = "data_drift"

    verdict: Literal["ok", "drift", "insufficient_rows"]
    features: tuple[FeatureDrift, ...]
    drift_share: float  # drifted / tested features
    drift_share_threshold: float
    dataset_drifted: bool
    reference_rows: int  # rows used, after the sampling cap
    current_rows: int
    reference_rows_available: int
    current_rows_available: int
    sample_cap: int | None
    seed: int
    html_path: str | None = None

    @property
    def triggered(self) -> bool:
        return self.dataset_drifted

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.feature for f in self.features if f.drifted)

    def feature(self, name: str) -> FeatureDrift:
        for item in self.features:
            if item.feature == name:
                return item
        raise KeyError(
            f"no feature {name!r} in this signal; features: {[f.feature for f in self.features]}"
        )


# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowRef:
    """A row of the loss stream: its position since the last reset, and its label seq/arrival time when known."""

    position: int
    row_id: int | None = None
    time: datetime | None = None


@dataclass(frozen=True)
class ChangeEvent:
    """One detection and where the change is estimated to have started (see ``estimate``)."""

    detected_at: RowRef
    change_point: RowRef
    estimate: Literal["adwin_width", "warning_start", "detection_row"]
    # Mean loss from the previous detection (or reset) up to change_point (in history)
    loss_before: float | None
    loss_after: float | None  # mean loss over change_point..detected_at (at least the last 50 rows)


@dataclass(frozen=True)
class ConceptDriftSignal(_Signal):
    """What a drift detector saw in one batch of per-row losses."""

    kind: ClassVar[str] = "concept_drift"

    detector: str
    loss: str
    drift: bool  # at least one detection in this batch
    warning: bool  # warning zone active after the batch's last row (only detectors with supports_warning)
    supports_warning: bool
    warning_since: RowRef | None
    detections: tuple[ChangeEvent, ...]
    rows_seen: int  # rows fed since the last reset()
    batch_rows: int  # rows fed by this update
    rows_skipped: int  # rows of this batch already seen (row_id not above the last one fed)
    batch_loss_mean: float | None
    # Rows held in the detector's window (ADWIN width, KSWIN window); None: O(1) state
    state_rows: int | None
    state_bytes: int  # size of dumps() (detector + recent-row history + bookkeeping)
    detector_bytes: int  # size of the pickled River detector alone

    @property
    def triggered(self) -> bool:
        return self.drift

    @property
    def change_point(self) -> RowRef | None:
        """Estimated start of the last change detected in this batch."""
        return self.detections[-1].change_point if self.detections else None


# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DelayPercentiles:
    """Label delay (arrival - prediction time) in seconds, computed by the store."""

    p50: float
    p90: float
    p99: float

    @classmethod
    def from_mapping(cls, values: Mapping[str, float]) -> DelayPercentiles:
        missing = {"p50", "p90", "p99"} - set(values)
        if missing:
            raise ValueError(
                f"label_delay needs keys p50, p90, p99 (seconds); missing {sorted(missing)}"
            )
        return cls(float(values["p50"]), float(values["p90"]), float(values["p99"]))


PerformanceVerdict = Literal[
    "ok", "degraded", "insufficient_labels", "no_reference", "undefined_metric"
]


@dataclass(frozen=True)
class PerformanceSignal(_Signal):
    """Metrics over the last labeled predictions against the champion's reference metric.

    ``drop`` is positive when the model got worse (in ``drop_kind`` terms); ``verdict`` is ``degraded`` when
    ``drop > max_drop``. Below ``min_labels`` rows there is no verdict (``insufficient_labels``), whatever
    the metrics say.
    """

    kind: ClassVar[str] = "performance"

    verdict: PerformanceVerdict
    metric: str
    value: float | None
    reference: float | None
    drop: float | None
    drop_kind: Literal["relative", "absolute"]
    max_drop: float
    drop_absolute: float | None
    drop_relative: float | None
    metrics: Mapping[str, float | None]
    rows: int  # labeled predictions the metrics were computed on
    rows_available: int  # labeled rows handed in (before dropping rows without a logged prediction)
    # Rows with class probabilities (ROC AUC / log loss), None without scores
    scored_rows: int | None
    min_labels: int
    window_rows: int
    label_coverage: float | None = None
    label_delay: DelayPercentiles | None = None
    reason: str | None = None
    start: datetime | None = None  # first / last label arrival of the evaluated rows
    end: datetime | None = None

    @property
    def triggered(self) -> bool:
        return self.verdict == "degraded"


# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DisabledSignal(_Signal):
    """The result of a monitor switched off in the policy: never triggers."""

    enabled: ClassVar[bool] = False
    kind: str = field(default="disabled")  # type: ignore[misc]

    @property
    def triggered(self) -> bool:
        return False
