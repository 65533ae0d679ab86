"""Replay a stream through the daemon's own code: ``Controller.tick(now)`` on a simulated clock.

The first ``bootstrap_rows`` rows train the first champion (``controller.actions.bootstrap``). Then, chunk by chunk
(``tick_every`` rows): the current champion predicts the chunk's rows (as ``/predict`` would), the predictions are
logged, the labels whose arrival time has passed are stored — stamped at that tick, so a decision never sees a label
from its future — and the controller ticks. Trainers, monitors, the gate, probation and the decision log are the real
ones; the event store and the MLflow store live in a throwaway folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from controller.actions.bootstrap import bootstrap
from controller.actions.model_registry import open_registry
from controller.api.serving import predictor_for
from controller.backtest.result import EVENT_TIME, LABEL_TIME, BacktestResult, ReplayStream, StreamSpec
from controller.clock import ManualClock
from controller.config import LoadedPolicy, PolicyConfig
from controller.errors import DriftpilotError
from controller.loop.controller import Controller
from controller.race.outcomes import decode
from controller.race.publish import InProcessPublisher
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.control import DecisionLog
from monitors.metrics import row_scores


class BacktestError(DriftpilotError):
    """A backtest cannot run; the message says why."""


def policy_for_stream(loaded: LoadedPolicy, spec: StreamSpec, workdir: Path) -> LoadedPolicy:
    """The policy with the stream's schema, and its store and MLflow store in ``workdir`` (never the real ones)."""
    if loaded.config.task != spec.task:
        raise BacktestError(f"{loaded.path}: a {loaded.config.task} policy cannot replay stream {spec.name!r}, which "
                            f"is a {spec.task} stream; pick a {loaded.config.task} stream or a {spec.task} policy")
    # None is kept: it can be a setting (`every_minutes: null` turns that threshold off), not only "unset".
    body = loaded.config.model_dump(mode="json", by_alias=True)
    same_schema = loaded.config.feature_types == spec.features and loaded.config.target.name == spec.target
    if not same_schema:
        body["features"] = dict(spec.features)
        body["target"] = {"name": spec.target, **({"classes": list(spec.classes)} if spec.classes else {})}
        body["task"] = spec.task
        body.get("monitors", {}).get("data_drift", {}).pop("per_feature", None)
    body["storage"] = {"url": f"sqlite:///{(workdir / 'events.db').resolve()}"}
    body["mlflow"] = {"tracking_uri": f"sqlite:///{(workdir / 'mlflow.db').resolve()}",
                      "artifact_location": str((workdir / "mlartifacts").resolve())}
    try:
        config = PolicyConfig.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors())
        raise BacktestError(f"{loaded.path}: the policy does not fit stream {spec.name!r} "
                            f"({spec.task}, features {list(spec.features)}): {problems}") from None
    return loaded._replace(config=config)


