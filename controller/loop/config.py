"""The decision loop's sections of a policy file: ``loop``, ``rules``, ``auto``, ``probation`` and ``candidates``.

Rules are data, never evaluated as code: each rule is one trigger (``when``) and one action (``do``); the first
rule (in file order) whose trigger holds, after its debounce, proposes a decision, which the hygiene settings of
``loop`` may still suppress (single flight, cooldown, daily budget, minimum matured rows).

```yaml
loop:
  tick: 1m                       # how often the daemon ticks this model
  cooldown: 6h                   # after a retrain starts, no new one for this long (manual requests excepted)
  max_retrains_per_day: 4
  min_matured_rows: 200          # fewer matured rows the champion has not trained on: no retrain
rules:
  - name: concept-drift
    when: {concept_drift: drift}            # or: warning
    do: {strategy: auto, window: since_drift}
  - name: drifted-features
    when: {data_drift: {share_at_least: 0.5}}
    debounce: 2                              # two consecutive checks
    do: {strategy: stateless, window: {last_rows: 5000}}
  - name: accuracy-drop
    when: {performance_drop: {relative: 0.05}}   # or {absolute: 0.03}, or: degraded (the monitor's verdict)
    do: {strategy: finetune}
  - name: nightly
    when: {schedule: {cron: "0 3 * * *"}}    # or {every: 1d}
    do: {strategy: stateless, window: {last_duration: 30d}}
  - name: volume
    when: {new_labels: {at_least: 5000}}     # matured labels since the champion's window and the last retrain
    do: {strategy: auto}
  - name: by-hand
    when: manual                             # `driftpilot retrain` / POST .../retrain
    do: {strategy: auto}
  - name: when-it-pays
    when: {cost: pays}                       # staleness cost since the last retrain >= a retrain's (needs `costs:`)
    do: {strategy: auto}
costs: {retrain: 200, error: 1}              # one retrain costs as much as 200 errors (controller/loop/costs.py)
```
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from trainers import WindowConfig
from trainers.windows import parse_duration


def _format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{value.total_seconds():g}s"


#: A duration in YAML: "90s", "30m", "12h", "1d", "2w", "1d12h" (or ISO 8601 "P7D").
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(_format_duration, when_used="json"),
    WithJsonSchema({"type": "string", "examples": ["30m", "12h", "1d"]}),
]

STRATEGIES = ("auto", "stateless", "finetune", "incremental")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------------------- triggers


class DriftShare(_Strict):
    share_at_least: float = Field(gt=0.0, le=1.0, description="Share of tested features that drifted.")


class PerformanceDrop(_Strict):
    """A drop of the live metric below the champion's reference metric (its holdout score)."""

    relative: float | None = Field(None, gt=0.0, lt=1.0, description="Drop as a share of the reference.")
    absolute: float | None = Field(None, gt=0.0, description="Drop in metric units.")

    @model_validator(mode="after")
    def _exactly_one(self) -> PerformanceDrop:
        if (self.relative is None) == (self.absolute is None):
            raise ValueError("performance_drop needs exactly one of relative (e.g. 0.05) or absolute (e.g. 0.03)")
        return self


class Schedule(_Strict):
    cron: str | None = Field(None, description="Five-field crontab expression, e.g. '0 3 * * *' (UTC).")
    every: Duration | None = Field(None, description="A fixed interval, e.g. 1d, 12h.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError("schedule needs exactly one of cron ('0 3 * * *') or every ('1d')")
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"cron {self.cron!r} is not a crontab expression "
                                 f"(minute hour day month weekday, e.g. '0 3 * * *'): {exc}") from None
        return self


class Volume(_Strict):
    at_least: int = Field(ge=1, description="Matured labeled rows since the champion's window and since the last "
                                            "retrain's cut.")


#: The `when` key of each trigger, and the trigger name it records on decisions and versions.
TRIGGER_KINDS = {"concept_drift": "concept_drift", "data_drift": "data_drift",
                 "performance_drop": "performance_drop", "schedule": "schedule", "new_labels": "data_volume",
                 "manual": "manual", "cost": "cost"}


