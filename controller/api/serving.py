"""Serve the champion: hold the loaded model, notice alias moves, swap atomically, predict frames.

A request takes one :class:`ServedModel` snapshot and uses it for all its rows, so a swap in the middle of a request can
neither fail it nor mix versions. The swap itself is a single reference assignment, done only after the new version
has loaded completely.

With a race (controller/race), the champion may be an online learner that keeps learning in service: the daemon
publishes its state to the store after each tick that changed it (``race.served``), and the holder serves that state
instead of the registered version it continues, with no new MLflow version per refresh (:class:`LiveState`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd

from controller.actions.training import plain
from controller.race.publish import SERVED_KEY, ServedState
from controller.store import EventStore, features_frame
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


class LiveState(Protocol):
    """Where the champion's state continued in service comes from (the race's online champion).

    ``written_at`` is asked on every refresh, so it must be cheap (no blob); ``read`` only when it changed.
    """

    def written_at(self) -> datetime | None: ...

    def read(self) -> ServedState: ...


class UnreadableState(Exception):
    """The published state's bytes cannot be loaded here (another format, a library this process lacks)."""


class NoLiveState:
    """A policy without a race: the champion is always served as registered."""

    def written_at(self) -> datetime | None:
        return None

    def read(self) -> ServedState:
        raise LookupError("a policy without a race publishes no served state")


class StoreLiveState:
    """The served state the daemon publishes to the event store (:class:`controller.race.publish.StorePublisher`)."""

    def __init__(self, store: EventStore, model: str) -> None:
        self.store = store
        self.model = model

    def written_at(self) -> datetime | None:
        return self.store.state_updated_at(self.model, SERVED_KEY)

    def read(self) -> ServedState:
        raw = self.store.get_state(self.model, SERVED_KEY)  # a store failure propagates: the next refresh retries
        if not raw:
            raise UnreadableState(f"the served state of {self.model!r} vanished from the store while being read")
        try:
            return ServedState.loads(raw)
        except Exception as exc:  # unpickling fails in many ways (a missing class, a library version)
            raise UnreadableState(f"the served state of {self.model!r} cannot be loaded: {type(exc).__name__}: "
                                  f"{exc}; this process serves the registered version (are the daemon and the API "
                                  "on the same driftpilot and River versions?)") from exc


@dataclass(frozen=True)
class ServedModel:
    """One snapshot of what serves: the registered ``version``, or that version continued by ``racer`` through
    label seq ``through_seq`` (a state published at ``written_at``). Predictions are logged under ``version``."""

    version: str
    model: Any
    predictor: Predictor
    racer: str | None = None
    through_seq: int | None = None
    written_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.racer is not None

    def describe(self, now: datetime) -> dict[str, Any]:
        """What serves, for health checks and metrics (``age_s``: seconds since the live state was written)."""
        age = (now - self.written_at).total_seconds() if self.written_at is not None else None
        return {"version": self.version, "racer": self.racer, "through_seq": self.through_seq, "age_s": age}


class ChampionHolder:
    """The champion of one registered model, reloaded when the ``champion`` alias moves, and hot-swapped to the
    live state of that version whenever the daemon publishes a newer one (see :class:`LiveState`)."""

    def __init__(self, name: str, source: ChampionSource, feature_types: Mapping[str, str],
                 live: LiveState | None = None) -> None:
        self.name = name
        self.source = source
        self.feature_types = feature_types
        self.live = live or NoLiveState()
        self._served: ServedModel | None = None
        self._state: ServedState | None = None        # the newest published state read (of any version)
        self._state_at: datetime | None = None        # when it was written, as the store says
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

    @property
    def served(self) -> ServedModel | None:
        """The snapshot being served, or None before the first champion loaded."""
        return self._served

    def refresh(self) -> bool:
        """Load the champion if the alias moved, or its newer live state; return True when something was swapped
        in."""
        with self._lock:
            version = self.source.champion_version(self.name)
            if version is None:
                return False
            self._read_live_state()
            current, state = self._served, self._state
            if state is not None and state.version == version:
                if current is not None and current.live and current.written_at == self._state_at:
                    return False
                served = ServedModel(version=version, model=state.model,
                                     predictor=predictor_for(state.model, self.feature_types),
                                     racer=state.racer, through_seq=state.through_seq, written_at=self._state_at)
            elif current is not None and current.version == version:
                # Also when it serves a live state of this version while the newest state names another one: the
                # daemon moves the alias before it publishes the new version's state, and a refresh between the two
                # must not go back to the older registered learner.
                return False
            else:
                model = self.source.load_version(self.name, version)
                served = ServedModel(version=version, model=model, predictor=predictor_for(model, self.feature_types))
            self._served = served  # built (and compiled, checked) before the swap
        self._log_swap(current, served)
        return True

    def _read_live_state(self) -> None:
        """Read the published state's bytes only when its write time changed (one small read otherwise)."""
        stamp = self.live.written_at()
        # Any change, not only a later time: a daemon that took the model over may run on a slower clock.
        if stamp is None or stamp == self._state_at:
            return
        # The stamp read before the bytes: a publish in between is read again on the next refresh, never missed.
        self._state_at = stamp
        try:
            self._state = self.live.read()
        except UnreadableState as exc:
            self._state = None  # the stamp is kept, so broken bytes are not read again every refresh
            log.warning("%s", exc)

    def _log_swap(self, before: ServedModel | None, after: ServedModel) -> None:
        what = (f"version {after.version} continued by {after.racer} through label seq {after.through_seq}"
                if after.live else f"version {after.version}")
        if before is not None and before.version == after.version and before.racer == after.racer:
            log.debug("champion of %s is now %s", self.name, what)  # the same learner, one tick on
            return
        was = "nothing" if before is None else (f"version {before.version}" + (f" continued by {before.racer}"
                                                                            if before.live else ""))
        log.info("champion of %s is now %s (was %s), served by %s", self.name, what, was,
                 type(after.predictor).__name__)


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
    # A regressor can have both names (a River regression model wraps them and refuses predict_proba): classes decide.
    if hasattr(model, "predict_proba") and len(getattr(model, "classes_", ())) > 0:
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