def replay(loaded: LoadedPolicy, stream: ReplayStream, workdir: Path, *, bootstrap_rows: int,
           tick_every: int | None = None,
           progress: Callable[[int], None] = lambda _rows: None, name: str | None = None) -> BacktestResult:
    """Replay ``stream`` under ``loaded`` (whose schema is replaced by the stream's); see the module docstring."""
    frame = stream.frame.reset_index(drop=True)
    spec = stream.spec
    if not 10 <= bootstrap_rows < len(frame):
        raise BacktestError(f"bootstrap_rows must be at least 10 and less than the stream's {len(frame)} rows, "
                            f"got {bootstrap_rows}")
    if tick_every is not None and tick_every < 1:
        raise BacktestError(f"tick_every must be at least 1 row, got {tick_every}")
    workdir.mkdir(parents=True, exist_ok=True)
    loaded = policy_for_stream(loaded, spec, workdir)
    policy = loaded.config
    features = list(spec.features)
    clock = ManualClock(frame[EVENT_TIME].iloc[0].to_pydatetime())
    store = EventStore.from_url(policy.storage.url, clock)
    registry = open_registry(policy, clock)

    boot = frame.iloc[:bootstrap_rows]
    clock.set(boot[LABEL_TIME].max().to_pydatetime())
    bootstrap(loaded, boot[features].reset_index(drop=True), boot[spec.target].reset_index(drop=True),
              store=store, registry=registry, clock=clock, event_times=boot[EVENT_TIME].reset_index(drop=True))
    progress(bootstrap_rows)

    publisher = InProcessPublisher()
    controller = Controller(loaded, store, registry, clock, publisher=publisher)
    name_ = policy.registered_model
    serving = _Serving(registry, name_, policy.feature_types, publisher, policy.model)
    # Labels in arrival order: a pointer walks them as the clock passes their arrival times.
    label_order = np.argsort(frame[LABEL_TIME].to_numpy(), kind="stable")
    label_order = label_order[label_order >= bootstrap_rows]
    label_times = frame[LABEL_TIME].to_numpy()
    next_label = 0
    served: list[pd.DataFrame] = []
    ticks, tick_seconds, detections = 0, 0.0, []
    started = time.perf_counter()
    records = [_plain(row) for row in frame[features].to_dict(orient="records")]
    targets = [_plain(v) for v in frame[spec.target].tolist()]
    for start, stop in _chunks(frame, bootstrap_rows, tick_every, policy.loop.tick):
        chunk = frame.iloc[start:stop]
        now = chunk[EVENT_TIME].iloc[0].to_pydatetime()
        clock.set(max(now, clock.now()))
        # First the labels that have arrived by now (of rows served already), then the tick, then the chunk is
        # served by the state after the tick: what an API process serves right after the tick published it.
        arrived = []
        while next_label < len(label_order) and label_times[label_order[next_label]] <= chunk[EVENT_TIME].iloc[0]:
            position = int(label_order[next_label])
            if position >= start:  # only rows already predicted
                break
            arrived.append(LabelRecord(f"bt-{position}", targets[position]))
            next_label += 1
        if arrived:
            store.add_labels(policy.model, arrived)
        t0 = time.perf_counter()
        report = controller.tick(clock.now())
        tick_seconds += time.perf_counter() - t0
        ticks += 1
        if report.error:
            raise BacktestError(f"tick at {clock.now().isoformat()} failed: {report.error}")
        concept = report.signals.get("concept_drift")
        if concept and concept.get("drift"):
            detections.append(int(start))
        version, racer, predictor = serving.current(controller.champion_version(recheck=False))
        rows = records[start:stop]
        predicted = predictor.predict_rows(rows)
        store.add_predictions(policy.model, [
            PredictionRecord(features=row, event_time=row_time.to_pydatetime(), prediction=_plain(p),
                             scores=score, prediction_id=f"bt-{position}", model_version=version, source="served")
            for position, row, row_time, p, score in zip(
                range(start, stop), rows, chunk[EVENT_TIME], predicted.values,
                predicted.scores or [None] * len(rows), strict=True)])
        served.append(pd.DataFrame({"position": np.arange(start, stop), "event_time": chunk[EVENT_TIME].to_numpy(),
                                    "label": chunk[spec.target].to_numpy(),
                                    "prediction": pd.Series(list(predicted.values), dtype=object).to_numpy(),
                                    "version": version, "racer": racer}))
        progress(len(chunk))
    race_frame = None

    served_frame = pd.concat(served, ignore_index=True) if served else pd.DataFrame()
    # The prequential metric of what served: accuracy, or MAE (per-row values from the one metrics module).
    metric = "accuracy" if spec.task == "classification" else "mae"
    served_frame["score"] = row_scores(metric, served_frame["label"], served_frame["prediction"],
                                       classes=tuple(policy.target.classes or ()))
    decisions = [d.to_dict() for d in reversed(DecisionLog(store, clock).list(policy.model, limit=None))]
    for decision in decisions:
        decision["position"] = _position_at(frame, decision["created_at"])
        # A held challenger is judged on later ticks: its verdict (and a promotion) comes at the gate's last as_of.
        judged = (decision.get("evidence") or {}).get("gate", {}).get("as_of")
        decision["verdict_position"] = _position_at(frame, judged) if judged else decision["position"]
    if controller.race is not None:
        controller.race.save(clock.now())  # the outcome log's last block
        race_frame = _race_outcomes(store, policy.model)
    result = BacktestResult(spec=spec, policy_name=name or str(loaded.path), bootstrap_rows=bootstrap_rows,
                            served=served_frame, decisions=decisions, ticks=ticks,
                            wall_seconds=time.perf_counter() - started, controller_seconds=tick_seconds,
                            metric=metric, detections=detections, workdir=str(workdir), race=race_frame)
    store.dispose()
    return result


class _Serving:
    """What an API process would serve after each tick: the online champion's published state when it continues
    the champion version, else the registered champion version (loaded once per version)."""

    def __init__(self, registry: Any, name: str, feature_types: dict[str, str], publisher: InProcessPublisher,
                 model: str) -> None:
        self.registry, self.name, self.feature_types = registry, name, feature_types
        self.publisher, self.model = publisher, model
        self._versions: dict[str, Any] = {}
        self._live: tuple[int, Any] | None = None

    def current(self, version: str | None) -> tuple[str, str, Any]:
        if version is None:
            raise BacktestError("the replay has no champion (the bootstrap did not promote one)")
        live = self.publisher.latest.get(self.model)
        if live is not None and live.version == version:
            # The live learner itself, read between ticks (the replay is single-threaded): no copy is needed.
            if self._live is None or self._live[0] != id(live.model):
                self._live = (id(live.model), predictor_for(live.model, self.feature_types))
            return version, live.racer, self._live[1]
        if version not in self._versions:
            model = self.registry.load(self.name, version=version).model
            self._versions[version] = predictor_for(model, self.feature_types)
        return version, f"v{version}", self._versions[version]


def _chunks(frame: pd.DataFrame, first: int, tick_every: int | None, tick: Any) -> list[tuple[int, int]]:
    """Row ranges served between two ticks: ``tick_every`` rows, or (None) the rows whose event times fall in the
    same ``loop.tick`` interval — a daemon ticking every minute ticks between rows that come a minute apart."""
    n = len(frame)
    if tick_every is not None:
        return [(s, min(s + tick_every, n)) for s in range(first, n, tick_every)]
    times = frame[EVENT_TIME].to_numpy().astype("datetime64[us]").astype(np.int64)
    step = max(int(tick.total_seconds() * 1_000_000), 1)
    buckets = (times[first:] - times[first]) // step
    edges = np.flatnonzero(np.diff(buckets)) + 1 + first
    bounds = [first, *edges.tolist(), n]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _race_outcomes(store: EventStore, model: str) -> pd.DataFrame:
    """Every racer's score on every row it predicted, with the stream position of each row."""
    frame = decode(store.race_outcome_blocks(model))
    if len(frame):
        frame.insert(0, "position", frame["prediction_id"].str.removeprefix("bt-").astype(int))
    return frame


def _position_at(frame: pd.DataFrame, when: str) -> int:
    """The last stream row whose event time is at or before ``when``."""
    stamp = pd.Timestamp(when)
    return int(frame[EVENT_TIME].searchsorted(stamp, side="right")) - 1


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _scores(proba: Any, row: int, classes: tuple) -> dict[str, float] | None:
    if proba is None or not classes:
        return None
    return {str(c): float(proba[row, j]) for j, c in enumerate(classes)}