class When(_Strict):
    """Exactly one trigger. ``when: manual`` is short for ``when: {manual: true}``."""

    concept_drift: Literal["drift", "warning"] | None = Field(
        None, description="The River detector on the champion's loss reported a drift (or its warning zone).")
    data_drift: DriftShare | None = Field(
        None, description="Evidently's per-feature tests against the champion's training window.")
    performance_drop: Literal["degraded"] | PerformanceDrop | None = Field(
        None, description="Live metric on matured labels vs the champion's reference; degraded: the monitor's "
                          "own max_drop.")
    schedule: Schedule | None = None
    new_labels: Volume | None = None
    manual: Literal[True] | None = Field(None, description="A person asked (`driftpilot retrain`).")
    cost: Literal["pays"] | None = Field(
        None, description="The errors the champion cost above a fresh model's since the last retrain exceed a "
                          "retrain's cost (the policy's `costs:`; controller/loop/costs.py).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"manual": True} if value == "manual" else value

    @model_validator(mode="after")
    def _exactly_one(self) -> When:
        given = [key for key in TRIGGER_KINDS if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(f"`when` must hold exactly one trigger ({', '.join(TRIGGER_KINDS)}), got "
                             f"{given or 'none'}; write one rule per trigger (the first rule that fires acts)")
        return self

    @property
    def key(self) -> str:
        return next(key for key in TRIGGER_KINDS if getattr(self, key) is not None)

    @property
    def kind(self) -> str:
        """The trigger name recorded on decisions and versions (lineage vocabulary)."""
        return TRIGGER_KINDS[self.key]

    @property
    def condition(self) -> Any:
        return getattr(self, self.key)


# ---------------------------------------------------------------------------------------------------------- actions


def _window_shorthand(value: Any) -> Any:
    """``all`` / ``since_drift`` / ``{last_rows: N}`` / ``{last_duration: 7d}`` -> the trainers' ``{kind: ...}``."""
    if isinstance(value, str):
        return {"kind": value}
    if isinstance(value, dict) and "kind" not in value and len(value) == 1:
        key, inner = next(iter(value.items()))
        if key == "last_rows":
            return {"kind": "last_rows", "rows": inner}
        if key == "last_duration":
            return {"kind": "last_duration", "duration": inner}
        raise ValueError(f"window {value!r} is not understood; write all, since_drift, {{last_rows: N}} or "
                         "{last_duration: 7d}")
    return value


class Action(_Strict):
    """What a rule does: train challenger(s) with a strategy on a window."""

    strategy: Literal["auto", "stateless", "finetune", "incremental"] = Field(
        "auto", description="auto chooses from the evidence (see docs/architecture.md, 'strategy auto').")
    window: Annotated[WindowConfig, BeforeValidator(_window_shorthand)] | None = Field(
        None, description="Stateless training window: all, since_drift, {last_rows: N}, {last_duration: 7d}; "
                          "default: retrain.stateless.window.")
    candidates: list[str] | Literal["all"] = Field(
        "all", description="Members of the candidate pool to train: names, or all.")


class Rule(_Strict):
    """One trigger -> one action."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                             description="Shown in decisions; default: the trigger's kind and position.")
    when: When
    do: Action = Action()
    debounce: int = Field(1, ge=1, description="Consecutive checks that must see the condition before it fires.")

    @property
    def trigger(self) -> str:
        """The trigger kind recorded on decisions and versions (lineage vocabulary)."""
        return self.when.kind


# ---------------------------------------------------------------------------------------------------------- hygiene


class Backoff(_Strict):
    initial: Duration = Field(timedelta(seconds=30), description="Wait after the first failed tick.")
    max: Duration = Field(timedelta(minutes=30), description="Longest wait between retries.")


class LocalExecutor(_Strict):
    """Training jobs run in worker processes the daemon spawns on its own machine (the default)."""

    kind: Literal["local"] = "local"


DASK_ADDRESS_SCHEMES = ("tcp://", "tls://", "ucx://", "ws://", "wss://", "inproc://")


class DaskExecutor(_Strict):
    """Training jobs run as tasks on a Dask cluster (``controller/loop/dask_runner.py``). Every worker must reach the
    policy's event store (PostgreSQL; a SQLite file only when the workers share this machine) and its MLflow
    tracking server, and have driftpilot and the policy's estimator packages installed."""

    kind: Literal["dask"]
    address: str | None = Field(None, description="The Dask scheduler, e.g. tcp://scheduler:8786.")
    connect_timeout: Duration = Field(timedelta(seconds=10),
                                      description="How long to wait for the scheduler when (re)connecting.")

    @model_validator(mode="after")
    def _address_given(self) -> DaskExecutor:
        if self.address is None:
            raise ValueError("loop.executor kind dask needs the scheduler's address, e.g. "
                             "{kind: dask, address: tcp://scheduler:8786} (`dask scheduler` prints it at start); "
                             "or use {kind: local} to train in worker processes on this machine")
        if not self.address.startswith(DASK_ADDRESS_SCHEMES):
            raise ValueError(f"loop.executor address {self.address!r} is not a Dask scheduler address; write "
                             f"{' or '.join(s + 'host:port' for s in DASK_ADDRESS_SCHEMES[:2])}, "
                             "e.g. tcp://scheduler:8786")
        return self


Executor = Annotated[LocalExecutor | DaskExecutor, Field(discriminator="kind")]


class LoopConfig(_Strict):
    """How the daemon ticks this model, and the hygiene every automatic retrain passes."""

    tick: Duration = Field(timedelta(minutes=1), description="Interval of the model's tick job.")
    cooldown: Duration = Field(timedelta(hours=1), description="No new retrain this long after one started.")
    max_retrains_per_day: int = Field(6, ge=1, description="Retrains started in any 24 hours, at most.")
    min_matured_rows: int = Field(200, ge=1, description="Matured rows the champion has not trained on, at least.")
    training_timeout: Duration = Field(timedelta(minutes=30), description="A training job running longer is killed.")
    lease_ttl: Duration = Field(timedelta(minutes=2),
                                description="A daemon that stops renewing its lease loses the model after this.")
    backoff: Backoff = Backoff()
    data_drift_every_rows: int = Field(
        500, ge=1, description="Run the data-drift check when this many new predictions arrived since the last one.")
    continuous_learning: bool = Field(
        False, description="A River champion learns the newly matured labels on every tick (no rule needed); its "
        "checkpoints, at retrain.incremental.checkpoint's cadence, go through the gate (see gate.incremental).")
    executor: Executor = Field(
        default_factory=LocalExecutor,
        description="Where training jobs run: {kind: local} (worker processes of the daemon) or {kind: dask, "
                    "address: tcp://scheduler:8786} (tasks on a Dask cluster).")


class AutoConfig(_Strict):
    """Thresholds of strategy ``auto`` (see docs/architecture.md)."""

    severe_drift_share: float = Field(0.5, gt=0.0, le=1.0,
                                      description="Data-drift share at or above which the model is re-based.")
    abrupt_loss_jump: float = Field(0.1, gt=0.0, description="Mean loss after minus before a detected change at or "
                                                              "above which the change counts as abrupt.")
    severe_performance_drop: float = Field(
        0.1, gt=0.0, lt=1.0, description="Relative drop of the live metric below the champion's reference at or "
                                         "above which the change counts as severe.")
    max_chain_depth: int = Field(5, ge=1, description="A fine-tune chain this deep is re-based (stateless).")
    max_parent_age: Duration = Field(timedelta(days=30),
                                     description="A parent whose window ended longer ago is re-based.")


class ProbationConfig(_Strict):
    """After a promotion: roll back if the new champion does worse than the previous one on matured labels."""

    enabled: bool = True
    duration: Duration = Field(timedelta(days=1), description="How long after a promotion the check runs at least.")
    min_rows: int = Field(200, ge=10, description="Matured rows before the comparison counts; probation goes on past "
                                                 "`duration` until it has them.")
    max_duration: Duration | None = Field(None, description="Still fewer than `min_rows` matured rows this long after "
                                                           "the promotion: it passes without a verdict (default 7 x "
                                                           "duration).")
    window_rows: int = Field(1000, ge=10, description="Compare on the newest rows matured since the promotion, at "
                                                      "most this many (a recent change is not diluted).")
    max_drop: float = Field(0.02, ge=0.0, description="Roll back when new < previous - max_drop (metric units; for "
                                                      "lower-is-better metrics, new > previous + max_drop).")

    @model_validator(mode="after")
    def _max_duration_not_shorter(self) -> ProbationConfig:
        if self.max_duration is not None and self.max_duration < self.duration:
            raise ValueError(f"max_duration ({_format_duration(self.max_duration)}) is shorter than duration "
                             f"({_format_duration(self.duration)}): probation runs at least `duration` and at most "
                             f"`max_duration`")
        return self

    @property
    def longest(self) -> timedelta:
        return self.max_duration if self.max_duration is not None else 7 * self.duration


class CostsConfig(_Strict):
    """What a retrain and an error cost, in one unit (the ``cost`` trigger weighs them; backtests total them)."""

    retrain: float = Field(gt=0.0, description="One retrain's cost, in units of `error` (e.g. 200: a retrain costs "
                                               "as much as 200 wrong predictions, or 200 units of absolute error).")
    error: float = Field(1.0, gt=0.0, description="One error's cost (classification: a wrong prediction; "
                                                  "regression: one unit of absolute error).")
    compute_second: float = Field(0.0, ge=0.0, description="One CPU second of training's cost, added to `retrain` "
                                                           "for the CPU seconds the last retrain took.")
    reference_min_rows: int = Field(200, ge=1, description="A racer is the reference only after this many rows in "
                                                           "its rolling metric.")


class PoolConfig(_Strict):
    """Cost bound of the candidate pool."""

    max_candidates: int = Field(3, ge=1, description="Challengers trained per decision, at most.")
