"""The ``gate:`` section of a policy file: what the promotion gate (:mod:`controller.loop.gate`) asks of a challenger.

Its durations are read and written by :mod:`monitors.config` (``max_hold: 3d``), as the gate always read them.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_serializer, field_validator, model_validator

from monitors.config import format_duration, parse_duration
from monitors.metrics import metric_for

__all__ = ["GateConfig", "GateMetric", "Margin"]

GateMetric = Literal["accuracy", "f1", "roc_auc", "log_loss", "mae", "rmse", "r2"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Margin(_Strict):
    """How much better the challenger must be: the larger of the two counts."""

    absolute: float = Field(0.0, ge=0, allow_inf_nan=False, description="At least this much better (metric units).")
    relative: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="And at least this share of the champion's value (0.01 = 1%)."
    )

    def required(self, champion_value: float) -> float:
        """The smallest improvement that counts, in metric units."""
        return max(self.absolute, self.relative * abs(champion_value))


class GateConfig(_Strict):
    """The ``gate:`` section of a policy file.

    ```yaml
    gate:
      metric: f1                 # default: monitors.performance.metric, else accuracy / rmse
      min_rows: 500              # fewer paired matured rows: hold
      floor: 0.7                 # the challenger needs f1 >= 0.7 (<= for log_loss, mae, rmse)
      margin: {absolute: 0.005, relative: 0.01}
      alpha: 0.05
      max_hold: 3d               # still too few rows after this long: reject
      shadow_rows: 200           # a promote waits for 200 rows after the decision, on which it must not be worse
      incremental: not_worse     # a River champion's own checkpoints: promoted unless worse (default: significant)
    ```
    """

    metric: GateMetric | None = Field(
        None, description="Default: the performance monitor's metric (monitors.performance.metric), else accuracy "
        "(classification) / rmse (regression).")
    min_rows: int = Field(200, ge=1, description="Fewer paired matured rows than this: hold.")
    floor: float | None = Field(
        None,
        allow_inf_nan=False,
        description="Absolute floor of the challenger's metric: >= for accuracy/f1/roc_auc/r2, <= for "
        "log_loss/mae/rmse.",
    )
    margin: Margin = Field(default_factory=Margin)
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the one-sided paired test.")
    bootstrap_resamples: int = Field(2000, ge=1, le=1_000_000, description="Regression: paired bootstrap resamples.")
    seed: int = Field(0, ge=0, description="Seed of the paired bootstrap.")
    max_hold: Annotated[
        timedelta,
        WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?(s|m|h|d|w)$", "examples": ["12h", "7d", "2w"]}),
    ] = Field(
        timedelta(days=7),
        description="Too few rows for longer than this: reject instead of hold.",
        json_schema_extra={"default": "7d"},  # as a policy file spells it, not ISO 8601's "P7D"
    )
    positive_class: int | str | bool | None = Field(
        None, description="Binary f1/roc_auc: the positive class; default monitors.performance.positive_class, else "
        "1/True when the classes are 0/1 or False/True (see monitors.metrics)."
    )
    shadow_rows: int = Field(
        0, ge=0, description="After a promote verdict, score both models on this many rows matured after the decision "
        "started and promote only if the challenger is not worse on them (0: off)."
    )
    incremental: Literal["significant", "not_worse"] = Field(
        "significant", description="A checkpoint of the champion's own River learner (its continuation on newer "
        "labels): `significant` judges it like any challenger; `not_worse` promotes it unless it is worse than the "
        "champion on its paired rows (min_rows and floor still apply), so a River champion keeps learning in service."
    )

    @field_validator("max_hold", mode="before")
    @classmethod
    def _parse_max_hold(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_serializer("max_hold", when_used="json")
    def _compact_max_hold(self, value: timedelta) -> str:
        return format_duration(value)

    @model_validator(mode="after")
    def _bootstrap_can_reach_alpha(self) -> GateConfig:
        # The smallest bootstrap p-value is 1 / (B + 1): with fewer resamples no regression challenger could pass.
        if 1.0 / (self.bootstrap_resamples + 1) >= self.alpha:
            needed = math.floor(1.0 / self.alpha)
            if 1.0 / (needed + 1) >= self.alpha:  # 1/alpha was (nearly) a whole number
                needed += 1
            raise ValueError(
                f"bootstrap_resamples={self.bootstrap_resamples} can never give p < alpha {self.alpha} (the smallest "
                f"bootstrap p-value is 1/(resamples+1)); use at least {needed} resamples (default 2000)"
            )
        return self

    def metric_for(self, task: str) -> str:
        """The gate metric for ``task``; ValueError when the configured one does not fit the task."""
        return metric_for(task, self.metric, "gate.metric")
