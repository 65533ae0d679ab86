"""Controller.tick(now) end to end on a ManualClock: a drifting stream -> drift detected -> retrain -> gate ->
promotion visible as aliases, lineage and decisions; holds, rejections, probation rollback, failures with backoff.
Real store (SQLite), real MLflow registry (SQLite), real River detectors and scikit-learn models."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.clock import ManualClock
from controller.store.control import DecisionLog
from tests.loop.loop_kit import toy_model
from tests.toy import toy_table


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


def test_abrupt_drift_is_detected_retrained_gated_and_promoted(tmp_path, mlflow_dir, clock: ManualClock,
                                                               model_name) -> None:
    toy = toy_model(tmp_path, mlflow_dir, model_name, clock)
    controller = toy.controller()
    # Concept "a" first: the champion is right, nothing fires.
    quiet = toy.traffic(toy_table(300, seed=5), controller=controller)
    assert [r.proposal for r in quiet] == [None, None, None]
    assert all(r.error is None for r in quiet)
    # Then the world changes abruptly (concept "b"): the champion's errors jump.
    reports = toy.traffic(toy_table(800, seed=6, concept="b"), controller=controller)
    assert all(r.error is None for r in reports), [r.error for r in reports]
    fired = [r for r in reports if r.proposal]
    assert fired and fired[0].proposal["trigger"] == "concept_drift"
    # Detected 20 rows into the new concept: the since-drift retrain waits until enough new rows can train.
    waited = [s for r in reports for s in r.suppressed if s["reason"] == "waiting_for_rows"]
    assert waited and waited[0]["rule"] == "drift"

    decisions = DecisionLog(toy.store, clock).list(model_name)
    retrains = [d for d in decisions if d.action == "retrain"]
    assert len(retrains) == 1
    decision = retrains[0]
    assert (decision.status, decision.verdict, decision.trigger, decision.rule) == \
        ("done", "promote", "concept_drift", "drift")
    # A severe change: auto retrained stateless on the rows since the drift (after waiting for them).
    assert decision.strategy == "stateless"
    assert decision.evidence["strategy_choice"]["window"]["kind"] == "since_drift"
    assert "below the champion's reference" in decision.evidence["strategy_choice"]["rationale"]
    assert "deferred_since" in decision.evidence
    verdict = decision.evidence["gate"]["verdicts"][decision.challenger_version]
    assert verdict["verdict"] == "promote" and verdict["p_value"] < 0.05
    assert verdict["challenger_value"] > verdict["champion_value"] + 0.2

    assert toy.registry.aliases(model_name) == {"champion": decision.challenger_version, "previous": "1"}
    record = toy.registry.get(model_name, decision.challenger_version).record
    assert (record.parent_version, record.strategy, record.trigger, record.decision_id) == \
        ("1", "stateless", "concept_drift", decision.decision_id)


def test_too_few_rows_hold_the_challenger_until_the_labels_arrive(tmp_path, mlflow_dir, clock: ManualClock,
                                                                  model_name) -> None:
    toy = toy_model(tmp_path, mlflow_dir, model_name, clock, gate="{min_rows: 400}")
    controller = toy.controller()
    toy.traffic(toy_table(300, seed=5), controller=controller)
    reports = toy.traffic(toy_table(400, seed=6, concept="b"), controller=controller)
    log = DecisionLog(toy.store, clock)
    held = log.in_flight(model_name)
    assert held is not None and (held.status, held.verdict) == ("held", "hold")
    verdict = held.evidence["gate"]["verdicts"][held.challenger_version]
    assert verdict["rows"] < 400 and "hold" in verdict["verdict"]
    assert toy.registry.aliases(model_name) == {"champion": "1", "challenger": held.challenger_version}
    assert all(r.error is None for r in reports)
    # More labels arrive: later ticks judge again on the rows that arrived, and promote.
    toy.traffic(toy_table(200, seed=7, concept="b"), controller=controller)
    done = log.get(held.decision_id)
    assert (done.status, done.verdict) == ("done", "promote")
    assert done.evidence["gate"]["rows"] >= 400
    assert toy.registry.aliases(model_name)["champion"] == held.challenger_version


def test_probation_rolls_back_a_champion_that_does_worse_when_the_old_concept_returns(
        tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    toy = toy_model(tmp_path, mlflow_dir, model_name, clock)
    controller = toy.controller()
    toy.traffic(toy_table(300, seed=5), controller=controller)
    toy.traffic(toy_table(600, seed=6, concept="b"), controller=controller)
    assert toy.registry.aliases(model_name) == {"champion": "2", "previous": "1"}
    # The old concept comes back within the probation day: v2 is worse than v1 on the rows matured since.
    reports = toy.traffic(toy_table(300, seed=8, concept="a"), controller=controller)
    rollbacks = DecisionLog(toy.store, clock).list(model_name, actions=("rollback",))
    assert len(rollbacks) == 1
    rollback = rollbacks[0]
    assert (rollback.trigger, rollback.rule, rollback.champion_version, rollback.challenger_version) == \
        ("performance_drop", "probation", "2", "1")
    evidence = rollback.evidence["probation"]
    assert evidence["previous"] > evidence["new_champion"] + 0.02 and evidence["rows"] >= 60
    assert toy.registry.aliases(model_name)["champion"] == "1"
    promotion = DecisionLog(toy.store, clock).get(rollback.evidence["promoted_by"])
    assert promotion.evidence["probation"]["result"] == f"rolled back by {rollback.decision_id}"
    assert any("rolled back v2 -> v1" in e for r in reports for e in r.events)


def test_a_pool_member_of_another_family_replaces_a_champion_that_cannot_learn_the_new_concept(
        tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    pool = """
