"""Live performance over the last ``window_rows`` labeled predictions, against the metric recorded at promotion.

Classification: accuracy; F1 (binary: of the positive class; more classes: macro over the classes present);
ROC AUC (binary: the positive class's score; more classes: one-vs-rest macro over classes present in the
labels) and log loss, both only when class probabilities were logged. Regression: MAE, RMSE, R².
Every metric that can be computed is carried; ``metric`` decides the verdict. Accuracy and log loss need no
positive class: when binary labels name none (``UP``/``DOWN``) and ``positive_class`` is not set, F1 and ROC AUC are
left undefined (None) and only a verdict on one of them says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, r2_score, roc_auc_score

from monitors.config import HIGHER_IS_BETTER, PerformanceConfig
from monitors.losses import log_loss_rows, true_class_probability
from monitors.protocols import LabeledRows
from monitors.signals import DelayPercentiles, PerformanceSignal

_TINY = 1e-12


def _class_key(value: object) -> tuple[str, str]:
    # Sort mixed label types deterministically (ints and strs cannot be compared directly).
    return (type(value).__name__, str(value))


def _score_column(scores: pd.DataFrame, label: object) -> object | None:
    for column in scores.columns:
        if column == label or str(column) == str(label):
            return column
    return None


def classification_metrics(
    labels: pd.Series,
    predictions: pd.Series,
    scores: pd.DataFrame | None,
    positive_class: object = None,
) -> tuple[dict[str, float | None], int | None]:
    """accuracy, f1, roc_auc, log_loss (None when undefined) and the number of rows with usable scores."""
    metrics, scored_rows, _ = _classification(labels, predictions, scores, positive_class)
    return metrics, scored_rows


def _classification(
    labels: pd.Series,
    predictions: pd.Series,
    scores: pd.DataFrame | None,
    positive_class: object,
) -> tuple[dict[str, float | None], int | None, str | None]:
    """The metrics, the rows with scores, and why binary F1/ROC AUC are undefined (no positive class), if so."""
    y = labels.to_numpy(dtype=object)
    p = predictions.to_numpy(dtype=object)
    seen = pd.unique(np.concatenate([y, p])).tolist()
    if scores is not None:
        # A score column names a class; "1" (JSON) and 1 are the same class, not two.
        names = {str(c) for c in seen}
        seen += [c for c in scores.columns if str(c) not in names]
    classes = sorted(seen, key=_class_key)
    index = pd.Index(classes, dtype=object)
    y_code, p_code = index.get_indexer(y), index.get_indexer(p)
    metrics: dict[str, float | None] = {
        "accuracy": float(np.mean(y_code == p_code)) if len(y) else None
    }

    binary = len(classes) <= 2
    positive, no_positive = None, None
    if binary:
        try:
            positive = resolve_positive_class(classes, positive_class)
        except ValueError as exc:  # only F1 and ROC AUC need it; accuracy and log loss are still defined
            no_positive = str(exc)
    if not len(y) or no_positive:
        metrics["f1"] = None
    elif binary:
        pos = classes.index(positive)
        metrics["f1"] = float(f1_score(y_code == pos, p_code == pos, zero_division=0.0))
    else:
        present = np.union1d(y_code, p_code)
        metrics["f1"] = float(
            f1_score(y_code, p_code, labels=present, average="macro", zero_division=0.0)
        )

    scored_rows = None
    metrics["roc_auc"] = metrics["log_loss"] = None
    if scores is not None:
        have = ~np.isnan(true_class_probability(labels, scores))
        scored_rows = int(have.sum())
        if scored_rows:
            metrics["log_loss"] = float(np.mean(log_loss_rows(labels[have], scores.loc[have])))
            if not no_positive:
                targets = [positive] if binary else [classes[i] for i in np.unique(y_code[have])]
                metrics["roc_auc"] = _roc_auc(y_code[have], scores.loc[have], classes, targets)
    return metrics, scored_rows, no_positive


def _roc_auc(
    y_code: np.ndarray, scores: pd.DataFrame, classes: list, targets: list
) -> float | None:
    """Mean one-vs-rest ROC AUC over ``targets`` (binary: just the positive class); None if none defined."""
    aucs = []
    for target in targets:
        column = _score_column(scores, target)
        if column is None:
            continue
        is_target = y_code == classes.index(target)
        score = scores[column].to_numpy(dtype=np.float64)
        ok = ~np.isnan(score)
        if is_target[ok].all() or not is_target[ok].any():
            continue  # one class only among these rows: AUC undefined for this target
        aucs.append(float(roc_auc_score(is_target[ok], score[ok])))
    return float(np.mean(aucs)) if aucs else None


def resolve_positive_class(classes: Sequence, positive_class: object) -> object:
    """The positive class of a binary problem: the configured one, else 1/True for 0/1 or False/True labels."""
    if positive_class is not None:
        for c in classes:
            if c == positive_class or str(c) == str(positive_class):
                return c
        if len(classes) < 2:
            return positive_class  # the class did not occur in this window
        raise ValueError(
            f"positive_class {positive_class!r} is not one of the classes in the window {list(classes)}; "
            "set monitors.performance.positive_class to one of them"
        )
    for candidate in (True, 1, "1", "true", "True"):
        for c in classes:
            if c == candidate:
                return c
    if len(classes) < 2:
        return classes[0] if classes else None
    raise ValueError(
        f"cannot tell the positive class among {list(classes)} for binary F1 / ROC AUC; set "
        "monitors.performance.positive_class in the policy to one of them (accuracy and log_loss need none)"
    )


def regression_metrics(labels: pd.Series, predictions: pd.Series) -> dict[str, float | None]:
    y = labels.to_numpy(dtype=np.float64)
    p = predictions.to_numpy(dtype=np.float64)
    if not len(y):
        return {"mae": None, "rmse": None, "r2": None}
    err = y - p
    # R² is undefined for constant labels (0/0); sklearn would return a number there, so guard first.
    r2 = float(r2_score(y, p)) if len(y) >= 2 and np.ptp(y) > 0 else None
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))), "r2": r2}


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
        scored_rows = no_positive = None
        if self.task == "classification":
            scores = None if rows.scores is None else rows.scores.iloc[index].reset_index(drop=True)
            metrics, scored_rows, no_positive = _classification(
                labels, predictions, scores, config.positive_class
            )
        else:
            metrics = regression_metrics(labels, predictions)
        value = metrics.get(self.metric)

        drop_abs = drop_rel = drop = None
        reason = None
        if len(index) < config.min_labels:
            verdict = "insufficient_labels"
            reason = (
                f"{len(index)} labeled predictions < min_labels={config.min_labels}: no verdict"
            )
        elif value is None:
            verdict = "undefined_metric"
            reason = (
                f"{self.metric} is undefined: {no_positive}"
                if no_positive and self.metric in ("f1", "roc_auc")
                else f"{self.metric} is undefined on these rows (e.g. one class only, or no scores logged)"
            )
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
            metrics=metrics,
            rows=len(index),
            rows_available=len(rows.labels),
            scored_rows=scored_rows,
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
