"""A backtest's numbers: ``summarize(result, stream, load=...)`` turns a
:class:`~controller.backtest.result.BacktestResult` into a JSON-safe dict (see :mod:`controller.backtest.report` for
what it holds); ``headline_metrics`` flattens the numbers worth logging to MLflow; ``registry_loader`` loads the
replay's versions back for the harmful-promotion check."""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from controller.backtest.costs import cost_summary
from controller.backtest.quality import (
    detection_delays,
    promotion_impacts,
    race_switch_impacts,
    race_switches,
    racer_keys,
)
from controller.backtest.quality import race_metric as race_metric_of
from controller.backtest.result import EVENT_TIME, LABEL_TIME, BacktestResult, ReplayStream
from monitors.metrics import HIGHER_IS_BETTER

SEGMENTS = 10
HORIZON = 500  # rows after a promotion on which the new and the replaced champion are compared
TRAINING_ACTIONS = ("retrain", "learn")


def registry_loader(loaded: Any, result: BacktestResult) -> Callable[[str], Any]:
    """Load versions (cached) from the backtest's own MLflow store in ``result.workdir``, never the policy's."""
    from controller.actions.model_registry import open_registry
    from controller.backtest.replay import policy_for_stream
    from controller.clock import ManualClock

    if result.workdir is None:
        raise ValueError("this backtest result has no workdir, so its versions cannot be loaded")
    policy = policy_for_stream(loaded, result.spec, Path(result.workdir)).config
    end = result.served["event_time"].max() if len(result.served) else pd.Timestamp("2026-01-01", tz="UTC")
    registry = open_registry(policy, ManualClock(pd.Timestamp(end).to_pydatetime()))
    cache: dict[str, Any] = {}

    def load(version: str) -> Any:
        if version not in cache:
            cache[version] = registry.load(policy.registered_model, version=version).model
        return cache[version]

    return load


# ---------------------------------------------------------------------------------------------------------- summary


def summarize(result: BacktestResult, stream: ReplayStream, *, load: Callable[[str], Any] | None = None,
              segments: int = SEGMENTS, horizon: int = HORIZON, race_metric: str | None = None,
              costs: Any = None) -> dict[str, Any]:
    """The backtest's numbers (see the module docstring). Without ``load`` harmful promotions are not checked.
    ``race_metric``: the race's per-row metric (the policy's ``race.metric_for``); default: as the race's switch
    decisions name it, else accuracy / mae. ``costs``: the policy's ``costs:`` section, for the total cost at its
    prices (the benchmark's three ratios are always shown)."""
    spec = result.spec
    served = result.served
    higher = result.metric in HIGHER_IS_BETTER
    trainings = [d for d in result.decisions if d["action"] in TRAINING_ACTIONS]
    judged = [d for d in trainings if d["status"] == "done"]
    held = [d for d in trainings if was_held(d)]
    rollbacks = [d for d in result.decisions if d["action"] == "rollback" and d["status"] == "done"]
    delays = _label_delay(stream)
    summary: dict[str, Any] = {
        "policy": result.policy_name,
        "stream": {"name": spec.name, "description": spec.description, "task": spec.task, "rows": stream.rows,
                   "bootstrap_rows": result.bootstrap_rows, "served_rows": len(served),
                   "change_points": list(spec.change_points), "label_delay": delays},
        "metric": {"name": result.metric, "higher_is_better": higher, "value": number(result.value)},
        "segments": _segments(result, segments),
        "retrains": {
            "total": len(trainings),
            "by_strategy": dict(Counter(d["strategy"] or "-" for d in trainings)),
            "by_trigger": dict(Counter(d["trigger"] for d in trainings)),
            "by_strategy_and_trigger": [
                {"strategy": s, "trigger": t, "count": n}
                for (s, t), n in sorted(Counter((d["strategy"] or "-", d["trigger"]) for d in trainings).items())],
            "failed": sum(d["status"] == "failed" for d in trainings),
        },
        "promotions": sum(d["verdict"] == "promote" for d in judged),
        "rejected": sum(d["verdict"] == "reject" for d in judged),
        "held": len(held),
        "held_then": dict(Counter(_held_outcome(d) for d in held)),
        "rollbacks": len(rollbacks),
        "skipped": sum(d["status"] == "skipped" for d in result.decisions),
        "champions": {"first": _first(served), "final": _final(served),
                      "served_rows": {str(v): int(n) for v, n in served["version"].value_counts(sort=False).items()}
                      if len(served) else {}},
        "detections": _detections(result, trainings),
        "harmful_promotions": _harm(result, stream, load, horizon),
        "race": _race(result, horizon, race_metric),
        "compute": {"ticks": result.ticks, "wall_seconds": round(result.wall_seconds, 3),
                    "controller_seconds": round(result.controller_seconds, 3),
                    "controller_seconds_per_tick": round(result.controller_seconds / result.ticks, 4)
                    if result.ticks else None},
        "costs": cost_summary(result, costs),
        "decisions": [_decision_row(d) for d in result.decisions],
    }
    return summary