candidates:
  - name: tree
    estimator: {class: sklearn.tree.DecisionTreeClassifier, params: {max_depth: 4}}
"""
    toy = toy_model(tmp_path, mlflow_dir, model_name, clock, extra=pool)
    controller = toy.controller()
    toy.traffic(toy_table(300, seed=5), controller=controller)
    toy.traffic(toy_table(800, seed=9, concept="c"), controller=controller)  # XOR: no linear model learns it
    decision = DecisionLog(toy.store, clock).list(model_name, actions=("retrain",))[-1]
    assert decision.evidence["candidates"] == ["default", "tree"]
    verdicts = decision.evidence["gate"]["verdicts"]
    by_candidate = {c["candidate"]: str(c["version"]) for c in decision.evidence["challengers"]}
    assert verdicts[by_candidate["default"]]["verdict"] == "reject"     # the linear model's retrain stays weak
    assert verdicts[by_candidate["tree"]]["verdict"] == "promote"
    champion = toy.registry.aliases(model_name)["champion"]
    assert champion == by_candidate["tree"] == decision.challenger_version
    assert toy.registry.get(model_name, champion).record.extra["candidate"] == "tree"
    # Both challengers were judged on the same rows.
    assert len({v["fingerprint"] for v in verdicts.values()}) == 1


class FailingRegistry:
    """An MLflow that is down: every call fails the way lineage reports it."""

    def __getattr__(self, name):
        from lineage import LineageUnavailable

        def fail(*args, **kwargs):
            raise LineageUnavailable("http://127.0.0.1:9", "MLflow at http://127.0.0.1:9 is unreachable "
                                                           "(connection refused)")
        return fail


def test_a_failing_tick_is_recorded_and_retried_with_backoff(tmp_path, mlflow_dir, clock: ManualClock,
                                                           model_name) -> None:
    toy = toy_model(tmp_path, mlflow_dir, model_name, clock)
    down = toy.controller()
    down.registry = FailingRegistry()
    first = down.tick(clock.now())
    assert "unreachable" in first.error
    assert down.tick(clock.advance(seconds=10)).skipped.startswith("backing off after 1 failed tick(s)")
    second = down.tick(clock.advance(seconds=30))  # backoff.initial 30s has passed
    assert "unreachable" in second.error
    assert down.tick(clock.advance(seconds=45)).skipped.startswith("backing off after 2")  # 60 s now
    failed = DecisionLog(toy.store, clock).list(model_name, actions=("tick",))
    assert [d.status for d in failed] == ["failed", "failed"] and "unreachable" in failed[0].error
    # MLflow is back: the next tick after the backoff works and clears it (state lives in the store).
    clock.advance(seconds=20)
    healthy = toy.controller().tick(clock.now())
    assert healthy.error is None and healthy.skipped is None and healthy.champion == "1"


def test_a_manual_retrain_that_is_not_better_is_rejected_and_stays_challenger(tmp_path, mlflow_dir,
                                                                             clock: ManualClock, model_name) -> None:
    from controller.loop.rules import ManualRequest
    from controller.loop.state import pending_manual, request_manual

    toy = toy_model(tmp_path, mlflow_dir, model_name, clock)
    controller = toy.controller()
    toy.traffic(toy_table(300, seed=5), controller=controller)  # the same concept: nothing to gain
    request_manual(toy.store, model_name, ManualRequest(requested_at=clock.now(), strategy="stateless"))
    report = controller.tick(clock.advance(minutes=1))
    assert pending_manual(toy.store, model_name) is None  # consumed
    decision = DecisionLog(toy.store, clock).get(report.decisions[0])
    assert (decision.trigger, decision.rule, decision.strategy, decision.status, decision.verdict) == \
        ("manual", "manual", "stateless", "done", "reject")
    verdict = decision.evidence["gate"]["verdicts"][decision.challenger_version]
    assert verdict["delta"] <= 0.0 or verdict["p_value"] >= 0.05
    assert toy.registry.aliases(model_name) == {"champion": "1", "challenger": decision.challenger_version}


def test_the_champion_alias_is_trusted_until_the_decision_log_changes_or_alias_refresh_passes(
        tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    from controller.loop.aliases import ALIAS_REFRESH
    from controller.loop.rules import ManualRequest
    from controller.loop.state import request_manual

    toy = toy_model(tmp_path, mlflow_dir, model_name, clock)
    controller = toy.controller()
    toy.traffic(toy_table(200, seed=5), controller=controller)
    request_manual(toy.store, model_name, ManualRequest(requested_at=clock.now(), strategy="stateless"))
    controller.tick(clock.advance(minutes=1))
    assert toy.registry.aliases(model_name) == {"champion": "1", "challenger": "2"}  # rejected, kept as challenger

    assert controller.tick(clock.advance(minutes=1)).champion == "1"  # reads the alias: the log changed

    # A move that leaves no decision (the MLflow UI, a raw client) is noticed once ALIAS_REFRESH has passed ...
    toy.registry.promote(model_name, "2")
    assert controller.tick(clock.advance(minutes=1)).champion == "1"
    assert controller.tick(clock.advance(seconds=ALIAS_REFRESH.total_seconds())).champion == "2"
    # ... and `driftpilot rollback` (another Controller, as the CLI runs it) at the next tick: it records a decision.
    toy.controller().rollback_by_hand()
    assert controller.tick(clock.advance(minutes=1)).champion == "1"


RIVER = ("river.linear_model.LogisticRegression", "{optimizer: {class: river.optim.SGD, params: {lr: 0.1}}}")
LEARN_RULE = """\
  - name: follow
    when: {new_labels: {at_least: 50}}
    do: {strategy: incremental}
