"""What a backtest shows a person: a summary of numbers, a Markdown page and a PNG plot.

``summarize(result, stream, load=...)`` turns a :class:`~controller.backtest.result.BacktestResult` into a JSON-safe
dict: the prequential metric overall and per segment of the served stream, retrains by strategy and trigger, gate
verdicts (promoted, rejected, held), rollbacks, detection delay per known change point, harmful promotions (each
promoted version against the one it replaced, on the rows served after the promotion; needs ``load``, a version
loader such as :func:`registry_loader`), ticks and compute seconds. ``markdown(summary)`` renders it;
``plot(result, path)`` draws the rolling metric over the stream with change points, decisions and the champion;
``write_report`` writes all three files (plus the decisions as JSON lines) into a folder.

With a race (the policy's ``race:`` section, ``result.race`` set) the summary's ``race`` adds each racer's mean
per-row score over the rows it predicted, the rows it predicted and served, the times the race promoted it, and the
race's switches with their evidence and their impact (the new racer vs the replaced one on the next ``horizon``
positions, from the outcome log); the page gets a racers table and a switches table, the plot a panel of each
racer's rolling metric and a strip of which racer served. The race's switches and checkpoints are judged there, as
they served, so the version-based harmful-promotion check leaves them out.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from controller.backtest.costs import cost_lines, cost_summary
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
MAX_DECISION_ROWS = 60  # decisions listed in the Markdown page; all of them are in decisions.jsonl
MAX_SWITCH_ROWS = 60    # race switches listed in the Markdown page


@dataclass(frozen=True)
class ReportFiles:
    summary: Path       # summary.md
    plot: Path          # metric.png
    decisions: Path     # decisions.jsonl


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
    held = [d for d in trainings if _was_held(d)]
    rollbacks = [d for d in result.decisions if d["action"] == "rollback" and d["status"] == "done"]
    delays = _label_delay(stream)
    summary: dict[str, Any] = {
        "policy": result.policy_name,
        "stream": {"name": spec.name, "description": spec.description, "task": spec.task, "rows": stream.rows,
                   "bootstrap_rows": result.bootstrap_rows, "served_rows": len(served),
                   "change_points": list(spec.change_points), "label_delay": delays},
        "metric": {"name": result.metric, "higher_is_better": higher, "value": _num(result.value)},
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


def _was_held(decision: dict[str, Any]) -> bool:
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
            "value": _num(part["score"].mean()) if len(part) else None,
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
         "old_version": i.old_version, "rows": i.rows, "new_score": _num(i.new_score),
         "old_score": _num(i.old_score), "harmful": i.harmful} for i in impacts]}


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
        mean = _num(scores.mean()) if predicted.any() else None
        racers.append({"racer": key, "rows": int(predicted.sum()), "mean": mean,
                       "value": _metric_value(metric, mean),
                       "first_row": int(positions.min()) if len(positions) else None,
                       "last_row": int(positions.max()) if len(positions) else None,
                       "served_rows": int(served_by.get(key, 0)), "promoted": int(promoted.get(key, 0))})
    impacts = {i.decision_id: i for i in race_switch_impacts(result, horizon=horizon)}
    rows = []
    for d in switches:
        race = _race_evidence(d)
        impact = impacts.get(d["decision_id"])
        judged = impact is not None and impact.rows > 0
        new, old = (_num(impact.new_score), _num(impact.old_score)) if judged else (None, None)
        # Worse in the race's own direction (race_switch_impacts assumes accuracy / mae from the task).
        harmful = judged and new is not None and old is not None and (new < old if higher else new > old)
        rows.append({"decision_id": d["decision_id"], "position": d["position"], "action": d["action"],
                     "from": race.get("champion"), "to": race.get("challenger"),
                     "from_version": d.get("champion_version"), "to_version": d.get("challenger_version"),
                     "evidence": _num(race.get("evidence")), "threshold": _num(race.get("threshold")),
                     "paired_rows": race.get("rows"),
                     # The duel's means of per-row scores on its paired rows, as the metric (rmse: the root).
                     "from_metric": _metric_value(metric, _num(race.get("champion_metric"))),
                     "to_metric": _metric_value(metric, _num(race.get("challenger_metric"))),
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


def _metric_value(metric: str, mean: float | None) -> float | None:
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


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------------------- markdown


def markdown(summary: dict[str, Any], *, plot_name: str | None = "metric.png") -> str:
    """The summary as a Markdown page (sections: summary, over time, the race when there is one, retrains,
    decisions, detection, promotions)."""
    stream, metric = summary["stream"], summary["metric"]
    name = _metric_label(metric["name"])
    better = "higher is better" if metric["higher_is_better"] else "lower is better"
    lines = [f"# Backtest: {summary['policy']} on {stream['name']}", ""]
    delay = stream["label_delay"]["median_seconds"]
    lines += [(f"{stream['description'] or stream['name']} — {stream['task']}, {stream['rows']:,} rows: the first "
              f"{stream['bootstrap_rows']:,} bootstrap the champion, the other {stream['served_rows']:,} are served "
              f"and scored before their label arrives (label delay {_duration(delay)}). Known change points: "
              f"{_list(stream['change_points']) or 'none'}."), ""]
    if plot_name:
        lines += [f"![prequential {name} over the stream]({plot_name})", ""]

    harm = summary["harmful_promotions"]
    compute = summary["compute"]
    retrains = summary["retrains"]
    lines += ["## Summary", "", "| | |", "|---|---|",
              f"| prequential {name} ({better}) | {_fmt(metric['value'])} |",
              f"| retrains | {retrains['total']}" + (f" ({retrains['failed']} failed)" if retrains["failed"] else "")
              + " |",
              f"| promotions | {summary['promotions']} |",
              f"| rejected challengers | {summary['rejected']} |",
              f"| held challengers | {summary['held']}"
              + (f" ({_counts(summary['held_then'])})" if summary["held"] else "") + " |",
              f"| rollbacks | {summary['rollbacks']} |",
              "| harmful promotions | " + (f"{harm['count']} of {len(harm['promotions'])}" if harm["checked"]
                                            else "not checked") + " |",
              *_race_summary_lines(summary.get("race")),
              (f"| champion | v{summary['champions']['first']} at the start, v{summary['champions']['final']} at "
              "the end |"),
              f"| ticks | {compute['ticks']:,} |",
              f"| controller seconds | {compute['controller_seconds']:.1f} (inside `Controller.tick`) |",
              f"| wall seconds | {compute['wall_seconds']:.1f} |", ""]

    lines += [f"## Prequential {name} over time", "",
              ("Each served row is scored by the champion of the moment before its label is known; per tenth of the "
              "served stream:"), "",
              f"| rows | {name} | champion | change point | decisions |", "|---|---|---|---|---|"]
    for seg in summary["segments"]:
        lines.append(f"| {seg['start']:,}–{seg['end']:,} | {_fmt(seg['value'])} | "
                     f"{', '.join('v' + v for v in seg['versions'])} | {_list(seg['change_points'])} | "
                     f"{'; '.join(seg['events'])} |")
    lines.append("")

    if summary.get("race") is not None:
        lines += _race_section(summary["race"])

    if summary.get("costs") is not None:
        lines += cost_lines(summary["costs"])

    lines += ["## Retrains by strategy and trigger", ""]
    if retrains["total"]:
        lines += ["| strategy | trigger | retrains |", "|---|---|---|"]
        lines += [f"| {r['strategy']} | {r['trigger']} | {r['count']} |" for r in retrains["by_strategy_and_trigger"]]
    else:
        lines.append("No retrain was started.")
    lines.append("")

    decisions = [d for d in summary["decisions"] if d["status"] != "skipped"]
    lines += ["## Decisions", ""]
    if decisions:
        lines += ["| row | decision | trigger (rule) | action | candidates | verdict | evidence |",
                  "|---|---|---|---|---|---|---|"]
        for d in decisions[:MAX_DECISION_ROWS]:
            lines.append(_decision_line(d))
        if len(decisions) > MAX_DECISION_ROWS:
            lines.append(f"\n{len(decisions) - MAX_DECISION_ROWS} more decisions are in decisions.jsonl.")
    else:
        lines.append("No decision was taken.")
    if summary["skipped"]:
        lines.append(f"\n{summary['skipped']} skipped decision(s) (e.g. a deferred retrain that waited too long) "
                     "are in decisions.jsonl.")
    lines.append("")

    lines += ["## Detection delay", ""]
    detections = summary["detections"]
    if detections["per_change_point"]:
        lines += [("Rows from each known change point to the first tick whose concept-drift detector fired, and to the "
                  "first retrain started (by any trigger), before the next change point."), "",
                  ("| change point | concept drift detected at | delay (rows) | first retrain at | delay (rows) | "
                  "trigger |"), "|---|---|---|---|---|---|"]
        for p in detections["per_change_point"]:
            lines.append(f"| {p['change_point']:,} | {_row(p['detected_at'])} | {_row(p['delay'])} | "
                         f"{_row(p['first_retrain_at'])} | {_row(p['retrain_delay'])} | {p['retrain_trigger'] or '—'} |")
        if detections["before_first_change_point"]:
            lines.append(f"\n{detections['before_first_change_point']} concept-drift detection(s) before the first "
                         "change point (false alarms).")
    else:
        lines.append("The stream has no known change points.")
    lines.append(f"\nConcept drift detected at rows: {_list(detections['concept_drift_at']) or 'never'}.")
    lines.append("")

    lines += ["## Promotions: did they help?", ""]
    if summary.get("race") is not None:
        lines += ["The race's switches and checkpoints are judged in *The race* above, on what each racer scored as "
                  "it served; this section checks the other promotions (registered versions, both scored now).", ""]
    if not harm["checked"]:
        lines.append("Not checked (the versions were not loaded).")
    elif not harm["promotions"]:
        lines.append("No promotion to check.")
    else:
        lines += [(f"Each promoted version against the champion it replaced, both scored now on the next "
                  f"{harm['horizon']:,} rows after the promotion. Harmful: the new champion did worse."), "",
                  f"| promoted at row | new | replaced | rows | new {name} | replaced {name} | harmful |",
                  "|---|---|---|---|---|---|---|"]
        for p in harm["promotions"]:
            lines.append(f"| {p['position']:,} | v{p['new_version']} | v{p['old_version']} | {p['rows']:,} | "
                         f"{_fmt(p['new_score'])} | {_fmt(p['old_score'])} | {'**yes**' if p['harmful'] else 'no'} |")
    lines.append("")
    return "\n".join(lines)


def _decision_line(d: dict[str, Any]) -> str:
    at = d.get("verdict_position", d["position"])
    row = f"{d['position']:,}" + (f" → {at:,}" if at != d["position"] else "")
    action = d["action"] + (f" ({d['strategy']})" if d.get("strategy") else "")
    if d["action"] == "rollback":
        verdict = f"rollback v{d['champion_version']} → v{d['challenger_version']}"
    elif d["status"] == "failed":
        verdict = "failed"
    elif d.get("trigger") == "race" and d.get("race"):
        verdict = f"serve {d['race']['challenger']} (v{d['challenger_version']})"
    elif d["action"] == "checkpoint":
        verdict = f"checkpoint v{d['challenger_version']}"
    elif d["verdict"] == "race" and d.get("race"):
        verdict = "race " + ", ".join(f"v{v}" for v in d["race"]["entered"])
    else:
        verdict = (d["verdict"] or d["status"]) + (f" v{d['challenger_version']}" if d.get("challenger_version")
                                                   else "")
    evidence = ""
    if d.get("gate"):
        g = d["gate"]
        evidence = (f"{g['metric']} v{d['champion_version']} {_fmt(g['champion_value'])} vs "
                    f"v{d['challenger_version']} {_fmt(g['challenger_value'])} on {g['rows']} rows"
                    + (f", p={g['p_value']:.3g}" if g.get("p_value") is not None else ""))
    elif d.get("probation"):
        p = d["probation"]
        evidence = (f"probation {p['metric']}: v{d['champion_version']} {_fmt(p['new_champion'])} vs previous "
                    f"{_fmt(p['previous'])} on {p['rows']} rows")
    elif d.get("race") and "challenger" in d["race"]:
        r = d["race"]
        evidence = (f"{r['challenger']} beat {r['champion']} on {_row(r['rows'])} paired rows ({r.get('metric')} "
                    f"{_fmt(r.get('challenger_metric'))} vs {_fmt(r.get('champion_metric'))}), evidence "
                    f"{_fmt_e(r.get('evidence'))} ≥ {_fmt_e(r.get('threshold'))}")
    elif d.get("race"):
        r = d["race"]
        parts = [f"v{', v'.join(r['entered'])} joined the race"] if r["entered"] else []
        parts += [f"v{v} refused ({why})" for v, why in r["refused"].items()]
        evidence = "; ".join(parts).replace("|", "/")[:240]
    elif d.get("checkpoint"):
        c = d["checkpoint"]
        evidence = f"{c['racer']} registered after {_row(c['learned'])} labels learned"
    elif d.get("error"):
        evidence = str(d["error"]).replace("|", "/")[:160]
    candidates = ", ".join(d["candidates"]) if d.get("candidates") else "—"
    return (f"| {row} | {d['decision_id']} | {d['trigger']} ({d.get('rule') or '—'}) | {action} | {candidates} | "
            f"{verdict} | {evidence} |")


def _race_summary_lines(race: dict[str, Any] | None) -> list[str]:
    if race is None:
        return []
    switches, harm = race["switches"], race["harmful"]
    back = sum(s["re_promoted"] for s in switches)
    served = [r for r in race["racers"] if r["served_rows"]]
    return [f"| race switches | {len(switches)}" + (f" ({back} re-promoted)" if back else "") + " |",
            f"| harmful race switches | {harm['count']} of {harm['judged']} judged |",
            f"| race checkpoints | {race['checkpoints']} |",
            "| served by | " + ", ".join(f"{r['racer']} {r['served_rows']:,}" for r in served) + " rows |"]


def _race_section(race: dict[str, Any]) -> list[str]:
    metric, higher = race["metric"], race["higher_is_better"]
    name = race_metric_label(metric)
    better = "higher is better" if higher else "lower is better"
    lines = ["## The race", "",
             (f"Every racer predicts each new row before any label of it is learned; matured labels score it "
              f"({name}, {better}). Each racer's {name} is over the rows it predicted, so racers that joined or left "
              "at different times are scored on different rows. Served: rows the racer served (as the champion)."),
             "", f"| racer | rows predicted | from–to row | {name} | rows served | promoted |",
             "|---|---|---|---|---|---|"]
    for r in race["racers"]:
        span = f"{r['first_row']:,}–{r['last_row']:,}" if r["first_row"] is not None else "—"
        lines.append(f"| {r['racer']} | {r['rows']:,} | {span} | {_fmt(r['value'])} | {r['served_rows']:,} | "
                     f"{r['promoted']} |")
    lines.append("")
    switches = race["switches"]
    if not switches:
        lines += ["The race switched nothing: the champion it started with served throughout.", ""]
        return lines
    harm = race["harmful"]
    lines += [(f"Each switch: the racer the race switched to beat the one serving by the margin, its evidence at or "
               f"above the threshold K/alpha. Next {harm['horizon']:,} rows: both racers' {name} on the rows after "
               "the switch that both predicted (from the outcome log, each as it served or would have served); "
               "harmful: the new one did worse."), "",
              (f"| row | switch | versions | evidence ≥ threshold | paired rows | {name} replaced → new | "
               f"re-promoted | next rows | replaced {name} | new {name} | harmful |"),
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in switches[:MAX_SWITCH_ROWS]:
        impact = s["impact"]
        lines.append(
            f"| {s['position']:,} | {s['from']} → {s['to']} | v{s['from_version']} → v{s['to_version']} | "
            f"{_fmt_e(s['evidence'])} ≥ {_fmt_e(s['threshold'])} | {_row(s['paired_rows'])} | "
            f"{_fmt(s['from_metric'])} → {_fmt(s['to_metric'])} | {'yes' if s['re_promoted'] else 'no'} | "
            f"{impact['rows']:,} | {_fmt(_metric_value(metric, impact['old_score']))} | "
            f"{_fmt(_metric_value(metric, impact['new_score']))} | "
            + ("**yes**" if impact["harmful"] else "no" if impact["rows"] else "not judged") + " |")
    if len(switches) > MAX_SWITCH_ROWS:
        lines.append(f"\n{len(switches) - MAX_SWITCH_ROWS} more switches are in decisions.jsonl.")
    lines += ["", f"Harmful switches: {harm['count']} of {harm['judged']} judged"
              + (f" ({len(switches) - harm['judged']} not judged: no row after the switch that both predicted — "
                 "the replaced racer had left the race, or the stream ended)"
                 if harm["judged"] < len(switches) else "") + ".", ""]
    return lines


def race_metric_label(metric: str) -> str:
    """How the page, the plot and the CLI name the race's metric."""
    return {"accuracy": "accuracy", "log_loss": "log loss"}.get(metric, metric.upper())


