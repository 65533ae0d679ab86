"""The Markdown the MLflow UI shows on driftpilot's registered models and versions.

A registered model gets :data:`MODEL_DESCRIPTION`; each version gets :func:`describe_version` (parent, strategy,
trigger, data window, holdout, a link to its training run) when it is registered, and later a comparisons section
that :func:`with_comparison` keeps to the newest few entries (see :meth:`lineage.Comparison.entry`).
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from lineage.record import RECORD_ARTIFACT, LineageRecord, time_range
from lineage.runs import ui_link

MODEL_DESCRIPTION = (
    "Managed by driftpilot. Each version's description names its parent, strategy, trigger and data window (event "
    "time and label arrival), links its training run and every comparison it took part in; its tags are a short "
    "summary (the full lineage record is `driftpilot-lineage.json` in the training run). The experiment "
    "`<experiment>/comparisons` scores champion and challenger on the same held-out rows; "
    "`<experiment>/decisions` holds drift checks and the alias history (every promote and rollback)."
)
#: Newest comparisons listed in a version's description; older ones stay findable in the comparisons experiment.
MAX_LISTED_COMPARISONS = 10
COMPARISONS_HEADING = "**Comparisons** (both models scored on the same held-out rows):"


def describe_version(name: str, record: LineageRecord, experiment_id: str, run_id: str) -> str:
    """The description of a newly registered version of ``name``, trained in run ``run_id``."""
    if record.parent_version is None:
        origin = f"**{record.strategy}** (no parent)"
    else:
        origin = (
            f"**{record.strategy}** from parent [version {record.parent_version}]"
            f"({version_link(name, record.parent_version)})"
        )
    holdout_rows = record.extra.get("holdout_rows")
    own = ", ".join(f"{k} {v:.4f}" for k, v in sorted(record.holdout_metrics.items())) or "none"
    holdout = f"Holdout{f' ({holdout_rows:,} rows)' if isinstance(holdout_rows, int) else ''}: {own}"
    if record.champion_metrics and record.parent_version is not None:
        theirs = ", ".join(f"{k} {v:.4f}" for k, v in sorted(record.champion_metrics.items()))
        holdout += f" · champion v{record.parent_version} at the time, on the same rows: {theirs}"
    if record.event_time_start is not None:
        events = f"events {time_range(record.event_time_start, record.event_time_end)} (the data's own time)"
    else:
        events = "event times not recorded"
    arrival = time_range(record.window_start, record.window_end)
    return "\n\n".join(
        [
            f"{origin} · trigger `{record.trigger}` · chain depth {record.chain_depth}",
            f"Training run: [{run_id}]({ui_link(f'experiments/{experiment_id}/runs/{run_id}')})",
            (
                f"Data window: {record.window_rows:,} rows · {events} · labels arrived {arrival} "
                f"({span(record.window_end - record.window_start)}) · fingerprint `{record.window_fingerprint[:12]}`"
                f" · labels as of {record.maturity_cut.isoformat(timespec='seconds')}"
            ),
            holdout,
            (
                f"Decision `{record.decision_id}` · policy `{record.policy_hash[:12]}` · full lineage record: "
                f"`{RECORD_ARTIFACT}` in the training run"
            ),
        ]
    )


def with_comparison(description: str, entry: str) -> str:
    """``description`` with ``entry`` appended to its comparisons section (newest last, at most a few kept)."""
    head, _, section = (description or "").partition(COMPARISONS_HEADING)
    entries = [line for line in section.splitlines() if line.startswith("- ")]
    older = [line for line in section.splitlines() if line.startswith("(") and "older" in line]
    entries.append(entry)
    dropped = max(0, len(entries) - MAX_LISTED_COMPARISONS)
    if dropped or older:
        previous = int(older[0].split()[0].lstrip("(")) if older else 0
        count = previous + dropped
        note = [f"({count} older comparison{'s' if count != 1 else ''}: see the comparisons experiment)"]
    else:
        note = []
    return "\n\n".join(part for part in (head.rstrip(), COMPARISONS_HEADING + "\n\n" + "\n".join(
        note + entries[dropped:])) if part)


def version_link(name: str, version: str | int) -> str:
    """A link to a version's page in the MLflow UI."""
    return ui_link(f"models/{quote(name, safe='')}/versions/{version}")


def span(delta: timedelta) -> str:
    """A duration for people: ``42.00 s``, ``3.5 min``, ``7.2 h``, ``3.0 days``."""
    seconds = delta.total_seconds()
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
