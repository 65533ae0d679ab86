"""Incremental (continual) learning with River: test-then-train over newly matured labels.

Each call consumes the rows whose label seq is above the last one the model consumed, in
arrival order: predict the row first (kept, so the controller can compare with the
champion's logged predictions on the same rows), then learn it. The model's state, counters
included, round-trips through `dumps()` / `loads()` so a restarted daemon resumes exactly.

```yaml
checkpoint: {every_updates: 1000, every_minutes: 10}   # whichever comes first
```
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt, model_validator

from trainers._common import known_classes, report, unseen_rows, window_rows
from trainers.base import (
    NoParent,
    ParentModel,
    PrequentialPredictions,
    TrainingContext,
    TrainingResult,
    TrainingWindow,
)
from trainers.errors import IncompatibleEstimatorError
from trainers.metrics import prediction_metrics
from trainers.river_adapter import RiverModel
from trainers.schema import check_parent_schema


class CheckpointPolicy(BaseModel):
    """When the controller should persist the learner's bytes (either threshold triggers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_updates: PositiveInt | None = 1000
    every_minutes: PositiveFloat | None = 10.0

    @model_validator(mode="after")
    def _one_threshold(self) -> CheckpointPolicy:
        if self.every_updates is None and self.every_minutes is None:
            raise ValueError(
                "checkpoint needs every_updates, every_minutes or both; with neither the "
                "learner would never be saved and a restart would lose all its updates."
            )
        return self

    def due(
        self, now: datetime, updates_since_checkpoint: int, last_checkpoint_at: datetime | None
    ) -> bool:
        """Pure: is a checkpoint due? Never when nothing was learned since the last one."""
        if updates_since_checkpoint <= 0:
            return False
        if last_checkpoint_at is None:
            return True
        if self.every_updates is not None and updates_since_checkpoint >= self.every_updates:
            return True
        return self.every_minutes is not None and now - last_checkpoint_at >= timedelta(
            minutes=self.every_minutes
        )


class IncrementalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: CheckpointPolicy = CheckpointPolicy()


DEFAULT_CONFIG = IncrementalConfig()


def dumps(model: RiverModel) -> bytes:
    return model.dumps()


def loads(data: bytes) -> RiverModel:
    return RiverModel.loads(data)


class IncrementalTrainer:
    """Continue (or start, with NoParent) a River learner on newly matured labels."""

    name: ClassVar[str] = "incremental"
    config_model: ClassVar[type[BaseModel]] = IncrementalConfig

    def __init__(
        self,
        config: IncrementalConfig = DEFAULT_CONFIG,
        *,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config
        self.timer = timer

    def train(
        self, window: TrainingWindow, parent: ParentModel | NoParent, context: TrainingContext
    ) -> TrainingResult:
        if context.estimator.family != "river":
            raise IncompatibleEstimatorError(
                f"incremental learns one row at a time and needs a River estimator; the policy "
                f"names {context.estimator.describe()} (scikit-learn). Use e.g. "
                "river.linear_model.LogisticRegression or river.tree.HoeffdingAdaptiveTreeClassifier"
                ", or strategy 'finetune' for a scikit-learn model with partial_fit."
            )
        rows = window_rows(window, context, "incremental")
        model = self._start_from(parent, context, rows.labels)
        last_seen = max(
            (s for s in (parent.last_label_seq, model.last_label_seq) if s is not None),
            default=None,
        )
        rows = unseen_rows(rows, last_seen)
        started = self.timer()
        predictions, probabilities = model.test_then_train(
            rows.features, rows.labels, rows.label_seqs
        )
        duration = self.timer() - started
        if context.task == "classification":
            proba = pd.DataFrame(probabilities, columns=list(model.classes_))
            metrics = prediction_metrics(
                "classification", rows.labels.tolist(), predictions, probabilities, list(model.classes_)
            )
        else:
            proba = pd.DataFrame(index=range(len(rows)))
            metrics = prediction_metrics("regression", rows.labels.to_numpy(float), predictions)
        prequential = PrequentialPredictions(
            prediction_ids=rows.prediction_ids,
            label_seqs=rows.label_seqs,
            predictions=pd.Series(predictions, dtype=object),
            probabilities=proba,
        )
        return TrainingResult(
            model,
            report(
                strategy=self.name,
                estimator=str(model.learner),
                window=window,
                rows=rows,
                context=context,
                parent=parent,
                chain_depth=parent.child_depth(),  # 0 for a bootstrap (NoParent)
                duration_s=duration,
                fit_metrics=metrics,
                last_label_seq=model.last_label_seq,
                details={
                    "method": "test_then_train",
                    "metrics_kind": "prequential",
                    "n_updates_total": model.n_updates,
                    "rows_skipped_seen": window.rows - len(rows),
                },
            ),
            prequential,
        )

    def _start_from(
        self, parent: ParentModel | NoParent, context: TrainingContext, labels: pd.Series
    ) -> RiverModel:
        if isinstance(parent, NoParent):
            return context.estimator.build(
                context.feature_types,
                context.task,
                seed=context.seed,
                classes=known_classes(context, labels),
            )
        if not isinstance(parent.model, RiverModel):
            raise IncompatibleEstimatorError(
                f"parent version {parent.version} is a {type(parent.model).__name__}, not a "
                "River model, so incremental cannot continue it. Start a River learner with "
                "NoParent (bootstrap) or use strategy 'finetune' for scikit-learn."
            )
        check_parent_schema(parent.model.feature_types, context.feature_types, parent.version)
        # A copy, so the serving champion is untouched until the controller swaps it.
        return copy.deepcopy(parent.model)
