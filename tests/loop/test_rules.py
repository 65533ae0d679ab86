"""The policy engine on scripted signals with a fake clock: debounce, schedules, cooldown, budget, single flight,
minimum rows, manual requests. Pure: the signals are the monitors' real dataclasses, built by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.loop.config import LoopConfig, Rule
from controller.loop.rules import Hygiene, ManualRequest, Observation, RuleEngine, RuleState
from tests.loop.signals_kit import T0, concept, data, performance

LOOP = LoopConfig(cooldown="1h", max_retrains_per_day=2, min_matured_rows=100)


def engine(*rules: dict, loop: LoopConfig = LOOP) -> RuleEngine:
    parsed = [Rule.model_validate(r) for r in rules]
    return RuleEngine(parsed, loop, [r.name or f"{r.trigger}-{i + 1}" for i, r in enumerate(parsed)])


def obs(minutes: float = 0, rows: int = 1000, **signals) -> Observation:
    return Observation(now=T0 + timedelta(minutes=minutes), unlearned_rows=rows, new_labels=rows, **signals)


def test_debounce_needs_consecutive_observations_and_a_missing_observation_keeps_the_streak() -> None:
    e = engine({"name": "drift", "when": {"concept_drift": "drift"}, "debounce": 3})
    state, hygiene = RuleState(), Hygiene()
    fired = []
    # drift, drift, (monitor did not run), no drift, drift, drift, (not run), drift -> fires on the last one only
    script = [True, True, None, False, True, True, None, True]
    for i, drift in enumerate(script):
        result = e.evaluate(obs(i, concept_drift=None if drift is None else concept(drift)), state, hygiene)
        state = result.state
        fired.append(result.proposal is not None)
    assert fired == [False, False, False, False, False, False, False, True]
    assert state.streaks == {"drift": 0}  # reset after it fired


def test_first_firing_rule_wins_and_carries_its_evidence_and_the_drift_start() -> None:
    e = engine({"name": "share", "when": {"data_drift": {"share_at_least": 0.5}}, "do": {"strategy": "stateless"}},
               {"name": "drift", "when": {"concept_drift": "drift"}})
    result = e.evaluate(obs(concept_drift=concept(True), data_drift=data(0.6)), RuleState(), Hygiene())
    assert (result.proposal.rule, result.proposal.trigger, result.proposal.action.strategy) == \
        ("share", "data_drift", "stateless")
    assert result.proposal.evidence["drift_share"] == 0.6
    # Where the new concept starts is remembered for since_drift windows: for ADWIN (whose change-point estimate
    # errs early) the detection itself; for a detector with a warning zone, the warning run's start.
    assert result.proposal.evidence["drift_at"] == T0.isoformat()
    assert result.state.drift_at == T0
    warned = concept(True, estimate="warning_start")
    assert e.evaluate(obs(concept_drift=warned), RuleState(), Hygiene()).state.drift_at == T0 - timedelta(hours=2)


def test_warning_rules_fire_on_the_warning_zone_drift_rules_do_not() -> None:
    warn = engine({"when": {"concept_drift": "warning"}})
    drift = engine({"when": {"concept_drift": "drift"}})
    signal = concept(False, warning=True)
    assert warn.evaluate(obs(concept_drift=signal), RuleState(), Hygiene()).proposal is not None
    assert drift.evaluate(obs(concept_drift=signal), RuleState(), Hygiene()).proposal is None


@pytest.mark.parametrize(("when", "value", "fires"), [
    ({"relative": 0.05}, 0.85, True),       # 5.6 % below 0.9
    ({"relative": 0.05}, 0.86, False),      # 4.4 %
    ({"absolute": 0.03}, 0.86, True),       # 0.04 below
    ({"absolute": 0.05}, 0.86, False),
    ("degraded", 0.80, True),
    ("degraded", 0.89, False),
])
def test_performance_drop_absolute_relative_or_the_monitors_verdict(when, value, fires) -> None:
    e = engine({"when": {"performance_drop": when}})
    assert (e.evaluate(obs(performance=performance(value)), RuleState(), Hygiene()).proposal is not None) is fires


def test_insufficient_data_is_no_observation() -> None:
    e = engine({"when": {"data_drift": {"share_at_least": 0.1}}, "debounce": 2})
    state = e.evaluate(obs(data_drift=data(0.9)), RuleState(), Hygiene()).state
    state = e.evaluate(obs(1, data_drift=data(0.0, verdict="insufficient_rows")), state, Hygiene()).state
    assert e.evaluate(obs(2, data_drift=data(0.9)), state, Hygiene()).proposal is not None


def test_cooldown_budget_in_flight_and_min_rows_hold_a_rule_back_with_the_reason() -> None:
    e = engine({"name": "vol", "when": {"new_labels": {"at_least": 10}}})
    cases = [
        (Hygiene(in_flight="retrain-abc"), 1000, "in_flight"),
        (Hygiene(last_retrain_at=T0 - timedelta(minutes=30)), 1000, "cooldown"),
        (Hygiene(retrains_last_day=2), 1000, "budget"),
        (Hygiene(), 99, "min_matured_rows"),
    ]
    for hygiene, rows, reason in cases:
        result = e.evaluate(obs(rows=rows), RuleState(), hygiene)
        assert result.proposal is None
        assert [(s.rule, s.reason) for s in result.suppressed] == [("vol", reason)]
    # After the cooldown, with budget left: it acts.
    ok = e.evaluate(obs(rows=1000), RuleState(), Hygiene(last_retrain_at=T0 - timedelta(minutes=61),
                                                          retrains_last_day=1))
    assert ok.proposal is not None and ok.suppressed == ()


def test_a_suppressed_rule_keeps_its_streak_and_fires_when_hygiene_allows() -> None:
    e = engine({"name": "drift", "when": {"concept_drift": "drift"}, "debounce": 2})
    state = e.evaluate(obs(0, concept_drift=concept(True)), RuleState(), Hygiene()).state
    held = e.evaluate(obs(1, concept_drift=concept(True)), state, Hygiene(in_flight="x"))
    assert held.proposal is None and held.state.streaks["drift"] == 2
    # A rule fires only on an observation of its monitor: a tick where it did not run changes nothing...
    quiet = e.evaluate(obs(2), held.state, Hygiene())
    assert quiet.proposal is None and quiet.state.streaks["drift"] == 2
    # ...and the next detection fires at once (the streak was kept through the suppression).
    assert e.evaluate(obs(3, concept_drift=concept(True)), quiet.state, Hygiene()).proposal is not None


def test_incremental_skips_cooldown_budget_and_min_rows_but_not_single_flight() -> None:
    e = engine({"when": {"new_labels": {"at_least": 1}}, "do": {"strategy": "incremental"}})
    busy = Hygiene(last_retrain_at=T0, retrains_last_day=99)
    assert e.evaluate(obs(rows=5), RuleState(), busy).proposal is not None
    assert e.evaluate(obs(rows=5), RuleState(), Hygiene(in_flight="x")).proposal is None


def test_schedules_fire_once_per_due_time_and_coalesce_missed_runs() -> None:
    e = engine({"name": "nightly", "when": {"schedule": {"cron": "0 3 * * *"}}},
               {"name": "hourly", "when": {"schedule": {"every": "1h"}}}, loop=LoopConfig(cooldown="1s"))
    start = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
    state = e.evaluate(Observation(now=start, unlearned_rows=500), RuleState(), Hygiene()).state
    assert state.next_due == {"nightly": datetime(2026, 3, 1, 3, 0, tzinfo=UTC),
                              "hourly": datetime(2026, 3, 1, 2, 30, tzinfo=UTC)}
    fired = []
    for minutes in (30, 60, 90, 100, 24 * 60 * 3):  # 02:00, 02:30, 03:00, 03:10, three days later
        now = start + timedelta(minutes=minutes)
        result = e.evaluate(Observation(now=now, unlearned_rows=500), state, Hygiene())
        state = result.state
        fired.append(result.proposal.rule if result.proposal else None)
    # hourly at 02:30 (next 03:30); 03:00 nightly; 03:10 nothing; three days later both are due once (missed
    # runs coalesce): nightly acts (file order) and hourly is recorded as superseded, not silently lost.
    assert fired == [None, "hourly", "nightly", None, "nightly"]
    assert [(s.rule, s.reason) for s in result.suppressed] == [("hourly", "superseded")]
    assert state.next_due["nightly"] == datetime(2026, 3, 4, 3, 0, tzinfo=UTC)


def test_manual_requests_bypass_cooldown_and_budget_and_bring_their_strategy() -> None:
    e = engine({"name": "by-hand", "when": "manual", "do": {"strategy": "finetune", "candidates": ["default"]}})
    request = ManualRequest(requested_at=T0, strategy="stateless", window={"kind": "last_rows", "rows": 50})
    busy = Hygiene(last_retrain_at=T0, retrains_last_day=99)
    result = e.evaluate(Observation(now=T0, unlearned_rows=500, manual=request), RuleState(), busy)
    action = result.proposal.action
    assert (result.proposal.rule, action.strategy, action.window.rows, action.candidates) == \
        ("by-hand", "stateless", 50, ["default"])
    # Without a manual rule the request still acts, with its own strategy; single flight still holds it back.
    bare = engine()
    assert bare.evaluate(Observation(now=T0, unlearned_rows=500, manual=request), RuleState(),
                         busy).proposal.action.strategy == "stateless"
    held = bare.evaluate(Observation(now=T0, unlearned_rows=500, manual=request), RuleState(), Hygiene(in_flight="x"))
    assert held.proposal is None and held.suppressed[0].reason == "in_flight"


def test_rule_state_round_trips_through_json() -> None:
    state = RuleState(streaks={"a": 2}, next_due={"n": T0}, drift_at=T0 - timedelta(hours=1))
    assert RuleState.from_dict(state.to_dict()) == state


def test_auto_on_a_river_champion_learns_as_often_as_incremental() -> None:
    e = engine({"when": {"new_labels": {"at_least": 1}}, "do": {"strategy": "auto"}})
    busy = Hygiene(last_retrain_at=T0, retrains_last_day=99)
    assert e.evaluate(obs(rows=5), RuleState(), busy).proposal is None
    assert e.evaluate(obs(rows=5), RuleState(), Hygiene(last_retrain_at=T0, retrains_last_day=99,
                                                        river_champion=True)).proposal is not None


SEVERE = "abrupt concept drift: mean loss 0.100 -> 0.450 (+0.350 >= auto.abrupt_loss_jump 0.1)"


def test_a_severe_change_supersedes_a_routine_decision_in_flight_and_skips_the_cooldown() -> None:
    e = engine({"name": "drift", "when": {"concept_drift": "drift"}},
               {"name": "volume", "when": {"new_labels": {"at_least": 100}}})
    recent = T0 - timedelta(minutes=5)  # well inside the 1h cooldown
    routine = Hygiene(in_flight="retrain-volume", in_flight_trigger="data_volume", last_retrain_at=recent,
                      severe=SEVERE)
    result = e.evaluate(obs(concept_drift=concept(True)), RuleState(), routine)
    assert result.proposal.rule == "drift" and result.proposal.supersedes == "retrain-volume"
    assert result.proposal.evidence["severe"] == SEVERE
    # Not severe: the routine decision keeps its place, the drift waits.
    held = e.evaluate(obs(concept_drift=concept(True)), RuleState(), Hygiene(
        in_flight="retrain-volume", in_flight_trigger="data_volume", last_retrain_at=recent))
    assert held.proposal is None and held.suppressed[0].reason == "in_flight"
    # A severe change never cancels a decision that answers a change (or a person) itself.
    other = e.evaluate(obs(concept_drift=concept(True)), RuleState(), Hygiene(
        in_flight="retrain-drift", in_flight_trigger="concept_drift", severe=SEVERE))
    assert other.proposal is None and other.suppressed[0].reason == "in_flight"
    # Nothing in flight: severe skips the cooldown (a routine rule would wait), but not the daily budget.
    idle = e.evaluate(obs(concept_drift=concept(True)), RuleState(), Hygiene(last_retrain_at=recent, severe=SEVERE))
    assert idle.proposal.rule == "drift" and idle.proposal.supersedes is None
    spent = e.evaluate(obs(concept_drift=concept(True)), RuleState(), Hygiene(
        last_retrain_at=recent, retrains_last_day=2, severe=SEVERE))
    assert spent.proposal is None and spent.suppressed[0].reason == "budget"
    routine_only = e.evaluate(obs(), RuleState(), Hygiene(last_retrain_at=recent, severe=SEVERE))
    assert routine_only.proposal is None and routine_only.suppressed[0].reason == "cooldown"