def was_held(decision: dict[str, Any]) -> bool:
    """The gate said hold at least once: it still does, or it gave its verdict on a later tick than the training."""
    return decision["verdict"] == "hold" or decision.get("verdict_position", decision["position"]) > decision[
        "position"]


def _held_outcome(decision: dict[str, Any]) -> str:
    if decision["status"] in ("held", "training", "promoting") or decision["verdict"] == "hold":
        return "still held at the end"
    return {"promote": "promoted", "reject": "rejected"}.get(decision["verdict"] or "", decision["status"])


def _label_delay(stream: ReplayStream) -> dict[str, float | None]:
    seconds = (stream.frame[LABEL_TIME] - stream.frame[EVENT_TIME]).dt.total_seconds()
    if seconds.empty:
        return {"median_seconds": None, "max_seconds": None}
    return {"median_seconds": float(seconds.median()), "max_seconds": float(seconds.max())}


def _segments(result: BacktestResult, parts: int) -> list[dict[str, Any]]:
    served = result.served
    if served.empty:
        return []
    positions = served["position"].to_numpy()
    first, last = int(positions[0]), int(positions[-1])
    edges = np.unique(np.linspace(first, last + 1, parts + 1).round().astype(int))
    rows = []
    for start, stop in itertools.pairwise(edges):
        part = served[(served["position"] >= start) & (served["position"] < stop)]
        events = []
        for d in result.decisions:
            at = d.get("verdict_position", d["position"])
            if start <= at < stop and d["status"] != "skipped":
                events.append(_event_label(d))
        rows.append({
            "start": int(start), "end": int(stop - 1), "rows": len(part),
            "value": number(part["score"].mean()) if len(part) else None,
            "versions": [str(v) for v in dict.fromkeys(part["version"])],
            "change_points": [p for p in result.spec.change_points if start <= p < stop],
            "events": events,
        })
    return rows


def _event_label(d: dict[str, Any]) -> str:
    race = _race_evidence(d)
    if d.get("trigger") == "race" and race:
        return f"race: {race.get('champion')} → {race.get('challenger')} (v{d['challenger_version']})"
    if d["action"] == "checkpoint":
        return f"checkpoint v{d['challenger_version']}"
    if d["verdict"] == "race" and race.get("entered"):
        return f"v{', v'.join(race['entered'])} joined the race"
    if d["action"] == "rollback":
        return f"rollback v{d['champion_version']} → v{d['challenger_version']}"
    if d["status"] == "failed":
        return f"{d['action']} failed"
    verdict = d["verdict"] or d["status"]
    return f"{verdict} v{d['challenger_version']}" if d.get("challenger_version") else verdict


