"""The lineage tree as rows (for --json) and as an indented text tree (for people)."""

from __future__ import annotations

from typing import Any

from lineage import ModelRegistry, VersionInfo


def lineage_rows(registry: ModelRegistry, name: str) -> list[dict[str, Any]]:
    """One dict per registered version, oldest first."""
    return [_row(info) for info in registry.tree(name)]


def _row(info: VersionInfo) -> dict[str, Any]:
    record = info.record
    return {
        "version": info.version,
        "parent": info.parent_version,
        "strategy": record.strategy if record else None,
        "trigger": record.trigger if record else None,
        "window_start": record.window_start.isoformat() if record else None,
        "window_end": record.window_end.isoformat() if record else None,
        "rows": record.window_rows if record else None,
        "chain_depth": record.chain_depth if record else None,
        "holdout_metrics": dict(record.holdout_metrics) if record else {},
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
            metric = ", ".join(f"{k}={v:.4f}" for k, v in list(row["holdout_metrics"].items())[:2]) or "-"
            aliases = f" [{', '.join(row['aliases'])}]" if row["aliases"] else ""
            window = f"{(row['window_start'] or '?')[:16]} .. {(row['window_end'] or '?')[:16]}"
            lines.append(f"{'    ' * depth}{'└── ' if depth else ''}v{row['version']}{aliases}  "
                         f"{row['strategy']} ({row['trigger']})  rows={row['rows']}  window={window}  "
                         f"{metric}  created={row['created_at'][:19]}")
            walk(row["version"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)