"""


def river_toy(tmp_path, mlflow_dir, clock: ManualClock, model_name, *, rules: str = LEARN_RULE,
              gate: str = "{min_rows: 60}", continuous: bool = False):
    """A River champion whose learner checkpoints every 200 updates (no time threshold)."""
    from controller.policy_loader import load_policy

    toy = toy_model(tmp_path, mlflow_dir, model_name, clock, rules=rules, estimator=RIVER, gate=gate)
    path = toy.loaded.path
    text = path.read_text().replace(
        "retrain: {holdout_fraction: 0.25, min_rows: 40}\n",
        "retrain: {holdout_fraction: 0.25, min_rows: 40, incremental: {checkpoint: "
        "{every_updates: 200, every_minutes: null}}}\n")
    path.write_text(text.replace("loop: {cooldown: 1h,",
                                 f"loop: {{continuous_learning: {str(continuous).lower()}, cooldown: 1h,"))
    toy.loaded = load_policy(path, environ={})
    assert toy.loaded.config.retrain.incremental.checkpoint.every_updates == 200
    assert toy.loaded.config.loop.continuous_learning is continuous
    return toy


def test_a_river_champion_learns_incrementally_and_a_better_checkpoint_is_promoted(tmp_path, mlflow_dir,
                                                                                   clock: ManualClock,
                                                                                   model_name) -> None:
    toy = river_toy(tmp_path, mlflow_dir, clock, model_name)
    controller = toy.controller()
    reports = toy.traffic(toy_table(300, seed=5), controller=controller)
    reports += toy.traffic(toy_table(700, seed=6, concept="b"), controller=controller)
    assert all(r.error is None for r in reports), [r.error for r in reports]
    learned = [e for r in reports for e in r.events if e.startswith("incremental: learned")]
    assert learned  # steps between checkpoints
    decisions = DecisionLog(toy.store, clock).list(model_name, actions=("learn",))
    assert decisions, "no checkpoint was judged"
    assert {d.strategy for d in decisions} == {"incremental"}
    promoted = [d for d in decisions if d.verdict == "promote"]
    assert promoted, [(d.verdict, d.evidence["gate"]["verdicts"]) for d in decisions]
    first = promoted[-1]  # list() is newest first
    verdict = first.evidence["gate"]["verdicts"][first.challenger_version]
    assert verdict["challenger_value"] > verdict["champion_value"] and verdict["p_value"] < 0.05
    assert first.evidence["gate"]["fingerprint"].startswith("prequential-")
    record = toy.registry.get(model_name, first.challenger_version).record
    assert (record.strategy, record.parent_version is not None) == ("incremental", True)
    assert record.chain_depth >= 1
    assert toy.registry.aliases(model_name)["champion"] == promoted[0].challenger_version


@pytest.mark.parametrize("mode", ["significant", "not_worse"])
def test_not_worse_keeps_a_river_champion_learning_where_significance_would_freeze_it(
        tmp_path, mlflow_dir, clock: ManualClock, model_name, mode) -> None:
    toy = river_toy(tmp_path, mlflow_dir, clock, model_name, gate=f"{{min_rows: 60, incremental: {mode}}}")
    controller = toy.controller()
    reports = toy.traffic(toy_table(800, seed=5), controller=controller)  # one concept: little left to gain
    assert all(r.error is None for r in reports), [r.error for r in reports]
    decisions = DecisionLog(toy.store, clock).list(model_name, actions=("learn",))
    verdicts = [d.evidence["gate"]["verdicts"][d.challenger_version] for d in decisions]
    assert len(verdicts) >= 3 and not any(v["p_value"] is not None and v["p_value"] < 0.05 for v in verdicts)
    promoted = [d for d in decisions if d.verdict == "promote"]
    if mode == "significant":
        assert promoted == [] and toy.registry.aliases(model_name)["champion"] == "1"
    else:
        not_worse = [v for v in verdicts if v["delta"] is not None and v["delta"] >= 0]
        assert not_worse and len(promoted) == len(not_worse)
        assert all("not worse" in v["reason"] for v in verdicts if v["verdict"] == "promote")
        assert toy.registry.aliases(model_name)["champion"] == promoted[0].challenger_version


NEVER_RULE = """\
  - name: volume
    when: {new_labels: {at_least: 100000}}
    do: {strategy: auto}
