"""A backtest's summary as a Markdown page: summary, over time, the race when there is one, cost, retrains,
decisions, detection, promotions."""
from __future__ import annotations

from typing import Any

from controller.backtest.costs import cost_lines
from controller.backtest.summary import metric_value

MAX_DECISION_ROWS = 60  # decisions listed in the Markdown page; all of them are in decisions.jsonl
MAX_SWITCH_ROWS = 60    # race switches listed in the Markdown page


# --------------------------------------------------------------------------------------------------------- markdown


def markdown(summary: dict[str, Any], *, plot_name: str | None = "metric.png") -> str:
    """The summary as a Markdown page (sections: summary, over time, the race when there is one, retrains,
    decisions, detection, promotions)."""
    stream, metric = summary["stream"], summary["metric"]
    name = metric_label(metric["name"])
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
            f"{impact['rows']:,} | {_fmt(metric_value(metric, impact['old_score']))} | "
            f"{_fmt(metric_value(metric, impact['new_score']))} | "
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


def metric_label(metric: str) -> str:
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

