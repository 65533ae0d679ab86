"""Fit metrics recorded in the training report (numpy only, so they mean the same for every family)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_EPS = 1e-15


def classification_metrics(
    y_true: Sequence[Any], y_pred: Sequence[Any], proba: np.ndarray | None, classes: Sequence[Any]
) -> dict[str, float]:
    truth = list(y_true)
    if not truth:
        return {}
    predicted = list(y_pred)
    metrics = {"accuracy": float(np.mean([t == p for t, p in zip(truth, predicted)]))}
    if proba is not None and proba.shape[1] == len(classes) and len(classes):
        column = {c: i for i, c in enumerate(list(classes))}
        p_true = np.array(
            [proba[row, column[t]] if t in column else 0.0 for row, t in enumerate(truth)]
        )
        metrics["log_loss"] = float(-np.mean(np.log(np.clip(p_true, _EPS, 1.0))))
    return metrics


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    truth = np.asarray(y_true, dtype=float)
    if truth.size == 0:
        return {}
    error = np.asarray(y_pred, dtype=float) - truth
    spread = float(np.sum((truth - truth.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "r2": float(1.0 - np.sum(error**2) / spread) if spread > 0 else float("nan"),
    }


def evaluate(model: Any, X: Any, y: Any, task: str) -> dict[str, float]:
    """Metrics of a fitted model on (X, y): accuracy/log_loss or mae/rmse/r2."""
    if len(y) == 0:
        return {}
    if task == "regression":
        return regression_metrics(y, model.predict(X))
    proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    classes = list(getattr(model, "classes_", []))
    if proba is not None and len(classes) == proba.shape[1] and len(classes):
        predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    else:
        predicted = model.predict(X)
    return classification_metrics(y, predicted, proba, classes)
