"""The policy engine: which rule fires on a tick, and whether hygiene lets it act. Pure: no store, no clock.

Each tick hands in an :class:`Observation` (what the monitors saw; ``None`` for a monitor that did not run because
nothing new arrived) and the previous :class:`RuleState`; the engine returns the new state, at most one
:class:`Proposal` and the rules that fired but were held back (:class:`Suppressed`, with the reason).

* Debounce: a rule fires once its condition held on ``debounce`` consecutive observations of its monitor; a tick on
  which that monitor did not run neither counts nor breaks the streak.
* Hygiene, in order: single flight (a decision is in flight), minimum matured rows, cooldown, daily budget.
  One decision per tick: another rule that fires on the same tick is recorded as ``superseded``.
  A manual request skips cooldown and budget (a person asked); strategy ``incremental`` — and ``auto`` while the
  champion is a River model, which auto keeps learning — skips all but single flight (continual learning is cheap
  and meant to run often). A **severe** change (``Hygiene.severe``, as strategy auto defines it) fired by a change
  trigger (concept drift, performance drop, data drift) skips the cooldown and supersedes a routine decision in flight
  (one a schedule or the label volume started): the proposal names it in ``supersedes`` and the controller cancels it.
* Schedules fire once when their due time has passed (missed runs while the daemon was down coalesce into one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controller.loop.config import Action, LoopConfig, PerformanceDrop, Rule, Schedule


@dataclass(frozen=True)
class ManualRequest:
    """A person's request for a retrain (from the CLI), waiting for the model's next tick."""

    requested_at: datetime
    strategy: str | None = None            # None: the manual rule's action, else auto
    window: dict[str, Any] | None = None   # a window in the policy's syntax
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"requested_at": self.requested_at.isoformat(), "strategy": self.strategy, "window": self.window,
                "note": self.note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManualRequest:
        return cls(requested_at=datetime.fromisoformat(data["requested_at"]), strategy=data.get("strategy"),
                   window=data.get("window"), note=data.get("note"))


@dataclass(frozen=True)
class Observation:
    """What one tick saw. A monitor that did not run on this tick is ``None``."""

    now: datetime
    data_drift: Any = None
    concept_drift: Any = None
    performance: Any = None
    unlearned_rows: int = 0                # matured labeled rows the champion has not learned yet
    new_labels: int = 0                    # ...of which arrived after the last retrain's cut (volume trigger)
    manual: ManualRequest | None = None
    cost: Any = None                       # the staleness-vs-retrain weighing (controller/loop/costs.py)


@dataclass(frozen=True)
class Hygiene:
    """Facts about the model's recent decisions, read from the decision log by the controller."""

    in_flight: str | None = None           # id of the in-flight decision, if any
    last_retrain_at: datetime | None = None
    retrains_last_day: int = 0
    river_champion: bool = False           # strategy auto keeps a River champion learning (incremental)
    in_flight_trigger: str | None = None   # the trigger of the in-flight decision
    severe: str | None = None              # why this tick's change counts as severe (strategy auto's rule), if it does


#: Triggers that report a change of the world; a severe one outruns the hygiene of routine decisions.
CHANGE_TRIGGERS = ("concept_drift", "performance_drop", "data_drift")
#: Triggers of routine refreshes, which a severe change supersedes when one is in flight.
ROUTINE_TRIGGERS = ("schedule", "data_volume", "cost")


