"""Metrics of a training report: the predictions are made here, the numbers come from :mod:`monitors.metrics`.

``monitors.metrics`` is the one module ``trainers`` imports from another package (docs/architecture.md): a version's
holdout metrics are the reference the performance monitor and the gate compare against, so all three must compute a
metric the same way. A report records the defined metrics only: a missing key means undefined on those rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from monitors.metrics import task_metrics


def prediction_metrics(task: str, labels: Any, predictions: Any, proba: Any = None, classes: Sequence = (), *,
                       positive_class: Any = None) -> dict[str, float]:
    """The defined metrics of ``predictions`` (and class probabilities ``proba``, columns ``classes``)."""
    return task_metrics(task, labels, predictions, proba, classes, positive_class=positive_class).defined()


def evaluate(model: Any, X: Any, y: Any, task: str, *, positive_class: Any = None) -> dict[str, float]:
    """Metrics of a fitted model on (X, y): accuracy/f1/roc_auc/log_loss or mae/rmse/r2, the undefined ones left out.

    ``positive_class``: of binary f1 / roc_auc (the policy's ``monitors.performance.positive_class``).
    """
    if len(y) == 0:
        return {}
    if task == "regression":
        return prediction_metrics(task, y, model.predict(X))
    proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    classes = list(getattr(model, "classes_", []))
    if proba is not None and len(classes) == proba.shape[1] and len(classes):
        # The class is the argmax of the probabilities, so accuracy and log_loss judge the same output.
        predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    else:
        predicted, proba = model.predict(X), None
    return prediction_metrics(task, y, predicted, proba, classes, positive_class=positive_class)
