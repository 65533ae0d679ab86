"""What a stream is to a backtest, and what a backtest returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: Columns of a replay frame besides the features and the target.
EVENT_TIME = "event_time"   # when the prediction is made (UTC)
LABEL_TIME = "label_time"   # when its natural label arrives (UTC), >= event_time


@dataclass(frozen=True)
class StreamSpec:
    """A stream's schema and its known truth (change points, for synthetic scenarios)."""

    name: str
    task: str                                   # classification | regression
    features: dict[str, str]                    # name -> numeric | categorical | boolean
    target: str
    classes: tuple[Any, ...] | None = None
    change_points: tuple[int, ...] = ()         # row positions where the concept changes (0-based)
    description: str = ""


@dataclass(frozen=True)
class ReplayStream:
    """Rows in event-time order: the features, the target, ``event_time`` and ``label_time`` (both aware UTC)."""

    spec: StreamSpec
    frame: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in (*self.spec.features, self.spec.target, EVENT_TIME, LABEL_TIME)
                   if c not in self.frame.columns]
        if missing:
            raise ValueError(f"stream {self.spec.name!r}: the frame lacks columns {missing}")
        if (self.frame[LABEL_TIME] < self.frame[EVENT_TIME]).any():
            raise ValueError(f"stream {self.spec.name!r}: a label arrives before its prediction (label_time < "
                             "event_time)")
        if not self.frame[EVENT_TIME].is_monotonic_increasing:
            raise ValueError(f"stream {self.spec.name!r}: rows must be in event-time order")

    @property
    def rows(self) -> int:
        return len(self.frame)


@dataclass
class BacktestResult:
    """One policy replayed over one stream.

    ``served`` has one row per prediction after the bootstrap: ``position`` (row of the stream), ``event_time``,
    ``label``, ``prediction``, ``version`` (the champion that served it), ``racer`` (its race key: a policy racer's
    name or ``v<version>``), ``score`` (1/0 correctness for
    classification, absolute error for regression). ``decisions`` are the decision log's rows (dicts, oldest first)
    plus ``position`` (the stream row at which the decision was made) and ``verdict_position`` (the row of the gate's
    last verdict: later than ``position`` when the challenger was held for matured labels first).
    """

    spec: StreamSpec
    policy_name: str
    bootstrap_rows: int
    served: pd.DataFrame
    decisions: list[dict[str, Any]] = field(default_factory=list)
    ticks: int = 0
    wall_seconds: float = 0.0
    controller_seconds: float = 0.0             # inside Controller.tick (monitors, training, gate), summed
    metric: str = "accuracy"                    # accuracy (higher is better) or mae (lower is better)
    detections: list[int] = field(default_factory=list)   # row positions of the ticks that saw a concept drift
    workdir: str | None = None                  # the throwaway store and MLflow store (events.db, mlflow.db)
    # With a race: every racer's score on every row it predicted (``position``, ``seq``, ``prediction_id``, one
    # column per racer; NaN: not predicted). ``served`` then also names the ``racer`` that served each row.
    race: pd.DataFrame | None = None

    @property
    def value(self) -> float:
        """The prequential metric over every served row."""
        return float(self.served["score"].mean()) if len(self.served) else float("nan")

    def retrains(self) -> list[dict[str, Any]]:
        return [d for d in self.decisions if d["action"] in ("retrain", "learn")]

    def promotions(self) -> list[dict[str, Any]]:
        return [d for d in self.decisions if d["verdict"] == "promote" and d["status"] == "done"]
