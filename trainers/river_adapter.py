"""Everything that touches River: assembling a learner from spec steps and `RiverModel`.

Preprocessing (all of it keeps learning, because River learners are online):
- numeric: passed as floats; NaN is dropped from the row dict, so a missing optional is an
  absent key (River's scalers and linear models skip absent keys rather than imputing).
- boolean: 1.0 / 0.0, None dropped.
- categorical: str values one-hot encoded by `river.preprocessing.OneHotEncoder`, which adds a
  key for every new category it meets, so new categories keep being learned after bootstrap.
The user's steps come after that union, e.g. `StandardScaler | LogisticRegression`. A lone learner that splits on
categories itself (River's tree classifiers, ARFClassifier, the dummies) gets the row as it is (`takes_categories`).
"""

from __future__ import annotations

import numbers
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import river
from river import base as river_base
from river import compose, preprocessing

from trainers.errors import TrainerError, TrainingDataError
from trainers.schema import is_missing

STATE_FORMAT = "driftpilot.river_model/1"


def is_river_class(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "river" or issubclass(cls, river_base.Base)


def is_transformer(obj: Any) -> bool:
    return isinstance(obj, river_base.Transformer)


def is_predictor(obj: Any) -> bool:
    return isinstance(obj, (river_base.Classifier, river_base.Regressor))


def matches_task(obj: Any, task: str) -> bool:
    wanted = river_base.Classifier if task == "classification" else river_base.Regressor
    return isinstance(obj, wanted)


def assemble(
    steps: Sequence[Any], feature_types: Mapping[str, str], task: str, classes: Sequence[Any] = ()
) -> RiverModel:
    """Chain the schema-derived preprocessing and the user's steps into one River pipeline.

    A lone learner that splits on categories itself (River's Hoeffding trees and adaptive random forests, the dummy
    baselines) gets the row as it is, categories as strings: one-hot columns cost ARF 0.017 accuracy on Elec2 (its
    ``day``), because each random feature subset then sees a sliver of a category instead of the whole of it.
    """
    if len(steps) == 1 and takes_categories(steps[0]):
        learner = steps[0]
    else:
        # SelectType tolerates absent keys (compose.Select raises KeyError on a missing optional).
        learner = compose.SelectType(numbers.Number) + (
            compose.SelectType(str) | preprocessing.OneHotEncoder()
        )
        for step in steps:
            learner = learner | step
    if task == "classification" and not getattr(learner, "_multiclass", True) and len(
        set(classes)
    ) > 2:
        raise TrainingDataError(
            f"{type(steps[-1]).__name__} is a binary River classifier but the target has "
            f"{len(set(classes))} classes {sorted(set(classes), key=repr)}. Use a multiclass "
            "learner, e.g. river.tree.HoeffdingAdaptiveTreeClassifier or "
            "river.linear_model.SoftmaxRegression."
        )
    return RiverModel(learner, feature_types, task, classes)


def takes_categories(step: Any) -> bool:
    """Whether a River learner splits on string categories itself, so one-hot encoding would only hurt it: the
    Hoeffding tree classifiers, ARFClassifier and the dummy baselines. (River's tree *regressors* fit linear models
    in their leaves, which need numbers.)"""
    cls = type(step)
    package = ".".join(cls.__module__.split(".")[:2])
    if package == "river.dummy":
        return True
    if not isinstance(step, river_base.Classifier):
        return False
    if package == "river.forest":
        return cls.__name__ == "ARFClassifier"
    return package == "river.tree" and not cls.__name__.startswith("SGT")


def to_rows(X: pd.DataFrame, feature_types: Mapping[str, str]) -> list[dict[str, Any]]:
    """DataFrame -> River dicts in row order, dropping missing values (see module docstring)."""
    names = list(feature_types)
    columns = [_convert_column(X[name], kind) for name, kind in feature_types.items()]
    return [
        {name: value for name, value in zip(names, values) if value is not None}
        for values in zip(*columns)
    ]


def record_row(record: Mapping[str, Any], feature_types: Mapping[str, str]) -> dict[str, Any]:
    """One stored feature dict as a River row, by the same rules as :func:`to_rows` (numeric -> float, boolean ->
    1.0/0.0, categorical -> str; missing, None and NaN dropped)."""
    row: dict[str, Any] = {}
    for name, kind in feature_types.items():
        value = record.get(name)
        if value is None or is_missing(value):
            continue
        if kind == "numeric":
            row[name] = float(value)
        elif kind == "boolean":
            row[name] = float(bool(value))
        else:
            row[name] = str(value)
    return row


def _convert_column(column: pd.Series, kind: str) -> list[Any]:
    values = column.tolist()
    if kind == "numeric":
        return [None if is_missing(v) else float(v) for v in values]
    if kind == "boolean":
        return [None if is_missing(v) else float(bool(v)) for v in values]
    return [None if is_missing(v) else str(v) for v in values]



def _sorted_classes(classes: Any) -> list[Any]:
    try:
        return sorted(classes)
    except TypeError:  # mixed label types cannot be ordered; keep a stable order anyway
        return sorted(classes, key=repr)


class RiverModel:
    """A River learner behind the scikit-learn style interface the controller uses.

    `predict(X)` / `predict_proba(X)` take the policy DataFrame; `learn(X, y, seqs)` continues
    training in row order. Counters (`n_updates`, `last_label_seq`) travel with the model and
    with `dumps()`, so a restarted daemon resumes exactly after the last consumed label.

    River's binary-only classifiers (LogisticRegression, ...) learn bool targets; for them the
    two `classes_` are fixed up front and `classes_[1]` is encoded as True (as in scikit-learn).
    """

    def __init__(
        self,
        learner: Any,
        feature_types: Mapping[str, str],
        task: str,
        classes: Sequence[Any] = (),
    ) -> None:
        self.learner = learner
        self.feature_types = dict(feature_types)
        self.task = task
        self.classes_ = np.array(_sorted_classes(set(classes)), dtype=object)
        self._class_set = set(self.classes_.tolist())
        # Binary-only River classifiers compute int(y); other labels must be mapped to bool.
        self.binary_only = task == "classification" and not getattr(learner, "_multiclass", True)
        self.n_updates = 0
        self.last_label_seq: int | None = None

    def __repr__(self) -> str:
        return f"RiverModel({self.learner}, n_updates={self.n_updates})"

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"

    # --- prediction -------------------------------------------------------------------
    def predict(self, X: pd.DataFrame) -> np.ndarray:
        rows = to_rows(X, self.feature_types)
        if not self.is_classifier:
            return np.array([self._regress(x) for x in rows], dtype=float)
        return self._labels_of(self._proba_matrix([self._proba_one(x) for x in rows]))

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[Any], np.ndarray | None]:
        """Predictions of stored feature dicts, without a DataFrame: (values, class probabilities or None).
        A classifier that has learned nothing yet predicts None."""
        rows = [record_row(r, self.feature_types) for r in records]
        if not self.is_classifier:
            return [self._regress(x) for x in rows], None
        matrix = self._proba_matrix([self._proba_one(x) for x in rows])
        return [_plain(v) for v in self._labels_of(matrix).tolist()], matrix

    def learn_records(self, records: Sequence[Mapping[str, Any]], targets: Sequence[Any],
                      label_seqs: Sequence[int] | None = None) -> int:
        """Learn stored feature dicts with their labels, in order (one pass); returns the rows learned."""
        for record, target in zip(records, targets, strict=True):
            self._learn_one(record_row(record, self.feature_types), target)
        self._advance(pd.Series(list(label_seqs)) if label_seqs else None, len(records))
        return len(records)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if not self.is_classifier:
            raise TrainerError("predict_proba is only defined for classification models.")
        rows = to_rows(X, self.feature_types)
        return self._proba_matrix([self._proba_one(x) for x in rows])

    def _proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        proba = self.learner.predict_proba_one(x)
        if not self.binary_only or len(self.classes_) != 2:
            return proba
        negative, positive = self.classes_
        return {negative: proba.get(False, 0.0), positive: proba.get(True, 0.0)}

    def _regress(self, x: dict[str, Any]) -> float:
        value = self.learner.predict_one(x)
        return float("nan") if value is None else float(value)

    def _proba_matrix(self, probas: list[dict[Any, float]]) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes_)}
        matrix = np.zeros((len(probas), len(index)))
        for row, proba in enumerate(probas):
            for label, p in proba.items():
                column = index.get(label)
                if column is not None:
                    matrix[row, column] = p
        return matrix

    def _labels_of(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[1] == 0:
            return np.full(matrix.shape[0], None, dtype=object)
        labels = self.classes_[matrix.argmax(axis=1)]
        # An untrained learner gives no probabilities at all: predict nothing rather than class 0.
        labels[matrix.sum(axis=1) == 0] = None
        return _tighten(labels)

    # --- learning ---------------------------------------------------------------------
    def learn(self, X: pd.DataFrame, y: pd.Series, label_seqs: pd.Series | None = None) -> int:
        """Learn the rows in order (one pass); returns the number of rows learned."""
        rows = to_rows(X, self.feature_types)
        for x, target in zip(rows, y.tolist()):
            self._learn_one(x, target)
        self._advance(label_seqs, len(rows))
        return len(rows)

    def test_then_train(
        self, X: pd.DataFrame, y: pd.Series, label_seqs: pd.Series | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prequential pass: predict each row before learning it.

        Returns (predictions, probabilities); probabilities has one column per class in
        `classes_` as of the end of the pass (zero-filled for classes met later).
        """
        rows = to_rows(X, self.feature_types)
        targets = y.tolist()
        if not self.is_classifier:
            predictions = []
            for x, target in zip(rows, targets):
                predictions.append(self._regress(x))
                self._learn_one(x, target)
            self._advance(label_seqs, len(rows))
            return np.array(predictions, dtype=float), np.zeros((len(rows), 0))
        probas = []
        for x, target in zip(rows, targets):
            probas.append(self._proba_one(x))
            self._learn_one(x, target)
        self._advance(label_seqs, len(rows))
        matrix = self._proba_matrix(probas)
        return self._labels_of(matrix), matrix

    def _learn_one(self, x: dict[str, Any], target: Any) -> None:
        if self.is_classifier and target not in self._class_set:
            self._add_class(target)
        if self.binary_only:
            target = target == self.classes_[1]
        self.learner.learn_one(x, target)

    def unlearnable_classes(self, labels: pd.Series) -> list[Any]:
        """Labels this learner could not learn: new classes for a binary-only learner that already has two."""
        if not (self.binary_only and len(self.classes_) == 2):
            return []
        return sorted({y for y in labels.tolist() if y not in self._class_set}, key=repr)

    def _add_class(self, target: Any) -> None:
        if self.binary_only:
            name = type(self.learner).__name__
            if len(self.classes_) == 2:
                raise TrainingDataError(
                    f"{name} is a binary River classifier fixed to classes "
                    f"{self.classes_.tolist()} and cannot learn class {target!r}. Use a "
                    "multiclass learner (e.g. river.tree.HoeffdingAdaptiveTreeClassifier) or "
                    "retrain with the new class listed in the policy."
                )
            raise TrainingDataError(
                f"{name} is a binary River classifier and needs both classes before it learns; "
                f"it knows {self.classes_.tolist()}. List the two classes in the policy."
            )
        self._class_set.add(target)
        self.classes_ = np.array(_sorted_classes(self._class_set), dtype=object)

    def _advance(self, label_seqs: pd.Series | None, n: int) -> None:
        self.n_updates += n
        if label_seqs is not None and len(label_seqs):
            self.last_label_seq = int(label_seqs.iloc[-1])

    # --- persistence ------------------------------------------------------------------
    def dumps(self) -> bytes:
        """Pickle the learner with its counters; only `loads` bytes you stored yourself."""
        return pickle.dumps(
            {
                "format": STATE_FORMAT,
                "river_version": river.__version__,
                "learner": self.learner,
                "feature_types": self.feature_types,
                "task": self.task,
                "classes": self.classes_.tolist(),
                "n_updates": self.n_updates,
                "last_label_seq": self.last_label_seq,
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    @classmethod
    def loads(cls, data: bytes) -> RiverModel:
        state = pickle.loads(data)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise TrainerError(
                f"these bytes are not a driftpilot River model state (expected format "
                f"{STATE_FORMAT!r}); pass the bytes produced by RiverModel.dumps()."
            )
        model = cls(state["learner"], state["feature_types"], state["task"], state["classes"])
        model.n_updates = state["n_updates"]
        model.last_label_seq = state["last_label_seq"]
        return model


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _tighten(labels: np.ndarray) -> np.ndarray:
    """Give an object array of labels its natural dtype (bool, int, str) when it has no None."""
    if any(label is None for label in labels):
        return labels
    return np.array(labels.tolist())