def _fmt_e(value: float | None) -> str:
    """Evidence and thresholds: e-values span orders of magnitude."""
    return "—" if value is None else f"{value:.3g}"


def _metric_label(metric: str) -> str:
    return metric if metric == "accuracy" else metric.upper()


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _row(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _list(values: list[int]) -> str:
    return ", ".join(f"{v:,}" for v in values)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counts.items())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


# ------------------------------------------------------------------------------------------------------------ plot

VERDICT_STYLE = {  # marker, colour, legend label
    "promote": ("^", "#1a9850", "promoted"),
    "reject": ("X", "#d73027", "rejected"),
    "hold": ("o", "#fdae61", "held (waiting for labels)"),
    "failed": ("x", "#555555", "failed"),
    "rollback": ("v", "#7b3294", "rollback"),
    "race": ("P", "#35978f", "joined the race"),
}


DETECTION_COLOUR = "#e08214"


def rolling_window(served_rows: int) -> int:
    """Rows of the rolling mean in the plot: a 25th of the served stream, between 20 and 500."""
    return int(min(500, max(20, served_rows // 25)))


def plot(result: BacktestResult, path: Path, *, window: int | None = None, race_metric: str | None = None) -> Path:
    """The rolling prequential metric over stream position; change points, decisions and the champion; with a race,
    each racer's rolling metric and which racer served (PNG)."""
    fig = figure(result, window=window, race_metric=race_metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def figure(result: BacktestResult, *, window: int | None = None, race_metric: str | None = None) -> Any:
    """The plot as a matplotlib Figure (Agg canvas, no pyplot state): the metric panel above the champion panel;
    with a race, the racers' panel and the served-by strip between them (``race_metric`` as in :func:`summarize`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    served = result.served
    window = window or rolling_window(len(served))
    raced = result.race is not None and "racer" in served
    fig = Figure(figsize=(12, 10.2 if raced else 6.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    if raced:
        top, race_panel, strip, bottom = fig.subplots(4, 1, sharex=True, gridspec_kw={
            "height_ratios": [3.2, 2.8, 0.5, 1]})
    else:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3.2, 1]})
    positions = served["position"].to_numpy()
    rolling = served["score"].rolling(window, min_periods=max(1, window // 2)).mean().to_numpy()
    name = _metric_label(result.metric)
    better = "higher is better" if result.metric in HIGHER_IS_BETTER else "lower is better"
    top.plot(positions, rolling, color="#2166ac", linewidth=1.4, label=f"{name}, rolling {window} rows")
    top.axhline(result.value, color="#2166ac", linewidth=0.8, linestyle=":", alpha=0.8,
                label=f"overall {result.value:.3f}")
    top.axvspan(0, result.bootstrap_rows, color="#dddddd", alpha=0.6, linewidth=0)
    top.text(result.bootstrap_rows / 2, 0.98, "bootstrap", transform=top.get_xaxis_transform(), ha="center",
             va="top", fontsize=8, color="#555555")

    handles = [Line2D([], [], color="#2166ac", linewidth=1.4, label=f"{name}, rolling {window} rows"),
               Line2D([], [], color="#2166ac", linewidth=0.8, linestyle=":", label=f"overall {result.value:.3f}")]
    for ax in (top, bottom, *((race_panel, strip) if raced else ())):
        for point in result.spec.change_points:
            ax.axvline(point, color="#000000", linestyle="--", linewidth=1.0, alpha=0.7)
    if result.spec.change_points:
        handles.append(Line2D([], [], color="#000000", linestyle="--", linewidth=1.0, label="known change point"))
    if result.detections:
        # A rug along the bottom of the metric panel: the ticks whose concept-drift detector fired.
        top.plot(result.detections, [0.03] * len(result.detections), linestyle="none", marker="|", markersize=12,
                 markeredgewidth=2, color=DETECTION_COLOUR, transform=top.get_xaxis_transform(), zorder=4)
        handles.append(Line2D([], [], linestyle="none", marker="|", markersize=10, markeredgewidth=2,
                              color=DETECTION_COLOUR, label="concept drift detected"))

    def value_at(position: int) -> float:
        i = int(np.searchsorted(positions, position, side="right")) - 1
        if 0 <= i < len(rolling) and np.isfinite(rolling[i]):
            return float(rolling[i])
        return float(np.nanmean(rolling)) if np.isfinite(rolling).any() else 0.0

    seen: set[str] = set()
    for d in result.decisions:
        if d["status"] == "skipped" or d["action"] not in (*TRAINING_ACTIONS, "rollback", "promote"):
            continue
        at = d.get("verdict_position", d["position"])
        if d["action"] == "rollback":
            kind = "rollback"
        elif d["status"] == "failed":
            kind = "failed"
        elif _was_held(d):
            # The hold: from the training to the verdict (or the end of the stream), drawn as a band.
            end = at if d["verdict"] != "hold" else int(positions[-1]) if len(positions) else at
            top.plot([d["position"], end], [value_at(d["position"])] * 2, color=VERDICT_STYLE["hold"][1],
                     linewidth=3, alpha=0.8, solid_capstyle="butt", zorder=3)
            marker, colour, _ = VERDICT_STYLE["hold"]
            top.scatter([d["position"]], [value_at(d["position"])], marker=marker, color=colour, s=36, zorder=4,
                        edgecolors="black", linewidths=0.5)
            seen.add("hold")
            kind = d["verdict"] if d["verdict"] in ("promote", "reject") else None
        else:
            kind = d["verdict"] if d["verdict"] in VERDICT_STYLE else None
        if kind is None:
            continue
        marker, colour, _ = VERDICT_STYLE[kind]
        top.scatter([at], [value_at(at)], marker=marker, color=colour, s=70, zorder=5,
                    edgecolors="black" if marker != "x" else None, linewidths=0.6 if marker != "x" else 2.0)
        seen.add(kind)
    handles += [Line2D([], [], marker=VERDICT_STYLE[k][0], color=VERDICT_STYLE[k][1], markeredgecolor="black",
                       markeredgewidth=0.5, linestyle="none", markersize=8, label=VERDICT_STYLE[k][2])
                for k in VERDICT_STYLE if k in seen]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncol=min(8, len(handles)), frameon=False)
    top.set_ylabel(f"prequential {name}\n({better})")
    top.grid(True, alpha=0.3)
    rollbacks = sum(d["action"] == "rollback" and d["status"] == "done" for d in result.decisions)
    if raced:
        checkpoints = sum(d["action"] == "checkpoint" and d["status"] == "done" for d in result.decisions)
        what = (f"{_plural(len(race_switches(result)), 'race switch', 'race switches')}, "
                f"{_plural(checkpoints, 'checkpoint')}")
    else:
        what = f"{_plural(len(result.promotions()), 'promotion')}, {_plural(rollbacks, 'rollback')}"
    fig.suptitle(f"{_short_policy(result.policy_name)} on {result.spec.name}: {name} {result.value:.4f} over "
                 f"{len(served):,} served rows · {_plural(len(result.retrains()), 'retrain')}, {what}", fontsize=11)
    if raced:
        _draw_race(result, race_panel, strip, race_metric or race_metric_of(result))

    # The champion over the stream: a step line of its version, each period shaded in the top panel too.
    if len(served):
        versions = served["version"].astype(str).to_numpy()
        order = list(dict.fromkeys(versions))
        level = {v: i for i, v in enumerate(order)}
        y = np.array([level[v] for v in versions])
        bottom.step(positions, y, where="post", color="#333333", linewidth=1.5)
        bottom.set_yticks(range(len(order)), [f"v{v}" for v in order])
        bottom.set_ylim(-0.6, len(order) - 0.4)
        changes = np.flatnonzero(versions[1:] != versions[:-1]) + 1
        starts = [0, *changes.tolist()]
        ends = [*changes.tolist(), len(versions)]
        shades = ["#f7f7f7", "#e6f0fa"]
        for n, (a, b) in enumerate(zip(starts, ends, strict=True)):
            left, right = positions[a], positions[b - 1] + 1
            top.axvspan(left, right, color=shades[n % 2], alpha=0.7, linewidth=0, zorder=0)
    bottom.set_ylabel("champion")
    bottom.set_xlabel("stream row")
    bottom.grid(True, axis="x", alpha=0.3)
    bottom.set_xlim(0, int(positions[-1]) + 1 if len(positions) else result.bootstrap_rows)
    return fig


#: Racer colours, none of them a decision marker's (green, red, purple) nor the served metric's blue.
RACER_COLOURS = ("#ff7f0e", "#1f77b4", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79",
                 "#e7ba52", "#843c39", "#a55194", "#637939")


def race_window(rows: int) -> int:
    """Rows of each racer's rolling metric in the plot: a tenth of the race's rows, between 20 and 500."""
    return int(min(500, max(20, rows // 10)))


def _draw_race(result: BacktestResult, panel: Any, strip: Any, metric: str) -> None:
    """Each racer's rolling metric on the rows it predicted (thick: it served at some point), switch lines, and the
    strip of which racer served each stretch, in the racer's colour."""
    from matplotlib.lines import Line2D

    assert result.race is not None
    log = result.race.sort_values("position")
    served = result.served
    serving = served["racer"].astype(str).to_numpy()
    keys = racer_keys(result)
    keys += [k for k in dict.fromkeys(serving) if k not in keys]
    colour = {k: RACER_COLOURS[i % len(RACER_COLOURS)] for i, k in enumerate(keys)}
    # Registered versions (v<N>) dashed, the policy's online racers solid; past a palette's worth, dotted.
    dashes = {k: ":" if i >= len(RACER_COLOURS) else (0, (5, 1.5)) if _is_version_key(k) else "-"
              for i, k in enumerate(keys)}
    served_rows = Counter(serving)
    window = race_window(len(log))
    positions = log["position"].to_numpy()
    label = race_metric_label(metric)
    higher = metric in HIGHER_IS_BETTER
    curves = {}
    for key in keys:
        scores = log[key] if key in log.columns else pd.Series(np.nan, index=log.index)
        rolling = scores.rolling(window, min_periods=max(1, window // 2)).mean().to_numpy()
        rolling[scores.isna().to_numpy()] = np.nan  # drawn only where the racer predicted
        curves[key] = (np.sqrt(rolling) if metric == "rmse" else rolling, _metric_value(metric, _num(scores.mean())))
    low, high, off = _race_limits({k: c for k, (c, _) in curves.items()}, [k for k in keys if served_rows[k]])
    handles = []
    for key in keys:
        rolling, mean = curves[key]
        width = 2.2 if served_rows[key] else 1.1
        panel.plot(positions, rolling, color=colour[key], linestyle=dashes[key], linewidth=width,
                   alpha=1.0 if served_rows[key] else 0.85)
        text = f"{key}: {_fmt_short(mean)}" + (f", served {served_rows[key]:,}" if served_rows[key] else "")
        if key in off:
            text += f" ({off[key]} the panel)"
        handles.append(Line2D([], [], color=colour[key], linestyle=dashes[key], linewidth=width, label=text))
    if low is not None and high is not None:
        panel.set_ylim(low, high)
    for side, y, va in (("below", 0.02, "bottom"), ("above", 0.98, "top")):
        names = [k for k, where in off.items() if where == side]
        if names:
            arrow = "↓" if side == "below" else "↑"
            panel.text(0.005, y, f"{arrow} {', '.join(names)}: {side} this range", transform=panel.transAxes,
                       fontsize=8, va=va, ha="left", color="#444444")
    for d in race_switches(result):
        style = VERDICT_STYLE["rollback" if d["action"] == "rollback" else "promote"]
        for ax in (panel, strip):
            ax.axvline(d["position"], color=style[1], linewidth=1.0, alpha=0.9, zorder=3)
        panel.plot([d["position"]], [1.0], marker=style[0], color=style[1], markeredgecolor="black",
                   markeredgewidth=0.5, markersize=8, linestyle="none", transform=panel.get_xaxis_transform(),
                   clip_on=False, zorder=5)
    better = "higher is better" if higher else "lower is better"
    panel.set_ylabel(f"each racer's {label}\n(rolling {window} rows,\n{better})")
    panel.grid(True, alpha=0.3)
    panel.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False,
                 title=f"racer: {label} on the rows it\npredicted, rows served\n(dashed: a registered version)",
                 title_fontsize=8, alignment="left")

    # Which racer served: one band per stretch, named when it is wide enough to hold the name.
    positions = served["position"].to_numpy()
    strip.axvspan(0, result.bootstrap_rows, color="#dddddd", alpha=0.6, linewidth=0)
    if len(positions):
        changes = np.flatnonzero(serving[1:] != serving[:-1]) + 1
        span = positions[-1] + 1 - positions[0]
        for a, b in zip([0, *changes.tolist()], [*changes.tolist(), len(serving)], strict=True):
            left, right = positions[a], positions[b - 1] + 1
            strip.axvspan(left, right, color=colour[serving[a]], linewidth=0, zorder=1)
            if right - left > 0.05 * span:
                strip.text((left + right) / 2, 0.5, serving[a], ha="center", va="center", fontsize=8, zorder=2,
                           color="white" if _dark(colour[serving[a]]) else "black")
    strip.set_yticks([])
    strip.set_ylim(0, 1)
    strip.set_ylabel("served by", rotation=0, ha="right", va="center")


def _race_limits(curves: dict[str, np.ndarray], served: list[str]) -> tuple[float | None, float | None,
                                                                             dict[str, str]]:
    """The racers panel's y range, and the racers left outside it: one whose median is further from the served
    racers' range than that range is wide (a no-change baseline at chance level) would squash the others flat."""
    def finite(key: str) -> np.ndarray:
        values = curves[key]
        return values[np.isfinite(values)]

    core = [finite(k) for k in served if len(finite(k))]
    if not core:
        return None, None, {}
    values = np.concatenate(core)
    lo, hi = np.percentile(values, [2, 98])
    width = max(hi - lo, 1e-9)
    off: dict[str, str] = {}
    kept = []
    for key in curves:
        values = finite(key)
        if not len(values):
            continue
        median = float(np.median(values))
        if median < lo - width:
            off[key] = "below"
        elif median > hi + width:
            off[key] = "above"
        else:
            kept.append(values)
    shown = np.concatenate(kept)
    low, high = float(np.min(shown)), float(np.max(shown))
    pad = 0.05 * max(high - low, 1e-9)
    return low - pad, high + pad, off


def _is_version_key(key: str) -> bool:
    return key[:1] == "v" and key[1:].isdigit()


def _dark(colour: str) -> bool:
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b < 0.55


def _fmt_short(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


def _short_policy(name: str) -> str:
    return Path(name).name if "/" in name else name


# ---------------------------------------------------------------------------------------------------------- files


def write_report(result: BacktestResult, summary: dict[str, Any], out: Path) -> ReportFiles:
    """``out/summary.md``, ``out/metric.png`` and ``out/decisions.jsonl`` (every decision with its evidence)."""
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(summary=out / "summary.md", plot=out / "metric.png", decisions=out / "decisions.jsonl")
    plot(result, files.plot, race_metric=(summary.get("race") or {}).get("metric"))
    files.summary.write_text(markdown(summary, plot_name=files.plot.name), encoding="utf-8")
    with files.decisions.open("w", encoding="utf-8") as f:
        for d in result.decisions:
            f.write(json.dumps(d, default=str) + "\n")
    return files


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