"""


@pytest.mark.parametrize("continuous", [False, True])
def test_continuous_learning_keeps_a_river_champion_learning_without_any_rule(
        tmp_path, mlflow_dir, clock: ManualClock, model_name, continuous) -> None:
    toy = river_toy(tmp_path, mlflow_dir, clock, model_name, rules=NEVER_RULE,
                    gate="{min_rows: 60, incremental: not_worse}", continuous=continuous)
    controller = toy.controller()
    reports = toy.traffic(toy_table(300, seed=5), controller=controller)
    reports += toy.traffic(toy_table(700, seed=6, concept="b"), controller=controller)
    assert all(r.error is None for r in reports), [r.error for r in reports]
    learned = DecisionLog(toy.store, clock).list(model_name, actions=("learn",))
    if not continuous:  # no rule fires: the River champion serves its bootstrap version throughout
        assert learned == [] and toy.registry.aliases(model_name)["champion"] == "1"
        return
    # Every tick learned the new labels; a checkpoint every 200 of them was judged (1,000 rows: 5 checkpoints).
    assert [(d.rule, d.trigger, d.strategy) for d in learned] == [("continuous_learning", "new_labels",
                                                                   "incremental")] * 5
    assert not any("incremental: learned" in e for r in reports for e in r.events)  # only checkpoints are news
    promoted = [d for d in learned if d.verdict == "promote"]
    assert promoted and toy.registry.aliases(model_name)["champion"] == promoted[0].challenger_version
    # The learner followed concept b: its newest checkpoint beats the champion's logged predictions on b.
    newest = learned[0].evidence["gate"]["verdicts"][learned[0].challenger_version]
    assert newest["challenger_value"] > 0.8


def _manual_retrain_on_the_new_concept(tmp_path, mlflow_dir, clock: ManualClock, model_name):
    """Concept a, then b; a person asks for a stateless retrain on the last 600 rows (all b)."""
    from controller.loop.rules import ManualRequest
    from controller.loop.state import request_manual

    toy = toy_model(tmp_path, mlflow_dir, model_name, clock, rules=NEVER_RULE, gate="{min_rows: 60, shadow_rows: 40}")
    controller = toy.controller()
    toy.traffic(toy_table(300, seed=5), controller=controller)
    toy.traffic(toy_table(600, seed=6, concept="b"), controller=controller)
    request_manual(toy.store, model_name, ManualRequest(requested_at=clock.now(), strategy="stateless",
                                                        window={"last_rows": 600}))
    report = controller.tick(clock.advance(minutes=1))
    assert report.error is None, report.error
    decision = DecisionLog(toy.store, clock).get(report.decisions[0])
    # The holdout says promote, but no row has matured since the decision: the shadow holds it.
    assert (decision.status, decision.verdict) == ("held", "hold")
    assert "shadow: 0 of shadow_rows 40 rows matured after the decision" in \
        decision.evidence["gate"]["verdicts"][decision.challenger_version]["reason"]
    assert toy.registry.aliases(model_name)["champion"] == "1"
    return toy, controller, decision


def test_shadow_rows_reject_a_challenger_that_loses_on_the_rows_after_its_decision(
        tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    toy, controller, decision = _manual_retrain_on_the_new_concept(tmp_path, mlflow_dir, clock, model_name)
    toy.traffic(toy_table(50, seed=8, concept="a"), controller=controller, batch=50)  # the old concept is back
    done = DecisionLog(toy.store, clock).get(decision.decision_id)
    assert (done.status, done.verdict) == ("done", "reject")
    verdict = done.evidence["gate"]["verdicts"][done.challenger_version]
    assert verdict["p_value"] < 0.05 and verdict["delta"] > 0  # the holdout alone would have promoted it
    shadow = verdict["details"]["shadow"]
    assert shadow["rows"] == 50 and shadow["challenger"] < shadow["champion"]
    assert "worse on the shadow rows" in verdict["reason"]
    assert toy.registry.aliases(model_name)["champion"] == "1"


def test_shadow_rows_promote_once_the_rows_after_the_decision_agree(
        tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    toy, controller, decision = _manual_retrain_on_the_new_concept(tmp_path, mlflow_dir, clock, model_name)
    toy.traffic(toy_table(50, seed=8, concept="b"), controller=controller, batch=50)
    done = DecisionLog(toy.store, clock).get(decision.decision_id)
    assert (done.status, done.verdict) == ("done", "promote")
    shadow = done.evidence["gate"]["verdicts"][done.challenger_version]["details"]["shadow"]
    # Exactly the labels stored after the decision's newest trainable one.
    after = toy.store.labeled_window(model_name, clock.now(), after_seq=done.evidence["trained_through_seq"])
    assert shadow["rows"] == after.rows == 50 and shadow["fingerprint"] == after.fingerprint
    assert shadow["challenger"] > shadow["champion"]
    assert toy.registry.aliases(model_name)["champion"] == done.challenger_version


def _promoted_then_two_quiet_days(tmp_path, mlflow_dir, clock: ManualClock, model_name, probation: str):
    """v2 promoted on concept b with fewer than probation.min_rows rows after it, then two days without traffic:
    the duration (1d) is over, but probation is still open."""
    toy = toy_model(tmp_path, mlflow_dir, model_name, clock, probation=probation)
    controller = toy.controller()
    toy.traffic(toy_table(300, seed=5), controller=controller)
    toy.traffic(toy_table(400, seed=6, concept="b"), controller=controller)
    assert toy.registry.aliases(model_name) == {"champion": "2", "previous": "1"}
    promotion = DecisionLog(toy.store, clock).list(model_name, actions=("retrain",))[0]
    controller.tick(clock.advance(days=2))
    assert "probation" not in DecisionLog(toy.store, clock).get(promotion.decision_id).evidence
    return toy, controller, promotion


def test_probation_waits_past_its_duration_for_min_rows_then_judges(
        tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    toy, controller, _ = _promoted_then_two_quiet_days(
        tmp_path, mlflow_dir, clock, model_name, "{min_rows: 300, window_rows: 300, duration: 1d, max_drop: 0.02}")
    # Then the old concept returns: the verdict on min_rows rows still rolls v2 back.
    toy.traffic(toy_table(400, seed=8, concept="a"), controller=controller)
    rollbacks = DecisionLog(toy.store, clock).list(model_name, actions=("rollback",))
    assert len(rollbacks) == 1 and rollbacks[0].evidence["probation"]["rows"] >= 300
    assert toy.registry.aliases(model_name)["champion"] == "1"


def test_probation_without_enough_rows_ends_at_max_duration(
        tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    toy, controller, promotion = _promoted_then_two_quiet_days(
        tmp_path, mlflow_dir, clock, model_name, "{min_rows: 300, window_rows: 300, duration: 1d, max_duration: 3d}")
    controller.tick(clock.advance(days=1, seconds=1))
    result = DecisionLog(toy.store, clock).get(promotion.decision_id).evidence["probation"]["result"]
    assert result.startswith("passed without a verdict") and "by max_duration" in result