def _detections(result: BacktestResult, trainings: list[dict[str, Any]]) -> dict[str, Any]:
    points = list(result.spec.change_points)
    per_point = []
    for i, found in enumerate(detection_delays(result)):
        end = points[i + 1] if i + 1 < len(points) else math.inf
        reaction = next((d for d in trainings if found.change_point <= d["position"] < end), None)
        per_point.append({
            "change_point": found.change_point, "detected_at": found.detected_at, "delay": found.delay,
            "first_retrain_at": reaction["position"] if reaction else None,
            "retrain_delay": reaction["position"] - found.change_point if reaction else None,
            "retrain_trigger": reaction["trigger"] if reaction else None,
        })
    early = [p for p in result.detections if points and p < points[0]]
    return {"concept_drift_at": list(result.detections), "per_change_point": per_point,
            "before_first_change_point": len(early)}


def _harm(result: BacktestResult, stream: ReplayStream, load: Callable[[str], Any] | None,
          horizon: int) -> dict[str, Any]:
    if load is None:
        return {"checked": False, "count": None, "horizon": horizon, "promotions": []}
    # The race's switches and checkpoints are judged by _race on what served; a registered snapshot of an online
    # racer, frozen and scored now, is not what served after it.
    outside_race = dataclasses.replace(result, decisions=[d for d in result.decisions if d.get("trigger") != "race"])
    impacts = promotion_impacts(outside_race, stream, load, horizon=horizon)
    promoted_at = {d["decision_id"]: d.get("verdict_position", d["position"]) for d in result.decisions}
    return {"checked": True, "count": sum(i.harmful for i in impacts), "horizon": horizon, "promotions": [
        {"decision_id": i.decision_id, "position": promoted_at.get(i.decision_id, i.position),
         "new_version": i.new_version,
         "old_version": i.old_version, "rows": i.rows, "new_score": number(i.new_score),
         "old_score": number(i.old_score), "harmful": i.harmful} for i in impacts]}


def _race(result: BacktestResult, horizon: int, metric: str | None) -> dict[str, Any] | None:
    """Racers (mean score, rows predicted and served, promotions) and switches (evidence, impact); None without a
    race."""
    if result.race is None:
        return None
    metric = metric or race_metric_of(result)
    higher = metric in HIGHER_IS_BETTER
    log = result.race.sort_values("position")
    served = result.served
    served_by = (served["racer"].astype(str).value_counts() if "racer" in served and len(served)
                 else pd.Series(dtype=int))
    switches = race_switches(result)
    promoted = Counter(_race_evidence(d).get("challenger") for d in switches)
    keys = racer_keys(result)
    keys += [k for k in served_by.index if k not in keys]  # served but never scored (e.g. before the race started)
    racers = []
    for key in keys:
        scores = log[key] if key in log.columns else pd.Series(dtype=float)
        predicted = scores.notna().to_numpy()
        positions = log["position"].to_numpy()[predicted] if len(scores) else np.array([], dtype=int)
        mean = number(scores.mean()) if predicted.any() else None
        racers.append({"racer": key, "rows": int(predicted.sum()), "mean": mean,
                       "value": metric_value(metric, mean),
                       "first_row": int(positions.min()) if len(positions) else None,
                       "last_row": int(positions.max()) if len(positions) else None,
                       "served_rows": int(served_by.get(key, 0)), "promoted": int(promoted.get(key, 0))})
    impacts = {i.decision_id: i for i in race_switch_impacts(result, horizon=horizon)}
    rows = []
    for d in switches:
        race = _race_evidence(d)
        impact = impacts.get(d["decision_id"])
        judged = impact is not None and impact.rows > 0
        new, old = (number(impact.new_score), number(impact.old_score)) if judged else (None, None)
        # Worse in the race's own direction (race_switch_impacts assumes accuracy / mae from the task).
        harmful = judged and new is not None and old is not None and (new < old if higher else new > old)
        rows.append({"decision_id": d["decision_id"], "position": d["position"], "action": d["action"],
                     "from": race.get("champion"), "to": race.get("challenger"),
                     "from_version": d.get("champion_version"), "to_version": d.get("challenger_version"),
                     "evidence": number(race.get("evidence")), "threshold": number(race.get("threshold")),
                     "paired_rows": race.get("rows"),
                     # The duel's means of per-row scores on its paired rows, as the metric (rmse: the root).
                     "from_metric": metric_value(metric, number(race.get("champion_metric"))),
                     "to_metric": metric_value(metric, number(race.get("challenger_metric"))),
                     "re_promoted": bool(race.get("re_promoted")),
                     "impact": {"rows": impact.rows if impact else 0, "new_score": new, "old_score": old,
                                "harmful": harmful}})
    return {"metric": metric, "higher_is_better": higher, "racers": racers, "switches": rows,
            "harmful": {"count": sum(r["impact"]["harmful"] for r in rows),
                        "judged": sum(r["impact"]["rows"] > 0 for r in rows), "horizon": horizon},
            "checkpoints": sum(d["action"] == "checkpoint" and d["status"] == "done" and d.get("trigger") == "race"
                               for d in result.decisions)}


