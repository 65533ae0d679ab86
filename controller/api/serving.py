"""Serve the champion: hold the loaded model, notice alias moves, swap atomically, predict frames.

A request takes one :class:`ServedModel` snapshot and uses it for all its rows, so a swap in the middle of a request can
neither fail it nor mix versions. The swap itself is a single reference assignment, done only after the new version
has loaded completely.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from controller.actions.training import plain
from controller.store import features_frame
from trainers import CompiledPipeline, compile_pipeline

log = logging.getLogger("driftpilot.serving")


class ChampionSource(Protocol):
    """Where the champion comes from (the MLflow registry in production; see ``lineage``)."""

    def champion_version(self, name: str) -> str | None: ...

    def load_version(self, name: str, version: str) -> Any: ...


class NoChampion(Exception):
    """No version holds the champion alias yet; bootstrap one first."""


@dataclass(frozen=True)
class Predictions:
    values: list[Any]
    scores: list[dict[str, float]] | None


class Predictor(Protocol):
    """Predicts rows given as feature dicts (already validated against the policy)."""

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> Predictions: ...


class FramePredictor:
    """Any model: rows -> typed DataFrame -> ``predict_frame``."""

    def __init__(self, model: Any, feature_types: Mapping[str, str]) -> None:
        self.model = model
        self.feature_types = feature_types

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> Predictions:
        return predict_frame(self.model, features_frame(list(rows), self.feature_types))


class CompiledPredictor:
    """A driftpilot scikit-learn pipeline compiled to numpy (``trainers.compile_pipeline``): same answers, about
    2 ms less per request, no DataFrame at all."""

    def __init__(self, compiled: CompiledPipeline) -> None:
        self.compiled = compiled

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> Predictions:
        if self.compiled.classes_ is None or not hasattr(self.compiled.final, "predict_proba"):
            return Predictions(values=[plain(v) for v in self.compiled.predict_rows(rows)], scores=None)
        return _from_proba(self.compiled.predict_proba_rows(rows), self.compiled.classes_)


def predictor_for(model: Any, feature_types: Mapping[str, str]) -> Predictor:
    """The compiled path when the model has a shape it supports (checked against the model), else the frame path."""
    compiled = compile_pipeline(model)
    return CompiledPredictor(compiled) if compiled is not None else FramePredictor(model, feature_types)


@dataclass(frozen=True)
class ServedModel:
    version: str
    model: Any
    predictor: Predictor


class ChampionHolder:
    """The champion of one registered model, reloaded when the ``champion`` alias moves."""

    def __init__(self, name: str, source: ChampionSource, feature_types: Mapping[str, str]) -> None:
        self.name = name
        self.source = source
        self.feature_types = feature_types
        self._served: ServedModel | None = None
        self._lock = threading.Lock()  # one load at a time; readers never take it

    @property
    def current(self) -> ServedModel:
        served = self._served
        if served is None:
            raise NoChampion(f"model {self.name!r} has no champion yet; run `driftpilot bootstrap` first")
        return served

    @property
    def serving_version(self) -> str | None:
        """The version being served, or None before the first champion loaded."""
        served = self._served
        return served.version if served is not None else None

    def refresh(self) -> bool:
        """Load the champion if the alias moved; return True when a new version was swapped in."""
        with self._lock:
            version = self.source.champion_version(self.name)
            if version is None or (self._served is not None and self._served.version == version):
                return False
            model = self.source.load_version(self.name, version)
            predictor = predictor_for(model, self.feature_types)  # compiled and checked before the swap
            previous = self._served.version if self._served else None
            self._served = ServedModel(version=version, model=model, predictor=predictor)
        log.info("champion of %s is now version %s (was %s), served by %s", self.name, version, previous,
                 type(predictor).__name__)
        return True


class ChampionWatcher:
    """A daemon thread that calls :meth:`ChampionHolder.refresh` every ``interval`` seconds until stopped.

    Tests call ``refresh()`` directly; this thread only exists so a live server notices alias moves.
    """

    def __init__(self, holders: Mapping[str, ChampionHolder], interval: float) -> None:
        self.holders = holders
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for holder in self.holders.values():
                try:
                    holder.refresh()
                except Exception:
                    log.exception("could not refresh the champion of %s; still serving the current one",
                                  holder.name)


def predict_frame(model: Any, features: pd.DataFrame) -> Predictions:
    """Predict every row of ``features`` with a scikit-learn estimator or a River model."""
    if hasattr(model, "predict_one") or hasattr(model, "learn_one"):
        return _predict_river(model, features)
    if hasattr(model, "predict_proba") and hasattr(model, "classes_"):
        # One pass through the pipeline: the class is the argmax of the probabilities (as in trainers.metrics), which
        # halves the cost of a request, since the preprocessing dominates it (docs/benchmarks-serve.md).
        return _from_proba(model.predict_proba(features), model.classes_)
    return Predictions(values=[plain(v) for v in model.predict(features)], scores=None)


def _from_proba(proba: Any, model_classes: Any) -> Predictions:
    proba = np.asarray(proba, dtype=float)
    classes = [plain(c) for c in model_classes]
    values = [classes[i] for i in proba.argmax(axis=1)]
    scores = [{str(c): float(p) for c, p in zip(classes, row, strict=True)} for row in proba]
    return Predictions(values=values, scores=scores)


def _predict_river(model: Any, features: pd.DataFrame) -> Predictions:
    rows = [{k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and np.isnan(v))}
            for row in features.to_dict(orient="records")]
    if hasattr(model, "predict_proba_one"):
        scores = [{str(plain(c)): float(p) for c, p in model.predict_proba_one(row).items()} for row in rows]
        values = [plain(model.predict_one(row)) for row in rows]
        return Predictions(values=values, scores=scores)
    return Predictions(values=[plain(model.predict_one(row)) for row in rows], scores=None)
