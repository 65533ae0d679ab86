"""Controller.tick(now) end to end on a ManualClock: a drifting stream -> drift detected -> retrain -> gate ->
promotion visible as aliases, lineage and decisions; holds, rejections, probation rollback, failures with backoff.
Real store (SQLite), real MLflow registry (SQLite), real River detectors and scikit-learn models."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.clock import ManualClock
from controller.store.control import DecisionLog
from tests.controller.toy import toy_table
from tests.loop.loop_kit import toy_model


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
