"""The trainer protocol and the records that go in and out of it.

A trainer turns (window, parent, context) into a fitted model plus a report. The report's
fields are the lineage facts the controller hands to `lineage/` for the registered version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator

from trainers.estimator_spec import EstimatorSpec
from trainers.schema import FeatureKind, Task, check_feature_types


@runtime_checkable
class TrainingWindow(Protocol):
    """What trainers read from the controller's `LabeledWindow` (structural, no import)."""

    @property
    def as_of(self) -> datetime: ...
    @property
    def features(self) -> pd.DataFrame: ...
    @property
    def labels(self) -> pd.Series: ...
    @property
    def prediction_ids(self) -> pd.Series: ...
    @property
    def label_seqs(self) -> pd.Series: ...
    @property
    def rows(self) -> int: ...
    @property
    def start(self) -> datetime | None: ...
    @property
    def end(self) -> datetime | None: ...
    @property
    def fingerprint(self) -> str: ...


@runtime_checkable
class Model(Protocol):
    """What every trained model offers: a scikit-learn Pipeline or a `RiverModel`.

    Classifiers also offer `predict_proba(X)` with columns in `classes_` order.
    """

    def predict(self, X: pd.DataFrame) -> np.ndarray: ...


class TrainingContext(BaseModel):
    """Everything about the model being trained that is not data: spec, schema, task, seed."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    estimator: EstimatorSpec
    feature_types: dict[str, FeatureKind]
    task: Task
    # Known target classes; empty means "whatever the window shows". A River learner or a
    # first partial_fit needs them up front to know classes that have not appeared yet.
    classes: tuple[Any, ...] = ()
    seed: int = 0

    @field_validator("feature_types")
    @classmethod
    def _non_empty(cls, value: dict[str, str]) -> dict[str, str]:
        return check_feature_types(value)


@dataclass(frozen=True)
class ParentModel:
    """A registered version to continue from (finetune, incremental)."""

    model: Any
    version: str
    chain_depth: int = 0
    window_end: datetime | None = None
    # Highest store label sequence the parent has learned from; rows at or below it are skipped.
    last_label_seq: int | None = None

    def child_depth(self) -> int:
        return self.chain_depth + 1


@dataclass(frozen=True)
class NoParent:
    """Null object: training from scratch (bootstrap, or stateless)."""

    version: None = None
    chain_depth: int = 0
    window_end: None = None
    last_label_seq: None = None

    def child_depth(self) -> int:
        return 0


NO_PARENT = NoParent()


@dataclass(frozen=True)
class TrainingReport:
    """The lineage facts of one training run. Every field is meant to be recorded.

    `rows` counts the rows actually learned from; `window_rows` the rows the window held
    (finetune and incremental skip rows their parent had already learned).
    `details` holds strategy-specific facts (method, trees_added, fallback_reason...).
    """

    strategy: str
    estimator: str
    task: str
    rows: int
    window_rows: int
    window_start: datetime | None
    window_end: datetime | None
    window_fingerprint: str
    label_cut: datetime
    last_label_seq: int | None
    duration_s: float
    fit_metrics: Mapping[str, float]
    chain_depth: int
    parent_version: str | None
    seed: int
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_tags(self, prefix: str = "driftpilot.") -> dict[str, str]:
        """Flat string tags (MLflow model-version tags accept strings only)."""
        flat: dict[str, Any] = {
            k: v for k, v in asdict(self).items() if k not in ("fit_metrics", "details")
        }
        flat.update({f"fit.{k}": v for k, v in self.fit_metrics.items()})
        flat.update({f"detail.{k}": v for k, v in self.details.items()})
        return {
            f"{prefix}{key}": (value.isoformat() if isinstance(value, datetime) else str(value))
            for key, value in flat.items()
            if value is not None
        }

    def with_details(self, **facts: Any) -> TrainingReport:
        """A copy with more strategy facts (e.g. a fallback reason recorded by the caller)."""
        from dataclasses import replace

        return replace(self, details={**self.details, **facts})


@dataclass(frozen=True)
class PrequentialPredictions:
    """Test-then-train predictions: what the learner predicted for each row before learning it.

    Aligned row by row with `prediction_ids`; `probabilities` has one column per class
    (empty frame for regression). Empty for strategies that do not predict while learning.
    """

    prediction_ids: pd.Series = field(default_factory=lambda: pd.Series([], dtype=object))
    label_seqs: pd.Series = field(default_factory=lambda: pd.Series([], dtype="int64"))
    predictions: pd.Series = field(default_factory=lambda: pd.Series([], dtype=object))
    probabilities: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return len(self.prediction_ids)


@dataclass(frozen=True)
class TrainingResult:
    model: Any
    report: TrainingReport
    prequential: PrequentialPredictions = field(default_factory=PrequentialPredictions)


@runtime_checkable
class Trainer(Protocol):
    """One verb: turn a window (and maybe a parent) into a fitted model with its report."""

    def train(
        self, window: TrainingWindow, parent: ParentModel | NoParent, context: TrainingContext
    ) -> TrainingResult: ...
