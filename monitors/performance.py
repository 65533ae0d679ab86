"""Live performance over the last ``window_rows`` labeled predictions, against the metric recorded at promotion.

Every metric of the task is carried (classification: accuracy, f1, roc_auc and log_loss, the last two only when class
probabilities were logged; regression: mae, rmse, r2), computed by :mod:`monitors.metrics` with the same rules as the
trainers' reports and the promotion gate; ``metric`` decides the verdict. An undefined metric is None, and a verdict
on it is ``undefined_metric`` with the reason (e.g. binary labels that name no positive class, ``UP``/``DOWN``,
without ``positive_class``: f1 and roc_auc are undefined, accuracy and log_loss are not).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from monitors.config import PerformanceConfig
from monitors.metrics import HIGHER_IS_BETTER, classification_metrics, regression_metrics
from monitors.protocols import LabeledRows
from monitors.signals import DelayPercentiles, PerformanceSignal

_TINY = 1e-12


class PerformanceMonitor:
    """Metrics of the last ``window_rows`` labeled predictions and a verdict against the reference metric."""

    kind = "performance"

    def __init__(self, config: PerformanceConfig, task: str = "classification") -> None:
        self.config = config
        self.task = task
        self.metric = config.metric_for(task)

    def evaluate(
        self,
        rows: LabeledRows,
        reference_metric: float | None,
        *,
        model_version: str | None = None,
        label_coverage: float | None = None,
        label_delay: Mapping[str, float] | None = None,
    ) -> PerformanceSignal:
        """Score the newest labeled predictions in ``rows`` (of ``model_version`` if given)."""
        config = self.config
        keep = ~pd.isna(rows.predictions).to_numpy()
        if model_version is not None:
            keep &= (rows.model_versions.astype(object) == str(model_version)).to_numpy()
        index = np.flatnonzero(keep)[-config.window_rows :]
        labels = rows.labels.iloc[index].reset_index(drop=True)
        predictions = rows.predictions.iloc[index].reset_index(drop=True)
        times = rows.label_times.iloc[index]
        if self.task == "classification":
            scores = None if rows.scores is None else rows.scores.iloc[index].reset_index(drop=True)
            metrics = classification_metrics(
                labels, predictions, scores, positive_class=config.positive_class
            )
        else:
            metrics = regression_metrics(labels, predictions)
        value = metrics[self.metric]

        drop_abs = drop_rel = drop = None
        reason = None
        if len(index) < config.min_labels:
            verdict = "insufficient_labels"
            reason = (
                f"{len(index)} labeled predictions < min_labels={config.min_labels}: no verdict"
            )
        elif value is None:
            verdict = "undefined_metric"
            reason = f"{self.metric} is undefined on these {len(index)} rows: {metrics.undefined[self.metric].why}"
        elif reference_metric is None:
            verdict = "no_reference"
            reason = "no reference metric recorded for the champion: nothing to compare with"
        else:
            drop_abs = (
                reference_metric - value
                if self.metric in HIGHER_IS_BETTER
                else value - reference_metric
            )
            drop_rel = drop_abs / abs(reference_metric) if abs(reference_metric) > _TINY else None
            if config.drop == "relative" and drop_rel is None:
                drop = drop_abs
                reason = "reference metric is 0: relative drop undefined, absolute drop used"
            else:
                drop = drop_rel if config.drop == "relative" else drop_abs
            verdict = "degraded" if drop > config.max_drop else "ok"
        return PerformanceSignal(
            verdict=verdict,
            metric=self.metric,
            value=value,
            reference=reference_metric,
            drop=drop,
            drop_kind=config.drop,
            max_drop=config.max_drop,
            drop_absolute=drop_abs,
            drop_relative=drop_rel,
            metrics=dict(metrics),
            rows=len(index),
            rows_available=len(rows.labels),
            scored_rows=metrics.scored_rows,
            min_labels=config.min_labels,
            window_rows=config.window_rows,
            label_coverage=label_coverage,
            # No matured label of a served prediction yet (only reference rows): the percentiles are None.
            label_delay=(
                DelayPercentiles.from_mapping(label_delay)
                if label_delay is not None and all(v is not None for v in label_delay.values())
                else None
            ),
            reason=reason,
            start=times.iloc[0].to_pydatetime() if len(times) else None,
            end=times.iloc[-1].to_pydatetime() if len(times) else None,
        )
