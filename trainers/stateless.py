"""Stateless retraining: a fresh estimator from the spec, fitted on the whole window."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from trainers import sklearn_adapter
from trainers._common import known_classes, report, window_rows
from trainers.base import NoParent, ParentModel, TrainingContext, TrainingResult, TrainingWindow
from trainers.errors import TrainingDataError
from trainers.metrics import evaluate
from trainers.river_adapter import RiverModel
from trainers.windows import AllRows, WindowConfig


class StatelessConfig(BaseModel):
    """`window` tells the controller which rows to query (see `trainers.windows`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: WindowConfig = AllRows()


DEFAULT_CONFIG = StatelessConfig()


class StatelessTrainer:
    """Fit a new model from scratch; a parent, if given, is only recorded as lineage.

    >>> StatelessTrainer().config.window.kind
    'all'
    """

    name: ClassVar[str] = "stateless"
    config_model: ClassVar[type[BaseModel]] = StatelessConfig

    def __init__(
        self,
        config: StatelessConfig = DEFAULT_CONFIG,
        *,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config
        self.timer = timer

    def train(
        self, window: TrainingWindow, parent: ParentModel | NoParent, context: TrainingContext
    ) -> TrainingResult:
        rows = window_rows(window, context, "stateless")
        if not len(rows):
            raise TrainingDataError(
                f"the window as of {window.as_of} holds no matured labels; stateless needs "
                "rows to fit. Wait for labels or widen the window."
            )
        model = context.estimator.build(
            context.feature_types,
            context.task,
            seed=context.seed,
            classes=known_classes(context, rows.labels),
        )
        started = self.timer()
        if isinstance(model, RiverModel):
            model.learn(rows.features, rows.labels, rows.label_seqs)
            method = "learn_one"
        else:
            sklearn_adapter.check_fit_labels(rows.labels, context.task)
            model.fit(rows.features, rows.labels.to_numpy())
            method = "fit"
        duration = self.timer() - started
        return TrainingResult(
            model,
            report(
                strategy=self.name,
                estimator=context.estimator.describe(),
                window=window,
                rows=rows,
                context=context,
                parent=parent,
                chain_depth=0,  # a fresh fit starts a new chain whatever it replaces
                duration_s=duration,
                fit_metrics=evaluate(model, rows.features, rows.labels, context.task),
                last_label_seq=rows.last_seq,
                details={"method": method, "window_kind": self.config.window.kind},
            ),
        )
