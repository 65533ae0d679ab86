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
from controller.backtest.result import EVENT_TIME, LABEL_TIME, BacktestResult, ReplayStream, StreamSpec
from controller.clock import ManualClock
from controller.config import LoadedPolicy, PolicyConfig
from controller.errors import DriftpilotError
from controller.loop.controller import Controller
from controller.loop.scoring import predict
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.control import DecisionLog


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


def replay(loaded: LoadedPolicy, stream: ReplayStream, workdir: Path, *, bootstrap_rows: int, tick_every: int,
           progress: Callable[[int], None] = lambda _rows: None, name: str | None = None) -> BacktestResult:
    """Replay ``stream`` under ``loaded`` (whose schema is replaced by the stream's); see the module docstring."""
    frame = stream.frame.reset_index(drop=True)
    spec = stream.spec
    if not 10 <= bootstrap_rows < len(frame):
        raise BacktestError(f"bootstrap_rows must be at least 10 and less than the stream's {len(frame)} rows, "
                            f"got {bootstrap_rows}")
    if tick_every < 1:
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

    controller = Controller(loaded, store, registry, clock)
    name_ = policy.registered_model
    classes = tuple(policy.target.classes or ())
    version = registry.champion_version(name_)
    model = registry.load(name_, version=version).model
    # Labels in arrival order: a pointer walks them as the clock passes their arrival times.
    label_order = np.argsort(frame[LABEL_TIME].to_numpy(), kind="stable")
    label_order = label_order[label_order >= bootstrap_rows]
    next_label = 0
    served: list[pd.DataFrame] = []
    ticks, tick_seconds, detections = 0, 0.0, []
    started = time.perf_counter()
    for start in range(bootstrap_rows, len(frame), tick_every):
        chunk = frame.iloc[start:start + tick_every]
        predicted, proba = predict(model, chunk[features], spec.task, classes)
        now = chunk[EVENT_TIME].iloc[-1].to_pydatetime()
        clock.set(max(now, clock.now()))
        store.add_predictions(policy.model, [
            PredictionRecord(features=_plain(row), event_time=row_time.to_pydatetime(), prediction=_plain(p),
                             scores=_scores(proba, i, classes), prediction_id=f"bt-{position}",
                             model_version=version, source="served")
            for i, (position, row, row_time, p) in enumerate(zip(
                chunk.index, chunk[features].to_dict(orient="records"), chunk[EVENT_TIME], predicted, strict=True))])
        served.append(pd.DataFrame({"position": chunk.index, "event_time": chunk[EVENT_TIME].to_numpy(),
                                    "label": chunk[spec.target].to_numpy(), "prediction": predicted,
                                    "version": version}))
        arrived = []
        while next_label < len(label_order) and frame[LABEL_TIME].iloc[label_order[next_label]] <= chunk[
                EVENT_TIME].iloc[-1]:
            position = int(label_order[next_label])
            if position < start + len(chunk):  # only rows already predicted
                arrived.append(LabelRecord(f"bt-{position}", _plain(frame[spec.target].iloc[position])))
                next_label += 1
            else:
                break
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
            detections.append(int(chunk.index[-1]))
        current = registry.champion_version(name_)
        if current != version:
            version, model = current, registry.load(name_, version=current).model
        progress(len(chunk))

    served_frame = pd.concat(served, ignore_index=True) if served else pd.DataFrame()
    if spec.task == "classification":
        served_frame["score"] = (served_frame["prediction"] == served_frame["label"]).astype(float)
        metric = "accuracy"
    else:
        served_frame["score"] = (served_frame["prediction"].astype(float) - served_frame["label"].astype(float)).abs()
        metric = "mae"
    decisions = [d.to_dict() for d in reversed(DecisionLog(store, clock).list(policy.model, limit=None))]
    for decision in decisions:
        decision["position"] = _position_at(frame, decision["created_at"])
        # A held challenger is judged on later ticks: its verdict (and a promotion) comes at the gate's last as_of.
        judged = (decision.get("evidence") or {}).get("gate", {}).get("as_of")
        decision["verdict_position"] = _position_at(frame, judged) if judged else decision["position"]
    result = BacktestResult(spec=spec, policy_name=name or str(loaded.path), bootstrap_rows=bootstrap_rows,
                            served=served_frame, decisions=decisions, ticks=ticks,
                            wall_seconds=time.perf_counter() - started, controller_seconds=tick_seconds,
                            metric=metric, detections=detections, workdir=str(workdir))
    store.dispose()
    return result


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
