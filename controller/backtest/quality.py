"""Decision quality of a backtest: how late drifts were detected, and whether promotions helped.

* **Detection delay**: for each known change point, the rows until the first tick that saw a concept drift at or
  after it (None: never detected before the next change point).
* **Harmful promotion**: a promoted challenger that, on the ``horizon`` rows served after its promotion, does worse
  than the champion it replaced would have done on the same rows (both scored now, from the backtest's registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.backtest.result import BacktestResult, ReplayStream
from controller.loop.scoring import predict


@dataclass(frozen=True)
class Detection:
    change_point: int
    detected_at: int | None

    @property
    def delay(self) -> int | None:
        return None if self.detected_at is None else self.detected_at - self.change_point


def detection_delays(result: BacktestResult) -> list[Detection]:
    points = list(result.spec.change_points)
    found = []
    for i, point in enumerate(points):
        end = points[i + 1] if i + 1 < len(points) else float("inf")
        hits = [d for d in result.detections if point <= d < end]
        found.append(Detection(point, hits[0] if hits else None))
    return found


@dataclass(frozen=True)
class PromotionImpact:
    decision_id: str
    position: int
    new_version: str
    old_version: str
    rows: int
    new_score: float
    old_score: float
    higher_is_better: bool

    @property
    def harmful(self) -> bool:
        if self.rows == 0:
            return False
        return self.new_score < self.old_score if self.higher_is_better else self.new_score > self.old_score


def promotion_impacts(result: BacktestResult, stream: ReplayStream, load: Callable[[str], Any], *,
                      horizon: int = 500) -> list[PromotionImpact]:
    """Each promotion's new vs replaced champion on the next ``horizon`` rows of the stream."""
    spec, frame = result.spec, stream.frame
    classes = tuple(spec.classes or ())
    impacts = []
    for decision in result.promotions():
        old, new = decision.get("champion_version"), decision.get("challenger_version")
        if old is None or new is None or old == new:
            continue
        start = decision.get("verdict_position", decision["position"]) + 1  # a held challenger is promoted later
        rows = frame.iloc[start:start + horizon]
        if rows.empty:
            continue
        features, labels = rows[list(spec.features)], rows[spec.target].to_numpy()
        scores = []
        for version in (new, old):
            predicted, _ = predict(load(version), features, spec.task, classes)
            if spec.task == "classification":
                scores.append(float(np.mean(predicted == labels)))
            else:
                scores.append(float(np.mean(np.abs(predicted.astype(float) - labels.astype(float)))))
        impacts.append(PromotionImpact(decision["decision_id"], decision["position"], str(new), str(old), len(rows),
                                       scores[0], scores[1], spec.task == "classification"))
    return impacts
