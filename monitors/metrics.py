"""Model metrics, defined once: the trainers' reports, the performance monitor, the promotion gate and the backtest
all score rows here, so one metric means one number everywhere.

Aggregates: :func:`classification_metrics` (accuracy, f1, roc_auc, log_loss) and :func:`regression_metrics` (mae,
rmse, r2) return every metric of the task as :class:`Metrics`; :func:`task_metrics` picks the family by task. Per
row: :func:`row_scores` for the metrics in ``ROW_METRICS``. The rules, the same for every caller:

- **Undefined is None**, never NaN and never a guess; ``Metrics.undefined[name]`` says why (:class:`Undefined`), whether
  more rows could give it a value and whether a setting is missing. Undefined: every metric on no rows; r2 on constant
  labels; every regression metric when a prediction is NaN or inf (a broken model, not rows to skip); roc_auc and
  log_loss without class probabilities; roc_auc on labels of one class; binary f1 and roc_auc while the positive class
  is unknown; binary f1 when the positive class is neither among the labels nor the predictions (0/0). Labels that are
  NaN or inf are an error: drop the rows without a label first.
- **Classes match by value, else by text**: ``"1"`` (a JSON object key, CSV text) and ``1`` are one class, in labels,
  predictions and probability columns alike.
- **The positive class** of binary f1 / roc_auc (:func:`resolve_positive_class`): ``positive_class`` when given, else
  the class that is ``True``/``1``/``"1"``/``"true"``; other binary labels (``UP``/``DOWN``) need it configured, and
  until then f1 and roc_auc are undefined (accuracy and log_loss need none). A problem is binary when the probability
  columns, the labels and the predictions name at most two classes. With more, f1 is the macro mean over the classes
  among the labels or the predictions (scikit-learn's ``average="macro"``) and roc_auc one-vs-rest, macro over the
  classes among the labels.
- **Probabilities** ``proba``: a DataFrame whose columns name classes (a row of NaN: no scores for that row, it is left
  out of log_loss and roc_auc, ``Metrics.scored_rows`` counts the others), or an array with one column per entry of
  ``classes``. A class without a column, or a NaN cell in a scored row, has probability 0: the model gave it nothing.
  log_loss clips the true class's probability to ``[EPS, 1]`` (one confident mistake costs about 34.5, not infinity)
  and does not renormalize rows.
- **Per row**: the mean of ``row_scores`` is the aggregate for accuracy, log_loss (over the scored rows) and mae; for
  rmse the per-row value is the squared error, whose mean is the MSE (rmse is its square root). f1, roc_auc and r2 are
  not means of per-row values (they need counts or ranks over all rows): ``row_scores`` refuses them.

>>> m = classification_metrics([1, 0, 1, 1], ["1", 0, 0, 1], np.array([[.2, .8], [.6, .4], [.7, .3], [.1, .9]]), [0, 1])
>>> {k: round(v, 4) for k, v in m.items()}
{'accuracy': 0.75, 'f1': 0.8, 'roc_auc': 0.6667, 'log_loss': 0.5108}
>>> m = classification_metrics(["UP", "DOWN"], ["UP", "UP"])
>>> m["f1"] is None, m.undefined["f1"].needs_setting
(True, True)
>>> row_scores("rmse", [1.0, 2.0], [1.5, 0.0]).tolist()
[0.25, 4.0]
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

__all__ = [
    "CLASSIFICATION_METRICS",
    "DEFAULT_METRIC",
    "EPS",
    "HIGHER_IS_BETTER",
    "REGRESSION_METRICS",
    "ROW_METRICS",
    "Metrics",
    "Undefined",
    "class_list",
    "classification_metrics",
    "metric_for",
    "regression_metrics",
    "resolve_positive_class",
    "row_scores",
    "task_metrics",
]

EPS = 1e-15  # log loss clips probabilities to [EPS, 1] so one confident mistake costs ~34.5, not infinity
CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("mae", "rmse", "r2")
HIGHER_IS_BETTER = frozenset({"accuracy", "f1", "roc_auc", "r2"})
ROW_METRICS = frozenset({"accuracy", "log_loss", "mae", "rmse"})
DEFAULT_METRIC = {"classification": "accuracy", "regression": "rmse"}



def metric_for(task: str, metric: str | None, setting: str = "metric") -> str:
    """``metric`` (named ``setting`` in the policy), or the task's default when None; ValueError if it does not fit.

    >>> metric_for("regression", None), metric_for("classification", "f1")
    ('rmse', 'f1')
    """
    if task not in DEFAULT_METRIC:
        raise ValueError(f"unknown task {task!r}; use 'classification' or 'regression'")
    if metric is None:
        return DEFAULT_METRIC[task]
    fitting = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if metric not in fitting:
        raise ValueError(f"{setting} {metric!r} does not fit a {task} model; use one of: {', '.join(fitting)}")
    return metric


# Without a configured positive class, the class equal to one of these is positive (0/1, False/True, "0"/"1" labels).
_POSITIVE_BY_DEFAULT = (True, 1, "1", "true", "True")
_SET_POSITIVE = ("set monitors.performance.positive_class in the policy to one of them (the gate follows it unless "
                 "gate.positive_class is set; accuracy and log_loss need none)")


@dataclass(frozen=True)
class Undefined:
    """Why a metric has no value on these rows."""

    why: str
    more_rows_help: bool  # True: e.g. one class only so far; False: no probabilities, NaN predictions
    needs_setting: bool = False  # a setting is missing or wrong (positive_class): only a person can fix it


@dataclass(frozen=True, eq=False)
class Metrics(Mapping[str, "float | None"]):
    """Every metric of a task by name: a float, or None where undefined (``undefined[name]`` says why)."""

    values: dict[str, float | None]
    undefined: dict[str, Undefined] = field(default_factory=dict)
    scored_rows: int | None = None  # classification: rows with class probabilities; None when none were given

    def __getitem__(self, name: str) -> float | None:
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def defined(self) -> dict[str, float]:
        """The metrics that have a value (what a training report records: a missing key means undefined)."""
        return {k: v for k, v in self.values.items() if v is not None}


def _metrics(raw: dict[str, float | Undefined], scored_rows: int | None = None) -> Metrics:
    return Metrics(
        values={k: None if isinstance(v, Undefined) else float(v) for k, v in raw.items()},
        undefined={k: v for k, v in raw.items() if isinstance(v, Undefined)},
        scored_rows=scored_rows,
    )


# ----------------------------------------------------------------------------------------------------------------
# Classes


def _objects(values: Any, name: str) -> np.ndarray:
    array = values.to_numpy(dtype=object) if isinstance(values, (pd.Series, pd.Index)) else np.asarray(
        list(values), dtype=object)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per row), got shape {array.shape}")
    return array


def _class_order(value: Any) -> tuple:
    # Numbers sort as numbers, everything else by its text; the two groups are never compared with each other.
    if isinstance(value, numbers.Number):
        return (0, value, "")
    return (1, 0, str(value))


def _codes(classes: list, values: np.ndarray) -> np.ndarray:
    """The index of each value in ``classes`` (by value, else by text); -1 where none matches."""
    if len(values) <= _SMALL:
        # A dict lookup per value: the race scores a few rows per tick, where building pandas indexes cost more
        # than the rows (same matching: equal values hash alike, so 1 == 1.0 == True as in an Index).
        by_value: dict[Any, int] = {}
        by_text: dict[str, int] = {}
        for i, c in enumerate(classes):
            try:
                by_value.setdefault(c, i)
            except TypeError:  # an unhashable class can only match by text
                pass
            by_text.setdefault(str(c), i)
        out = np.empty(len(values), dtype=np.int64)
        for k, v in enumerate(values.tolist()):
            try:
                found = by_value.get(v)
            except TypeError:
                found = None
            out[k] = found if found is not None else by_text.get(str(v), -1)
        return out
    codes = pd.Index(classes, dtype=object).get_indexer(values)
    missing = codes < 0
    if missing.any() and classes:
        by_text = pd.Index([str(c) for c in classes], dtype=object)
        codes[missing] = by_text.get_indexer(np.array([str(v) for v in values[missing]], dtype=object))
    return codes


#: Below this many values, class codes come from dict lookups instead of pandas indexes (see _codes).
_SMALL = 256


def class_list(*values: Any, classes: Sequence = ()) -> list:
    """``classes`` in order, then every other class found in ``values`` (sorted); a class is listed once.

    >>> class_list(["b", 2, "2"], [1], classes=["z"])
    ['z', 1, 2, 'b']
    """
    known: list = []
    for value in classes:
        if not known or _codes(known, np.array([value], dtype=object))[0] < 0:
            known.append(value)
    arrays = [_objects(v, "values") for v in values]
    seen = pd.unique(np.concatenate(arrays)) if arrays else np.empty(0, dtype=object)
    unseen = seen[_codes(known, seen) < 0] if len(seen) else seen
    for value in sorted(unseen.tolist(), key=_class_order):
        if _codes(known, np.array([value], dtype=object))[0] < 0:
            known.append(value)
    return known


def _positive(classes: list, positive_class: Any) -> Any:
    """The positive class among ``classes``, or :class:`Undefined` saying why there is none."""
    if positive_class is not None:
        for c in classes:
            if c == positive_class or str(c) == str(positive_class):
                return c
        if len(classes) < 2:
            return positive_class  # it has not occurred in these rows yet
        return Undefined(f"positive_class {positive_class!r} is not one of the classes {classes}; {_SET_POSITIVE}",
                         more_rows_help=False, needs_setting=True)
    for candidate in _POSITIVE_BY_DEFAULT:
        for c in classes:
            if c == candidate:
                return c
    if len(classes) < 2:
        # The class that has not occurred yet may be 1/True: more rows can tell.
        return Undefined(f"the positive class is unknown: only {classes} occurs, which is not 1/True (or "
                         "set positive_class)", more_rows_help=True)
    return Undefined(f"cannot tell the positive class among {classes} for binary f1 / roc_auc; {_SET_POSITIVE}",
                     more_rows_help=False, needs_setting=True)


def resolve_positive_class(classes: Sequence, positive_class: Any = None) -> Any:
    """The positive class of a binary problem: ``positive_class`` if given (matched by value or text), else the
    class that is ``True``/``1``/``"1"``/``"true"``; ValueError saying what to set when neither applies.

    >>> resolve_positive_class(["0", "1"]), resolve_positive_class(["ham", "spam"], "spam")
    ('1', 'spam')
    """
    found = _positive(list(classes), positive_class)
    if isinstance(found, Undefined):
        raise ValueError(found.why)
    return found


# ----------------------------------------------------------------------------------------------------------------
# Classification


@dataclass(frozen=True)
class _Rows:
    """Classification rows as codes into ``classes``: the probability columns first, then ``known``, then the rest."""

    classes: list
    y: np.ndarray
    p: np.ndarray | None
    proba: np.ndarray | None  # (rows, columns) as given, NaN kept
    column_of: np.ndarray  # column of proba for each class code, -1 where the class has no column

    @classmethod
    def of(cls, labels: Any, predictions: Any, proba: Any, known: Sequence) -> _Rows:
        y = _objects(labels, "labels")
        p = None if predictions is None else _objects(predictions, "predictions")
        if p is not None and len(p) != len(y):
            raise ValueError(f"{len(y):,} labels but {len(p):,} predictions: score one prediction per labeled row")
        columns, matrix = _probabilities(proba, known, len(y))
        classes = class_list(y, *([] if p is None else [p]), classes=[*columns, *known])
        column_of = np.full(len(classes), -1)
        column_of[_codes(classes, np.array(columns, dtype=object))] = np.arange(len(columns))
        return cls(classes, _codes(classes, y), None if p is None else _codes(classes, p), matrix, column_of)

    @property
    def binary(self) -> bool:
        return len(self.classes) <= 2

    def scores_of(self, code: int) -> np.ndarray:
        """The probability of class ``code`` on each row (0 where it has no column or the cell is NaN)."""
        if self.column_of[code] < 0:
            return np.zeros(len(self.y))
        return np.nan_to_num(self.proba[:, self.column_of[code]], nan=0.0)

    def true_probability(self) -> np.ndarray:
        """The probability each row gave its label: 0 where the label has no column, NaN on rows without scores."""
        n = len(self.y)
        out = np.zeros(n)
        column = self.column_of[self.y]
        has = column >= 0
        out[has] = self.proba[np.flatnonzero(has), column[has]]
        out = np.nan_to_num(out, nan=0.0)
        unscored = np.isnan(self.proba).all(axis=1) if self.proba.shape[1] else np.ones(n, dtype=bool)
        out[unscored] = np.nan
        return out


def _probabilities(proba: Any, classes: Sequence, rows: int) -> tuple[list, np.ndarray | None]:
    """The classes of the probability columns and the probabilities as float64 (NaN kept)."""
    if proba is None:
        return [], None
    if isinstance(proba, pd.DataFrame):
        columns, matrix = list(proba.columns), proba.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        columns, matrix = list(classes), np.asarray(proba, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(columns):
            raise ValueError(
                f"proba has shape {matrix.shape}, expected ({rows}, {len(columns)}): one column per class of "
                f"classes={columns}; pass classes= in the column order, or a DataFrame whose columns name the classes")
    if len(matrix) != rows:
        raise ValueError(f"proba has {len(matrix):,} rows for {rows:,} labels: one row of probabilities per label")
    if len(class_list(classes=columns)) != len(columns):
        raise ValueError(f"the probability columns {columns} name a class twice ('1' and 1 are one class); "
                         "give one column per class")
    return columns, matrix


def _log_loss_rows(true_probability: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(true_probability, EPS, 1.0))


def _f1(rows: _Rows, positive: Any) -> float | Undefined:
    k = len(rows.classes)
    hits = np.bincount(rows.y[rows.y == rows.p], minlength=k)
    # 2TP + FP + FN of a class = its count among the labels + its count among the predictions
    denominator = np.bincount(rows.y, minlength=k) + np.bincount(rows.p, minlength=k)
    if not rows.binary:
        present = denominator > 0
        return float(np.mean(2 * hits[present] / denominator[present]))
    if isinstance(positive, Undefined):
        return positive
    code = _codes(rows.classes, np.array([positive], dtype=object))[0]
    if code < 0 or denominator[code] == 0:
        return Undefined(f"the positive class {positive!r} is neither among the labels nor the predictions (f1 is "
                         "0/0)", more_rows_help=True)
    return float(2 * hits[code] / denominator[code])


def _roc_auc(rows: _Rows, scored: np.ndarray, positive: Any) -> float | Undefined:
    y = rows.y[scored]
    present = np.unique(y)
    if len(present) < 2:
        return Undefined(f"only one class ({rows.classes[present[0]]!r}) among the labels", more_rows_help=True)
    if rows.binary:
        if isinstance(positive, Undefined):
            return positive
        code = _codes(rows.classes, np.array([positive], dtype=object))[0]
        return float(roc_auc_score(y == code, rows.scores_of(code)[scored]))
    return float(np.mean([roc_auc_score(y == c, rows.scores_of(c)[scored]) for c in present]))


def classification_metrics(labels: Any, predictions: Any, proba: Any = None, classes: Sequence = (), *,
                           positive_class: Any = None) -> Metrics:
    """accuracy, f1, roc_auc and log_loss of ``predictions`` (and ``proba``) against ``labels``.

    ``classes``: known classes, in the column order of an array ``proba`` (one per column); with a DataFrame
    ``proba`` (or none) further classes of the problem, e.g. the other model's predictions in a paired comparison.
    """
    rows = _Rows.of(labels, predictions, proba, classes)
    n = len(rows.y)
    if n == 0:
        nothing = Undefined("no rows to score", more_rows_help=True)
        return _metrics(dict.fromkeys(CLASSIFICATION_METRICS, nothing), None if proba is None else 0)
    positive = _positive(rows.classes, positive_class) if rows.binary else None
    raw: dict[str, float | Undefined] = {"accuracy": float(np.mean(rows.y == rows.p)), "f1": _f1(rows, positive)}
    scored_rows = None
    if rows.proba is None:
        raw["roc_auc"] = raw["log_loss"] = Undefined(
            "no class probabilities were given; use a metric of predicted labels (accuracy, f1) or an estimator "
            "with predict_proba", more_rows_help=False)
    else:
        true_probability = rows.true_probability()
        scored = ~np.isnan(true_probability)
        scored_rows = int(scored.sum())
        if not scored_rows:
            raw["roc_auc"] = raw["log_loss"] = Undefined(f"none of the {n:,} rows has class probabilities",
                                                         more_rows_help=False)
        else:
            raw["roc_auc"] = _roc_auc(rows, scored, positive)
            raw["log_loss"] = float(np.mean(_log_loss_rows(true_probability[scored])))
    return _metrics({m: raw[m] for m in CLASSIFICATION_METRICS}, scored_rows)


# ----------------------------------------------------------------------------------------------------------------
# Regression


def _regression_arrays(labels: Any, predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels.to_numpy() if isinstance(labels, pd.Series) else labels, dtype=np.float64)
    p = np.asarray(predictions.to_numpy() if isinstance(predictions, pd.Series) else predictions, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be one-dimensional and of one length: "
                         "score one prediction per labeled row")
    bad = int((~np.isfinite(y)).sum())
    if bad:
        raise ValueError(f"the labels contain NaN or inf on {bad:,} rows; only rows with real labels can be scored, "
                         "drop the others first")
    return y, p


def regression_metrics(labels: Any, predictions: Any) -> Metrics:
    """mae, rmse and r2 of ``predictions`` against ``labels``."""
    y, p = _regression_arrays(labels, predictions)
    if not len(y):
        return _metrics(dict.fromkeys(REGRESSION_METRICS, Undefined("no rows to score", more_rows_help=True)))
    bad = int((~np.isfinite(p)).sum())
    if bad:
        broken = Undefined(f"the predictions are NaN or inf on {bad:,} rows", more_rows_help=False)
        return _metrics(dict.fromkeys(REGRESSION_METRICS, broken))
    squared = (y - p) ** 2
    # r2 is 0/0 for constant labels (scikit-learn would quietly say 0.0 or 1.0 there).
    spread = float(np.sum((y - y.mean()) ** 2)) if np.ptp(y) > 0 else 0.0
    return _metrics({
        "mae": float(np.mean(np.abs(y - p))),
        "rmse": float(np.sqrt(np.mean(squared))),
        "r2": 1.0 - float(np.sum(squared)) / spread if spread > 0 else Undefined("the labels are constant", True),
    })


def task_metrics(task: str, labels: Any, predictions: Any, proba: Any = None, classes: Sequence = (), *,
                 positive_class: Any = None) -> Metrics:
    """:func:`classification_metrics` or :func:`regression_metrics` (which ignores ``proba``) by ``task``."""
    if task == "classification":
        return classification_metrics(labels, predictions, proba, classes, positive_class=positive_class)
    if task == "regression":
        return regression_metrics(labels, predictions)
    raise ValueError(f"unknown task {task!r}; use 'classification' or 'regression'")


# ----------------------------------------------------------------------------------------------------------------
# Per row


def row_scores(metric: str, labels: Any, predictions: Any, proba: Any = None, classes: Sequence = ()) -> np.ndarray:
    """One value per row whose mean is the metric (for rmse: the squared error, whose mean is the MSE).

    accuracy: 1.0 right, 0.0 wrong; log_loss: the clipped log loss of the row's label (NaN on rows without scores;
    ``predictions`` may be None); mae: absolute error; rmse: squared error (NaN where a prediction is NaN). Higher is
    better for accuracy, lower for the others, as for the metrics (``HIGHER_IS_BETTER``).
    """
    if metric in ("mae", "rmse"):
        y, p = _regression_arrays(labels, predictions)
        return np.abs(y - p) if metric == "mae" else (y - p) ** 2
    if metric == "accuracy":
        rows = _Rows.of(labels, predictions, None, classes)
        return (rows.y == rows.p).astype(np.float64)
    if metric == "log_loss":
        if proba is None:
            raise ValueError("row_scores('log_loss') needs the class probabilities (proba=); without them use "
                             "accuracy")
        return _log_loss_rows(_Rows.of(labels, None, proba, classes).true_probability())
    if metric in CLASSIFICATION_METRICS or metric in REGRESSION_METRICS:
        raise ValueError(f"{metric} is not a mean of per-row values (it needs counts or ranks over all rows), so it "
                         f"has no per-row score; per-row metrics: {', '.join(sorted(ROW_METRICS))}")
    raise ValueError(f"unknown metric {metric!r}; per-row metrics: {', '.join(sorted(ROW_METRICS))}")
