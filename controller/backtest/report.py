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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.backtest.page import MAX_DECISION_ROWS, MAX_SWITCH_ROWS, markdown, race_metric_label
from controller.backtest.plot import RACER_COLOURS, figure, plot, race_window, rolling_window
from controller.backtest.result import BacktestResult
from controller.backtest.summary import (
    HORIZON,
    SEGMENTS,
    TRAINING_ACTIONS,
    headline_metrics,
    registry_loader,
    summarize,
)

__all__ = ["HORIZON", "MAX_DECISION_ROWS", "MAX_SWITCH_ROWS", "RACER_COLOURS", "SEGMENTS", "TRAINING_ACTIONS",
           "ReportFiles", "figure", "headline_metrics", "markdown", "plot", "race_metric_label", "race_window",
           "registry_loader", "rolling_window", "summarize", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    summary: Path       # summary.md
    plot: Path          # metric.png
    decisions: Path     # decisions.jsonl


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