@dataclass(frozen=True)
class RuleState:
    """What the engine remembers between ticks (stored as JSON by the controller)."""

    streaks: dict[str, int] = field(default_factory=dict)
    next_due: dict[str, datetime] = field(default_factory=dict)
    drift_at: datetime | None = None       # estimated start of the newest detected concept drift

    def to_dict(self) -> dict[str, Any]:
        return {"streaks": dict(self.streaks), "next_due": {k: v.isoformat() for k, v in self.next_due.items()},
                "drift_at": self.drift_at.isoformat() if self.drift_at else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuleState:
        return cls(streaks=dict(data.get("streaks", {})),
                   next_due={k: datetime.fromisoformat(v) for k, v in data.get("next_due", {}).items()},
                   drift_at=datetime.fromisoformat(data["drift_at"]) if data.get("drift_at") else None)


@dataclass(frozen=True)
class Proposal:
    """A rule fired and hygiene let it through: the controller starts a decision."""

    rule: str
    trigger: str
    action: Action
    evidence: dict[str, Any]
    manual: ManualRequest | None = None
    supersedes: str | None = None          # the routine in-flight decision this severe change replaces


@dataclass(frozen=True)
class Suppressed:
    rule: str
    trigger: str
    reason: str        # in_flight | min_matured_rows | cooldown | budget
    detail: str


@dataclass(frozen=True)
class Evaluation:
    state: RuleState
    proposal: Proposal | None
    suppressed: tuple[Suppressed, ...] = ()


MANUAL_RULE = "manual"


class RuleEngine:
    """Evaluates a policy's rules; build once per model, call :meth:`evaluate` on every tick."""

    def __init__(self, rules: Sequence[Rule], loop: LoopConfig, names: Sequence[str]) -> None:
        self.rules = list(rules)
        self.loop = loop
        self.names = list(names)

    def evaluate(self, obs: Observation, state: RuleState, hygiene: Hygiene) -> Evaluation:
        streaks = dict(state.streaks)
        next_due = dict(state.next_due)
        drift_at = _drift_start(obs.concept_drift) or state.drift_at
        fired: list[tuple[str, Rule, dict[str, Any]]] = []
        for name, rule in zip(self.names, self.rules, strict=True):
            key = rule.when.key
            if key == "schedule":
                holds, evidence = _schedule_due(name, rule.when.schedule, obs.now, next_due)
            elif key == "manual":
                holds, evidence = (True, {"manual": obs.manual.to_dict()}) if obs.manual else (False, {})
            else:
                holds, evidence = _condition(key, rule.when.condition, obs)
            if holds is None:
                continue  # the monitor did not run: the streak neither grows nor breaks
            streaks[name] = streaks.get(name, 0) + 1 if holds else 0
            if holds and streaks[name] >= rule.debounce:
                fired.append((name, rule, {**evidence, "consecutive": streaks[name], "debounce": rule.debounce}))
        if obs.manual is not None and not any(rule.when.key == "manual" for _, rule, _ in fired):
            # A person asked and the policy has no manual rule: act with the request's own strategy (auto default).
            fired.append((MANUAL_RULE, Rule(when={"manual": True}), {"manual": obs.manual.to_dict()}))

        suppressed: list[Suppressed] = []
        proposal = None
        for name, rule, evidence in fired:
            action = _manual_action(rule.do, obs.manual) if rule.when.key == "manual" else rule.do
            held = self._hygiene(rule, action, obs, hygiene)
            if held is not None:
                suppressed.append(Suppressed(name, rule.trigger, *held))
                continue
            if proposal is not None:
                suppressed.append(Suppressed(name, rule.trigger, "superseded",
                                             f"rule {proposal.rule} acted on this tick (one decision per tick)"))
                continue
            severe = _outruns(rule, hygiene)
            if severe:
                evidence = {**evidence, "severe": hygiene.severe}
            proposal = Proposal(name, rule.trigger, action, _with_drift(evidence, drift_at),
                                manual=obs.manual if rule.when.key == "manual" else None,
                                supersedes=hygiene.in_flight if severe else None)
            streaks[name] = 0
        return Evaluation(RuleState(streaks, next_due, drift_at), proposal, tuple(suppressed))

    def _hygiene(self, rule: Rule, action: Action, obs: Observation, h: Hygiene) -> tuple[str, str] | None:
        severe = _outruns(rule, h) or (h.severe is not None and rule.trigger in CHANGE_TRIGGERS)
        if h.in_flight is not None and not _outruns(rule, h):
            return "in_flight", f"decision {h.in_flight} is in flight (one challenger at a time)"
        if action.strategy == "incremental" or (action.strategy == "auto" and h.river_champion):
            return None
        if obs.unlearned_rows < self.loop.min_matured_rows:
            return ("min_matured_rows", (f"{obs.unlearned_rows} matured rows the champion has not learned < "
                                        f"loop.min_matured_rows {self.loop.min_matured_rows}"))
        if rule.when.key == "manual":
            return None
        if h.last_retrain_at is not None and obs.now - h.last_retrain_at < self.loop.cooldown and not severe:
            left = self.loop.cooldown - (obs.now - h.last_retrain_at)
            return "cooldown", f"last retrain started {h.last_retrain_at.isoformat()}; cooldown ends in {left}"
        if h.retrains_last_day >= self.loop.max_retrains_per_day:
            return ("budget", (f"{h.retrains_last_day} retrains in the last 24 h = loop.max_retrains_per_day "
                              f"{self.loop.max_retrains_per_day}"))
        return None


def _outruns(rule: Rule, h: Hygiene) -> bool:
    """A severe change fired by a change trigger, while a routine decision is in flight: it takes that one's place."""
    return (h.severe is not None and rule.trigger in CHANGE_TRIGGERS and h.in_flight is not None
            and h.in_flight_trigger in ROUTINE_TRIGGERS)


def _condition(key: str, condition: Any, obs: Observation) -> tuple[bool | None, dict[str, Any]]:
    """Whether a monitor condition holds on this observation (None: no observation this tick)."""
    if key == "new_labels":
        return obs.new_labels >= condition.at_least, {"new_labels": obs.new_labels, "at_least": condition.at_least}
    if key == "cost":
        if obs.cost is None or not obs.cost.enabled:
            return None, {}
        return obs.cost.pays, {"cost": obs.cost.to_dict()}
    signal = {"concept_drift": obs.concept_drift, "data_drift": obs.data_drift,
              "performance_drop": obs.performance}[key]
    if signal is None or not getattr(signal, "enabled", False):
        return None, {}
    if key == "concept_drift":
        holds = signal.drift or (condition == "warning" and signal.warning)
        return holds, {"detector": signal.detector, "drift": signal.drift, "warning": signal.warning,
                       "detections": len(signal.detections), "rows": signal.batch_rows}
    if key == "data_drift":
        if signal.verdict == "insufficient_rows":
            return None, {}
        return signal.drift_share >= condition.share_at_least, {
            "drift_share": signal.drift_share, "share_at_least": condition.share_at_least,
            "drifted_features": list(signal.drifted_features)}
    if signal.verdict in ("insufficient_labels", "no_reference", "undefined_metric"):
        return None, {}
    evidence = {"metric": signal.metric, "value": signal.value, "reference": signal.reference,
                "drop_absolute": signal.drop_absolute, "drop_relative": signal.drop_relative, "rows": signal.rows}
    if condition == "degraded":
        return signal.verdict == "degraded", {**evidence, "max_drop": signal.max_drop}
    assert isinstance(condition, PerformanceDrop)
    if condition.absolute is not None:
        return (signal.drop_absolute or 0.0) > condition.absolute, {**evidence, "absolute": condition.absolute}
    if signal.drop_relative is None:
        return None, {}
    return signal.drop_relative > condition.relative, {**evidence, "relative": condition.relative}


def _schedule_due(name: str, schedule: Schedule, now: datetime,
                  next_due: dict[str, datetime]) -> tuple[bool, dict[str, Any]]:
    """Fires when the due time has passed; the first sight of a schedule only sets its due time."""
    due = next_due.get(name)
    if due is None:
        next_due[name] = _next_fire(schedule, now)
        return False, {}
    if now < due:
        return False, {}
    next_due[name] = _next_fire(schedule, now)
    return True, {"due": due.isoformat(), "next_due": next_due[name].isoformat()}


def _next_fire(schedule: Schedule, after: datetime) -> datetime:
    if schedule.every is not None:
        return after + schedule.every
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(schedule.cron, timezone="UTC")
    return trigger.get_next_fire_time(None, after + timedelta(microseconds=1))


def _drift_start(signal: Any) -> datetime | None:
    """Where the rows of the new concept start (the since_drift window) for the newest detection.

    ADWIN's change point (``adwin_width``) errs early — the window it keeps after a quick detection still holds
    pre-change rows — so for it the detection itself is the start: a few post-change rows are left out, but no
    pre-change row slips into a window meant for the new concept. A warning run's start is used as it is.
    """
    if signal is None or not getattr(signal, "enabled", False) or not getattr(signal, "drift", False):
        return None
    event = signal.detections[-1]
    point = event.detected_at if event.estimate == "adwin_width" else event.change_point
    return point.time


def _with_drift(evidence: dict[str, Any], drift_at: datetime | None) -> dict[str, Any]:
    return {**evidence, "drift_at": drift_at.isoformat()} if drift_at else evidence


def _manual_action(action: Action, request: ManualRequest | None) -> Action:
    """The manual rule's action, with what the person asked for on top."""
    if request is None:
        return action
    update: dict[str, Any] = {}
    if request.strategy:
        update["strategy"] = request.strategy
    if request.window:
        update["window"] = request.window
    return Action.model_validate({**action.model_dump(exclude_none=True), **update}) if update else action
