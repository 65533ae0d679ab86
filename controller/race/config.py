"""The policy's ``race:`` section: which models race the champion on natural labels, and how a switch is decided.

```yaml
race:
  racers:                          # online learners: predict every new row, then learn its label once it matured
    - name: arf
      estimator: {class: river.forest.ARFClassifier, params: {n_models: 10}}
    - name: no-change
      estimator: {class: river.dummy.NoChangeClassifier}
  past_versions: 3                 # the 3 most recent past champions race frozen (again after every drift alarm)
  alpha: 0.05                      # P(a challenger never better by the margin is ever promoted) <= alpha / K
  margin: {absolute: 0.005}        # better by at least half a point of accuracy (regression: {relative: 0.01})
  max_racers: 8                    # champion included; K = max_racers - 1 challengers share alpha
  max_rows_per_tick: 1000          # more new rows than this in a tick: a seeded sample of them is scored
  checkpoint: {every_updates: 5000}  # an online champion is registered this often (and at every promotion)
```

Without a ``race:`` section the loop works as before: the gate judges each challenger once on its holdout and
probation watches a new champion (see docs/architecture.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.loop.gate_config import Margin
from trainers import CheckpointPolicy, EstimatorSpec

#: Metrics the race can judge row by row (the mean of a per-row score). f1 and roc_auc are not sums over rows.
RACE_METRICS = ("accuracy", "log_loss", "mae", "rmse")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RacerSpec(_Strict):
    """One online learner of the race, built from the policy (a River model or a partial_fit scikit-learn model)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9._-]{0,63}$",
                      description="Shown in standings, decisions and lineage; not a version name like v3.")
    estimator: EstimatorSpec


class RaceConfig(_Strict):
    """See the module docstring for an example."""

    racers: list[RacerSpec] = Field(default_factory=list, description="Online learners racing the champion.")
    past_versions: int = Field(3, ge=0, description="Past champions racing frozen (again after each drift alarm).")
    metric: Literal["accuracy", "log_loss", "mae", "rmse"] | None = Field(
        None, description="Per-row metric of the race; default: gate.metric when it is per-row, else accuracy "
                          "(classification) / mae (regression).")
    alpha: float = Field(0.05, gt=0, lt=1, description="Error budget of all switches against one champion.")
    margin: Margin = Field(default_factory=Margin, description="How much better a challenger must be.")
    max_racers: int = Field(8, ge=2, le=64, description="Racers at most, champion included (K = max_racers - 1).")
    restart_every: int = Field(100, ge=1, description="Rows between the start points of the sequential test "
                                                      "(how fast a racer that turned better is noticed).")
    max_rows_per_tick: int | None = Field(None, ge=1, description="Rows scored per tick at most (a seeded sample "
                                                                  "beyond); None: every row.")
    batch_rows: int = Field(20, ge=1, description="Matured rows judged together: frozen racers predict them in one "
                                                  "call and the duels are fed per batch (a switch comes at most this "
                                                  "many rows later; at high volume a tick holds more anyway).")
    seed: int = Field(0, ge=0, description="Seed of the row sample and of the racers' estimators.")
    warm_start_rows: int = Field(5000, ge=0, description="A policy racer joining an existing model first learns "
                                                         "its newest matured rows, at most this many.")
    rolling_rows: int = Field(500, ge=10, description="Rows of the rolling metric shown in standings.")
    challenger_rows: int = Field(5000, ge=100, description="A frozen challenger that neither wins nor loses "
                                                           "within this many paired rows leaves the race.")
    min_rows: int = Field(30, ge=1, description="Scored rows of the champion before a test starts (fixes the "
                                                "loss scale and a relative margin from the past only).")
    persist_every: int = Field(1000, ge=1, description="Labels learned between two saves of the race state "
                                                       "(a restart re-learns at most this many).")
    checkpoint: CheckpointPolicy = Field(
        default_factory=lambda: CheckpointPolicy(every_updates=5000, every_minutes=None),
        description="How often an online champion is registered as a version (also at every promotion).")

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _only_the_cadence_given(cls, value: Any) -> Any:
        """``checkpoint: {every_updates: N}`` means every N updates and nothing else: the incremental trainer's
        10-minute default would register a version every ten minutes of a backtest's simulated clock."""
        if isinstance(value, dict) and "every_minutes" not in value:
            return {**value, "every_minutes": None}
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> RaceConfig:
        names = [r.name for r in self.racers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"race racer names must be unique, repeated: {repeated}")
        if len(self.racers) + 1 > self.max_racers:
            raise ValueError(f"{len(self.racers)} racers and the champion exceed race.max_racers {self.max_racers}; "
                             "raise max_racers or name fewer racers")
        return self

    def metric_for(self, task: str, gate_metric: str | None) -> str:
        """The race's metric: its own, else the gate's when that one is per-row, else the task's default."""
        if self.metric is not None:
            chosen = self.metric
        elif gate_metric in RACE_METRICS:
            chosen = gate_metric
        else:
            chosen = "accuracy" if task == "classification" else "mae"
        fits = ("accuracy", "log_loss") if task == "classification" else ("mae", "rmse")
        if chosen not in fits:
            raise ValueError(f"race.metric {chosen!r} does not fit a {task} model; use one of: {', '.join(fits)}")
        return chosen
