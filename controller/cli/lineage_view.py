"""The lineage tree and the alias history as data (for --json) and as text (for people)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lineage import ModelRegistry, VersionInfo


def lineage_rows(registry: ModelRegistry, name: str) -> list[dict[str, Any]]:
    """One dict per registered version, oldest first."""
    return [_row(info) for info in registry.tree(name)]


def lineage_document(registry: ModelRegistry, name: str) -> dict[str, Any]:
    """What ``driftpilot lineage --json`` prints: the versions and the alias history, both oldest first."""
    return {
        "model": name,
        "versions": lineage_rows(registry, name),
        "alias_history": [event.to_dict() for event in registry.alias_history(name)],
    }


def _row(info: VersionInfo) -> dict[str, Any]:
    record = info.record
    extra = dict(record.extra) if record else {}
    return {
        "version": info.version,
        "parent": info.parent_version,
        "strategy": record.strategy if record else None,
        "trigger": record.trigger if record else None,
        # Label-arrival range (when the labels matured) and event-time range (the period the rows describe).
        "window_start": record.window_start.isoformat() if record else None,
        "window_end": record.window_end.isoformat() if record else None,
        "event_time_start": _iso(record.event_time_start) if record else None,
        "event_time_end": _iso(record.event_time_end) if record else None,
        "rows": record.window_rows if record else None,
        "chain_depth": record.chain_depth if record else None,
        "holdout_metrics": dict(record.holdout_metrics) if record else {},
        "holdout_rows": extra.get("holdout_rows"),
        # Scored on the same holdout rows: the champion when this version was trained (its parent).
        "champion_at_the_time": info.parent_version if record and record.champion_metrics else None,
        "champion_metrics": dict(record.champion_metrics) if record else {},
        "decision_id": record.decision_id if record else None,
        "aliases": list(info.aliases),
        "created_at": info.created_at.isoformat(),
        "run_id": info.run_id,
    }


def render_tree(rows: list[dict[str, Any]]) -> str:
    """Children indented under their parent; roots (bootstrap, stateless retrains) at the left margin."""
    if not rows:
        return "(no registered versions)"
    children: dict[str | None, list[dict]] = {}
    known = {row["version"] for row in rows}
    for row in rows:
        parent = row["parent"] if row["parent"] in known else None
        children.setdefault(parent, []).append(row)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for row in children.get(parent, []):
            aliases = f" [{', '.join(row['aliases'])}]" if row["aliases"] else ""
            lines.append(f"{'    ' * depth}{'└── ' if depth else ''}v{row['version']}{aliases}  "
                         f"{row['strategy']} ({row['trigger']})  rows={row['rows']}  {_window(row)}  "
                         f"{_scores(row)}  created={row['created_at'][:19]}")
            walk(row["version"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def render_history(events: list[dict[str, Any]]) -> str:
    """The alias history, oldest first: when, what, aliases before -> after, decision and reason."""
    if not events:
        return "Alias history: (no promotion or rollback yet)"
    lines = ["Alias history (oldest first):"]
    for event in events:
        moved = (f"{_aliases(event['before'])} -> {_aliases(event['after'])}"
                 if event["before"] != event["after"] else f"no change ({_aliases(event['after'])})")
        why = "  ".join(part for part in (
            f"decision {event['decision_id']}" if event["decision_id"] else "",
            event["reason"] or "") if part)
        lines.append(f"  {event['at'][:19]}  {event['action']:<8} v{event['version']:<4} {moved}"
                     + (f"  ({why})" if why else ""))
    return "\n".join(lines)


def render_document(document: dict[str, Any]) -> str:
    return render_tree(document["versions"]) + "\n\n" + render_history(document["alias_history"])


def _window(row: dict[str, Any]) -> str:
    arrived = f"arrived={(row['window_start'] or '?')[:16]} .. {(row['window_end'] or '?')[:16]}"
    if row.get("event_time_start"):
        return f"events={row['event_time_start'][:16]} .. {row['event_time_end'][:16]}  {arrived}"
    return f"window={(row['window_start'] or '?')[:16]} .. {(row['window_end'] or '?')[:16]}"


def _scores(row: dict[str, Any]) -> str:
    own = ", ".join(f"{k}={v:.4f}" for k, v in list(row["holdout_metrics"].items())[:2]) or "-"
    champion = row.get("champion_at_the_time")
    if champion is None:
        return own
    theirs = ", ".join(f"{k}={v:.4f}" for k, v in list(row["champion_metrics"].items())[:2])
    return f"{own} (champion v{champion} at the time: {theirs}, same rows)"


def _aliases(aliases: dict[str, str]) -> str:
    return ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())) or "(none)"


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None
