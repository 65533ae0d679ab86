"""Decision quality of a backtest: how late drifts were detected, and whether promotions helped.

* **Detection delay**: for each known change point, the rows until the first tick that saw a concept drift at or
  after it (None: never detected before the next change point).
* **Harmful promotion**: a promoted challenger that, on the ``horizon`` rows served after its promotion, does worse
  than the champion it replaced would have done on the same rows (both scored now, from the backtest's registry).
* **Harmful race switch** (a policy with a ``race:`` section): the racer the race switched to scored worse than the
  one it replaced on the next ``horizon`` positions, both read from the race's outcome log — each as it served or
  would have served, online racers still learning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.backtest.result import BacktestResult, ReplayStream
from controller.loop.scoring import predict
from monitors.metrics import HIGHER_IS_BETTER, row_scores


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
        metric = "accuracy" if spec.task == "classification" else "mae"  # the replay's prequential metric
        scores = []
        for version in (new, old):
            predicted, _ = predict(load(version), features, spec.task, classes)
            scores.append(float(np.mean(row_scores(metric, labels, predicted))))
        impacts.append(PromotionImpact(decision["decision_id"], decision["position"], str(new), str(old), len(rows),
                                       scores[0], scores[1], metric in HIGHER_IS_BETTER))
    return impacts


@dataclass(frozen=True)
class SwitchImpact:
    """A change of the served model by the race, judged on the next rows with both racers' own prequential scores
    (each as it would have served: online racers kept learning in both arms)."""

    decision_id: str
    position: int
    new_racer: str
    old_racer: str
    rows: int
    new_score: float
    old_score: float
    higher_is_better: bool

    @property
    def harmful(self) -> bool:
        if self.rows == 0:
            return False
        return self.new_score < self.old_score if self.higher_is_better else self.new_score > self.old_score


def race_switches(result: BacktestResult) -> list[dict[str, Any]]:
    """The decisions that changed the served model through the race (promotions and rollbacks; a checkpoint of
    the serving learner is the same model continued)."""
    return [d for d in result.decisions if d.get("trigger") == "race" and d["action"] in ("promote", "rollback")
            and d["status"] == "done"]


def race_switch_impacts(result: BacktestResult, *, horizon: int = 500) -> list[SwitchImpact]:
    """Each race switch: the new vs the replaced racer on the rows served in the next ``horizon`` positions that
    both predicted (read from the race's outcome log). A replaced racer that left the race has no rows: not judged
    (``rows`` 0)."""
    if result.race is None:
        return []
    log = result.race.set_index("position").sort_index()
    impacts = []
    for decision in race_switches(result):
        race = (decision.get("evidence") or {}).get("race") or {}
        # The outcome log holds the race metric's per-row values: judge in its direction (log loss: lower is better).
        metric = race.get("metric") or ("accuracy" if result.spec.task == "classification" else "mae")
        new, old = race.get("challenger"), race.get("champion")
        start = decision["position"]
        window = log.loc[start:start + horizon - 1]
        if new not in log.columns or old not in log.columns:
            impacts.append(SwitchImpact(decision["decision_id"], start, str(new), str(old), 0, float("nan"),
                                        float("nan"), metric in HIGHER_IS_BETTER))
            continue
        both = window[[new, old]].dropna()
        impacts.append(SwitchImpact(decision["decision_id"], start, str(new), str(old), len(both),
                                    float(both[new].mean()) if len(both) else float("nan"),
                                    float(both[old].mean()) if len(both) else float("nan"),
                                    metric in HIGHER_IS_BETTER))
    return impacts


#: Columns of ``BacktestResult.race`` that are not a racer's scores.
RACE_LOG_COLUMNS = ("position", "seq", "prediction_id")


def racer_keys(result: BacktestResult) -> list[str]:
    """The race keys in the outcome log, in the order they first predicted a row (none without a race)."""
    if result.race is None or result.race.empty:
        return []
    log = result.race.sort_values("position")
    keys = [c for c in log.columns if c not in RACE_LOG_COLUMNS]
    first = {k: log["position"].to_numpy()[log[k].notna().to_numpy()].min(initial=np.iinfo(np.int64).max)
             for k in keys}
    return sorted(keys, key=lambda k: (first[k], keys.index(k)))


def race_metric(result: BacktestResult) -> str:
    """The race's per-row metric as its switch decisions name it; without a switch, what ``race.metric`` defaults
    to when ``gate.metric`` is not set (accuracy, or mae for regression) — pass the policy's when you have it."""
    for decision in race_switches(result):
        metric = ((decision.get("evidence") or {}).get("race") or {}).get("metric")
        if metric:
            return str(metric)
    return "accuracy" if result.spec.task == "classification" else "mae"
