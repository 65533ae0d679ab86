"""Score registered versions on the same matured rows, for the gate, probation and the race's entry filter."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from controller.loop.gate_values import PairedSample
from controller.store import EventStore, LabeledWindow
from lineage import LoadedModel


class ModelCache:
    """The last few loaded versions (champion, challengers, previous): a tick never reloads them from MLflow."""

    def __init__(self, load: Callable[[str], LoadedModel], size: int = 6) -> None:
        self._load = load
        self._size = size
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()

    def get(self, version: str) -> LoadedModel:
        version = str(version)
        if version in self._models:
            self._models.move_to_end(version)
            return self._models[version]
        loaded = self._load(version)
        self._models[version] = loaded
        while len(self._models) > self._size:
            self._models.popitem(last=False)
        return loaded


class MaturedRows:
    """One model's matured labeled rows as of a tick, and two of its versions scored on them (a :class:`PairedSample`).

    What the gate judges a challenger on, probation a new champion, the race's entry filter a retrained challenger.
    """

    def __init__(self, store: EventStore, model: str, models: ModelCache, task: str, classes: Sequence[Any],
                 feature_types: Mapping[str, str] | None) -> None:
        self.store = store
        self.model = model
        self.models = models
        self.task = task
        self.classes = tuple(classes)
        self.feature_types = feature_types

    def window(self, now: datetime, *, after_seq: int | None, max_rows: int | None = None) -> LabeledWindow:
        """The rows labeled by ``now`` after ``after_seq`` (the newest ``max_rows`` of them)."""
        return self.store.labeled_window(self.model, now, after_seq=after_seq, max_rows=max_rows,
                                         feature_types=self.feature_types)

    def newest_seq(self, now: datetime, cursor: int | None) -> int | None:
        """The newest labeled row's seq as of ``now`` (the loop's ``cursor`` may not have read it yet)."""
        return self.store.labeled_count(self.model, now, after_seq=cursor)[1] or cursor

    def loaded(self, version: str) -> Any:
        """The model of ``version`` (from the cache: a tick never reloads it from MLflow)."""
        return self.models.get(version).model

    def sample(self, rows: LabeledWindow, champion: Any, challenger: Any) -> PairedSample:
        """Both models (see :meth:`loaded`) scored on ``rows``."""
        return paired_sample(rows, champion, challenger, self.task, self.classes)


def predict(model: Any, features: pd.DataFrame, task: str, classes: Sequence[Any]) -> tuple[np.ndarray, Any]:
    """(predictions, class probabilities in ``classes`` order or None)."""
    if task == "regression":
        return np.asarray(model.predict(features), dtype=float), None
    if not hasattr(model, "predict_proba"):
        return np.asarray(model.predict(features), dtype=object), None
    raw = np.asarray(model.predict_proba(features), dtype=float)
    own = list(getattr(model, "classes_", []))
    if len(own) != raw.shape[1]:
        return np.asarray(model.predict(features), dtype=object), None
    proba = np.zeros((len(features), len(classes)))
    for j, label in enumerate(own):
        if label in classes:
            proba[:, list(classes).index(label)] = raw[:, j]
    labels = np.asarray(own, dtype=object)[raw.argmax(axis=1)] if len(own) else np.full(len(features), None)
    return labels, proba


def paired_sample(rows: LabeledWindow, champion: Any, challenger: Any, task: str,
                  classes: Sequence[Any]) -> PairedSample:
    """Both models scored on the same matured rows (their labels as of the window's cut)."""
    if rows.rows == 0:  # nothing matured yet (scikit-learn refuses to predict zero rows)
        empty = np.array([], dtype=float if task == "regression" else object)
        return PairedSample(labels=empty, champion=empty, challenger=empty, classes=tuple(classes),
                            fingerprint=rows.fingerprint)
    if task == "classification" and not classes:
        classes = sorted(set(rows.labels.tolist()), key=repr)
    champion_pred, champion_proba = predict(champion, rows.features, task, classes)
    challenger_pred, challenger_proba = predict(challenger, rows.features, task, classes)
    labels = rows.labels.to_numpy(dtype=float if task == "regression" else object)
    both = champion_proba is not None and challenger_proba is not None
    return PairedSample(labels=labels, champion=champion_pred, challenger=challenger_pred,
                        champion_proba=champion_proba if both else None,
                        challenger_proba=challenger_proba if both else None,
                        classes=tuple(classes), fingerprint=rows.fingerprint)
