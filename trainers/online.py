"""Online learners: models that predict feature dicts and keep learning labels one batch at a time.

The race (``controller.race``) lets online learners predict every new row *before* any of those rows' labels is
learned, then learn each label once it has matured (test-then-train on natural labels). Two kinds qualify:

* a River model (:class:`~trainers.river_adapter.RiverModel`): learns row by row, in label-seq order, so its state
  depends only on the sequence of labels it saw, not on how they were batched;
* a scikit-learn pipeline whose final step has ``partial_fit`` (SGD*, PassiveAggressive*, Perceptron, *NB, MLP with
  ``sgd``/``adam``): the first batch that holds every class (two rows for regression) fits it, which also freezes the
  schema-derived preprocessing (imputer, one-hot); every later batch continues the final step with ``partial_fit``.

Both take rows as the feature dicts the store keeps (``PredictionRecord.features``), so a tick of a few rows costs no
DataFrame. ``dumps``/``loads`` round-trip the learned state exactly (a restarted daemon resumes where it stopped).

>>> from trainers.estimator_spec import EstimatorSpec
>>> spec = EstimatorSpec.model_validate({"class": "river.dummy.NoChangeClassifier"})
>>> learner = online_learner(spec, {"x": "numeric"}, "classification", classes=[0, 1])
>>> learner.predict_records([{"x": 1.0}]).values     # nothing learned yet: no prediction
[None]
>>> learner.learn_records([{"x": 1.0}, {"x": 2.0}], [0, 1])
2
>>> learner.predict_records([{"x": 3.0}]).values     # the newest label
[1]
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sklearn.pipeline import Pipeline

from trainers.errors import IncompatibleEstimatorError, TrainerError
from trainers.estimator_spec import EstimatorSpec
from trainers.river_adapter import RiverModel
from trainers.sklearn_adapter import final_estimator

ONLINE_FORMAT = "driftpilot.online_learner/1"


@dataclass(frozen=True)
class RowPredictions:
    """Predictions of a batch of rows: labels (or numbers) and, for classifiers that have them, class probabilities
    (one row per prediction, columns in ``classes`` order). ``None`` marks a row the learner cannot predict yet."""

    values: list[Any]
    proba: np.ndarray | None = None


class OnlineLearner(Protocol):
    """What the race needs of a learner: predict dict rows, learn dict rows with their labels, persist."""

    n_updates: int

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> RowPredictions: ...

    def learn_records(self, records: Sequence[Mapping[str, Any]], targets: Sequence[Any]) -> int: ...

    def dumps(self) -> bytes: ...


def online_learner(spec: EstimatorSpec, feature_types: Mapping[str, str], task: str, *,
                   classes: Sequence[Any] = (), seed: int | None = None) -> OnlineLearner:
    """A fresh online learner built from a policy estimator, or IncompatibleEstimatorError saying why it cannot
    learn online and what to pick instead."""
    model = spec.build(feature_types, task, seed=seed, classes=classes)
    return as_online(model, task, classes=classes, feature_types=feature_types, name=spec.describe())


def as_online(model: Any, task: str, *, classes: Sequence[Any] = (), feature_types: Mapping[str, str] | None = None,
              name: str | None = None) -> OnlineLearner:
    """``model`` (a fitted or unfitted driftpilot model) as an online learner that continues from its state."""
    if isinstance(model, RiverModel):
        return RiverLearner(model)
    if isinstance(model, Pipeline) and hasattr(final_estimator(model), "partial_fit"):
        return PartialFitLearner(model, task, classes, feature_types)
    label = name or type(model).__name__
    raise IncompatibleEstimatorError(
        f"{label} cannot learn online: a racer that learns needs a River model or a scikit-learn estimator with "
        "partial_fit (SGDClassifier, SGDRegressor, PassiveAggressive*, Perceptron, *NB, MLP with solver sgd/adam). "
        "Use one of those, or let the model race frozen as a registered version.")


def loads(data: bytes) -> OnlineLearner:
    """A learner from :meth:`OnlineLearner.dumps` bytes (only load bytes you stored yourself)."""
    state = pickle.loads(data)
    if not isinstance(state, dict) or state.get("format") != ONLINE_FORMAT:
        raise TrainerError(f"these bytes are not a driftpilot online learner (expected format {ONLINE_FORMAT!r})")
    if state["kind"] == "river":
        return RiverLearner(RiverModel.loads(state["model"]))
    learner = PartialFitLearner(state["model"], state["task"], state["classes"], state["feature_types"])
    learner.n_updates, learner.fitted = state["n_updates"], state["fitted"]
    return learner


class RiverLearner:
    """A :class:`RiverModel` learning row by row."""

    def __init__(self, model: RiverModel) -> None:
        self.model = model

    @property
    def n_updates(self) -> int:
        return self.model.n_updates

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> RowPredictions:
        values, proba = self.model.predict_records(records)
        return RowPredictions(values=values, proba=proba)

    def learn_records(self, records: Sequence[Mapping[str, Any]], targets: Sequence[Any]) -> int:
        return self.model.learn_records(records, targets)

    def dumps(self) -> bytes:
        return pickle.dumps({"format": ONLINE_FORMAT, "kind": "river", "model": self.model.dumps()},
                            protocol=pickle.HIGHEST_PROTOCOL)

    def served_model(self) -> RiverModel:
        """The model to register or serve (shares state with the learner: copy before it learns on)."""
        return self.model


class PartialFitLearner:
    """A scikit-learn pipeline continued with ``partial_fit`` on its final step (preprocessing frozen at the first
    fit). Rows of a batch are learned together: its state depends on how labels were batched, unlike River's."""

    def __init__(self, model: Pipeline, task: str, classes: Sequence[Any] = (),
                 feature_types: Mapping[str, str] | None = None) -> None:
        self.model = model
        self.task = task
        self.classes = list(classes)
        self.n_updates = 0
        self.fitted = hasattr(final_estimator(model), "n_features_in_")
        self._feature_types = dict(feature_types) if feature_types is not None else _feature_types(model)

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> RowPredictions:
        if not self.fitted:
            return RowPredictions(values=[None] * len(records))
        frame = self._frame(records)
        final = final_estimator(self.model)
        if self.task == "classification" and hasattr(final, "predict_proba") and self.classes:
            try:
                raw = np.asarray(self.model.predict_proba(frame), dtype=float)
            except AttributeError:  # e.g. SGDClassifier(loss="hinge") has the method but refuses it
                raw = None
            if raw is not None:
                proba = np.zeros((len(records), len(self.classes)))
                for j, label in enumerate(final.classes_.tolist()):
                    if label in self.classes:
                        proba[:, self.classes.index(label)] = raw[:, j]
                own = np.asarray(final.classes_, dtype=object)
                return RowPredictions(values=[_plain(v) for v in own[raw.argmax(axis=1)]], proba=proba)
        return RowPredictions(values=[_plain(v) for v in self.model.predict(frame)])

    def learn_records(self, records: Sequence[Mapping[str, Any]], targets: Sequence[Any]) -> int:
        if not len(records):
            return 0
        frame, y = self._frame(records), np.asarray(list(targets), dtype=object if self.task == "classification"
                                                    else float)
        if self.task == "classification":
            y = np.asarray(y.tolist())
        if not self.fitted:
            if self.task == "classification" and len(set(y.tolist())) < max(2, len(self.classes)):
                return 0  # waits for a batch holding every class: the first fit fixes the preprocessing too
            if self.task == "regression" and len(y) < 2:
                return 0
            self.model.fit(frame, y)
            self.fitted = True
        else:
            Xt = self.model[:-1].transform(frame)
            final = final_estimator(self.model)
            known = set(np.asarray(final.classes_).tolist()) if hasattr(final, "classes_") else None
            if known is not None and not set(y.tolist()) <= known:
                keep = np.array([v in known for v in y.tolist()])
                Xt, y = Xt[keep], y[keep]
                if not len(y):
                    return 0
            final.partial_fit(Xt, y)
        self.n_updates += len(y)
        return len(y)

    def dumps(self) -> bytes:
        return pickle.dumps({"format": ONLINE_FORMAT, "kind": "sklearn", "model": self.model, "task": self.task,
                             "classes": self.classes, "n_updates": self.n_updates, "fitted": self.fitted,
                             "feature_types": self._feature_types},
                            protocol=pickle.HIGHEST_PROTOCOL)

    def served_model(self) -> Pipeline:
        return self.model

    def _frame(self, records: Sequence[Mapping[str, Any]]) -> Any:
        import pandas as pd

        columns: dict[str, Any] = {}
        for name, kind in self._feature_types.items():
            values = [row.get(name) for row in records]
            if kind == "numeric":
                columns[name] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
            else:
                columns[name] = np.array(values, dtype=object)
        return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))


def fork(learner: OnlineLearner) -> OnlineLearner:
    """An independent copy (the parent keeps learning on its own)."""
    return copy.deepcopy(learner)


def _feature_types(model: Pipeline) -> dict[str, str]:
    from trainers.sklearn_adapter import feature_types_of

    found = feature_types_of(model)
    if found is None:
        raise TrainerError("this scikit-learn model is not fitted and its features are unknown; pass feature_types")
    return {name: kind or "numeric" for name, kind in found.items()}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
