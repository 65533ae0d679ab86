"""Strategy ``auto``: choose stateless, fine-tune or incremental from the evidence, and say why.

In order (the first that applies decides):

1. A River champion keeps learning incrementally — unless the change is severe, then a fresh River model is trained
   on the rows since the drift (a reset).
2. A severe change — an abrupt concept drift (mean loss after the detected change minus before it >=
   ``auto.abrupt_loss_jump``), a live metric ``auto.severe_performance_drop`` (relative) below the champion's
   reference, or a data-drift share >= ``auto.severe_drift_share`` — retrains stateless on the rows since the drift:
   the old concept would only hold the new model back.
3. A fine-tune chain as deep as ``auto.max_chain_depth`` is re-based (stateless), so errors do not compound.
4. A parent whose training window ended more than ``auto.max_parent_age`` ago is re-based (stateless).
5. A champion that cannot be fine-tuned soundly (e.g. HistGradientBoosting) is retrained stateless.
6. Otherwise (moderate or gradual change, schedules, volume): fine-tune the parent on the new rows.

An explicit strategy is honoured when it can run; otherwise the fallback and its reason are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.loop.config import Action, AutoConfig
from trainers import SinceDrift, WindowConfig


@dataclass(frozen=True)
class ChampionFacts:
    """What the choice needs to know about the champion."""

    version: str
    flavor: str                          # "river" | "sklearn"
    chain_depth: int = 0
    window_end: datetime | None = None
    not_fine_tunable: str | None = None  # why the champion cannot be fine-tuned; None when it can


@dataclass(frozen=True)
class StrategyChoice:
    strategy: str                        # stateless | finetune | incremental
    window: WindowConfig | None          # for stateless; None: the policy's retrain.stateless.window
    rationale: str
    requested: str

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "requested": self.requested, "rationale": self.rationale,
                "window": self.window.model_dump(mode="json") if self.window is not None else None}


def severity(concept_drift: Any, data_drift: Any, config: AutoConfig, performance: Any = None) -> str | None:
    """Why the change counts as severe, or None."""
    if concept_drift is not None and getattr(concept_drift, "enabled", False) and concept_drift.drift:
        event = concept_drift.detections[-1]
        if event.loss_before is not None and event.loss_after is not None:
            jump = event.loss_after - event.loss_before
            if jump >= config.abrupt_loss_jump:
                return (f"abrupt concept drift: mean loss {event.loss_before:.3f} -> {event.loss_after:.3f} "
                        f"(+{jump:.3f} >= auto.abrupt_loss_jump {config.abrupt_loss_jump})")
    if (performance is not None and getattr(performance, "enabled", False) and performance.verdict in ("ok", "degraded")
            and performance.drop_relative is not None
            and performance.drop_relative >= config.severe_performance_drop):
        # An error metric (rmse, mae, log_loss) gets worse upwards: say so in the direction it moved.
        side = "worse than" if performance.value > performance.reference else "below"
        return (f"live {performance.metric} {performance.value:.3f} is {performance.drop_relative:.0%} {side} the "
                f"champion's reference {performance.reference:.3f} (>= auto.severe_performance_drop "
                f"{config.severe_performance_drop:.0%})")
    if (data_drift is not None and getattr(data_drift, "enabled", False)
            and data_drift.verdict != "insufficient_rows" and data_drift.drift_share >= config.severe_drift_share):
        return (f"data drift share {data_drift.drift_share:.2f} >= auto.severe_drift_share "
                f"{config.severe_drift_share} ({', '.join(data_drift.drifted_features)})")
    return None


def choose_strategy(action: Action, champion: ChampionFacts, config: AutoConfig, *, now: datetime,
                    default_window: WindowConfig, concept_drift: Any = None, data_drift: Any = None,
                    performance: Any = None) -> StrategyChoice:
    """The strategy for ``action`` (see the module docstring). ``default_window`` is the policy's
    ``retrain.stateless.window``; the rows since a drift fall back to it when no drift time is known."""
    requested = action.strategy
    since_drift = _since_drift(action.window or default_window)

    def pick(strategy: str, rationale: str, window: WindowConfig | None = None) -> StrategyChoice:
        return StrategyChoice(strategy, window if window is not None else action.window, rationale, requested)

    river = champion.flavor == "river"
    if requested == "stateless":
        return pick("stateless", "strategy stateless (policy)")
    if requested == "incremental":
        if river:
            return pick("incremental", "strategy incremental (policy): the River champion keeps learning")
        return pick("stateless", f"strategy incremental needs a River champion; version {champion.version} is "
                                 f"{champion.flavor}: fell back to stateless")
    if requested == "finetune":
        if champion.not_fine_tunable:
            return pick("stateless", f"finetune is not sound for version {champion.version} "
                                     f"({champion.not_fine_tunable}): fell back to stateless")
        return pick("finetune", "strategy finetune (policy)")

    severe = severity(concept_drift, data_drift, config, performance)
    if river:
        if severe:
            return pick("stateless", f"{severe}: reset the River model on the rows since the drift", since_drift)
        return pick("incremental", "River champion: keep learning incrementally on the new rows")
    if severe:
        return pick("stateless", f"{severe}: retrain from scratch on the rows since the drift", since_drift)
    if champion.chain_depth >= config.max_chain_depth:
        return pick("stateless", f"fine-tune chain depth {champion.chain_depth} >= auto.max_chain_depth "
                                 f"{config.max_chain_depth}: re-base with a stateless retrain")
    if champion.window_end is not None and now - champion.window_end > config.max_parent_age:
        return pick("stateless", f"parent window ended {champion.window_end.isoformat()}, more than "
                                 f"auto.max_parent_age {config.max_parent_age} ago: re-base with a stateless retrain")
    if champion.not_fine_tunable:
        return pick("stateless", f"version {champion.version} cannot be fine-tuned soundly "
                                 f"({champion.not_fine_tunable}): stateless")
    return pick("finetune", "no severe change, a short fine-tune chain and a fresh parent: fine-tune the parent "
                            "on the new rows")


def _since_drift(window: WindowConfig) -> SinceDrift:
    """The rows since the drift, falling back to ``window`` when the drift's start is unknown."""
    if isinstance(window, SinceDrift):
        return window
    return SinceDrift(fallback=window)