def _race_evidence(d: dict[str, Any]) -> dict[str, Any]:
    return (d.get("evidence") or {}).get("race") or {}


def metric_value(metric: str, mean: float | None) -> float | None:
    """The metric from the mean per-row score: rmse's rows are squared errors."""
    if mean is None:
        return None
    return math.sqrt(mean) if metric == "rmse" else mean


def _decision_row(d: dict[str, Any]) -> dict[str, Any]:
    """The decision's headline and the gate's (or probation's) numbers, without the full evidence."""
    evidence = d.get("evidence") or {}
    row = {k: d.get(k) for k in ("decision_id", "position", "verdict_position", "trigger", "rule", "action",
                                 "strategy", "status", "verdict", "champion_version", "challenger_version",
                                 "error")}
    row["candidates"] = evidence.get("candidates")
    gate = evidence.get("gate") or {}
    verdict = (gate.get("verdicts") or {}).get(str(d.get("challenger_version")))
    if verdict:
        row["gate"] = {k: verdict.get(k) for k in ("metric", "rows", "champion_value", "challenger_value", "delta",
                                                   "p_value", "reason")}
    probation = evidence.get("probation")
    if d["action"] == "rollback" and probation:
        row["probation"] = {k: probation.get(k) for k in ("metric", "new_champion", "previous", "rows", "max_drop")}
    race = evidence.get("race") or {}
    if d.get("trigger") == "race" and race:
        row["race"] = {k: race.get(k) for k in ("challenger", "champion", "evidence", "threshold", "rows",
                                                "challenger_metric", "champion_metric", "metric", "re_promoted")}
    elif race:  # a retrain's challengers entering the race (or refused by their holdout)
        row["race"] = {"entered": list(race.get("entered") or []), "refused": dict(race.get("refused") or {})}
    if d.get("action") == "checkpoint":
        row["checkpoint"] = {"racer": evidence.get("racer"), "learned": evidence.get("learned")}
    return row


def _first(served: pd.DataFrame) -> str | None:
    return str(served["version"].iloc[0]) if len(served) else None


def _final(served: pd.DataFrame) -> str | None:
    return str(served["version"].iloc[-1]) if len(served) else None


def number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None



def headline_metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    """The numbers worth logging to MLflow (flat, numeric)."""
    harm = summary["harmful_promotions"]
    delays = [p["delay"] for p in summary["detections"]["per_change_point"] if p["delay"] is not None]
    race = summary.get("race")
    raced = {} if race is None else {"race_switches": len(race["switches"]),
                                     "harmful_race_switches": race["harmful"]["count"],
                                     "race_checkpoints": race["checkpoints"]}
    return {
        f"prequential_{summary['metric']['name']}": summary["metric"]["value"],
        "retrains": summary["retrains"]["total"], "promotions": summary["promotions"],
        "rejected": summary["rejected"], "held": summary["held"], "rollbacks": summary["rollbacks"],
        "harmful_promotions": harm["count"] if harm["checked"] else None,
        "change_points_detected": len(delays) if summary["stream"]["change_points"] else None,
        "mean_detection_delay_rows": float(np.mean(delays)) if delays else None,
        "ticks": summary["compute"]["ticks"], "wall_seconds": summary["compute"]["wall_seconds"],
        "controller_seconds": summary["compute"]["controller_seconds"],
        **raced,
    }
