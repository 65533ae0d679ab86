"""The typed results that cross modules as JSON keep that JSON exactly: a candidate's training result
(:class:`CandidateResult`, stored in a retrain decision's evidence and sent back by the training workers) and a
deferred proposal (:class:`DeferredProposal`, stored in the loop state)."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from controller.actions.refresh import RefreshOutcome
from controller.loop.config import Action
from controller.loop.results import CandidateResult, challengers
from controller.loop.rules import Proposal
from controller.loop.runners import JobState
from controller.loop.state import DeferredProposal, LoopState


def outcome() -> RefreshOutcome:
    """A refresh outcome with every field set (none left at its default)."""
    return RefreshOutcome(
        version="7", strategy="stateless", requested_strategy="finetune", parent_version="6", train_rows=400,
        holdout_rows=100, holdout_metrics={"accuracy": 0.91}, champion_metrics={"accuracy": 0.85}, chain_depth=0,
        decision_id="d-1", fallback_reason="candidate 'gbm' did not train champion v6", details={"n_iter": 3},
        holdout_first_seq=501, candidate="gbm", holdout_fingerprint="abc123", comparison_run_id="run-9")


def test_every_refresh_outcome_field_is_a_candidate_result_field() -> None:
    assert {f.name for f in fields(RefreshOutcome)} <= {f.name for f in fields(CandidateResult)}
    assert all(getattr(outcome(), f.name) != f.default for f in fields(RefreshOutcome))  # the fixture sets them all


def test_a_trained_candidate_is_the_json_the_loop_always_stored_keys_values_and_order() -> None:
    before = {"candidate": "gbm", "ok": True, **outcome().to_dict(), "cpu_seconds": 1.234}  # the loop's old dict
    result = CandidateResult.trained("gbm", outcome(), cpu_seconds=1.234)
    assert list(result.to_dict().items()) == list(before.items())
    assert json.dumps(result.to_dict()) == json.dumps(before)
    assert (result.ok, result.version, result.holdout_first_seq, result.cpu_seconds) == (True, "7", 501, 1.234)
    again = CandidateResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result and json.dumps(again.to_dict()) == json.dumps(before)


def test_a_failed_candidate_is_its_name_and_error() -> None:
    result = CandidateResult.failed("default", "only 0 labeled rows matured")
    assert json.dumps(result.to_dict()) == json.dumps({"candidate": "default", "ok": False,
                                                      "error": "only 0 labeled rows matured"})
    assert CandidateResult.from_dict(result.to_dict()) == result


def test_an_outcome_field_the_result_does_not_declare_is_refused_not_dropped() -> None:
    class Wider(RefreshOutcome):
        def to_dict(self) -> dict:
            return {**super().to_dict(), "new_field": 1}

    wider = Wider(**{f.name: getattr(outcome(), f.name) for f in fields(RefreshOutcome)})
    with pytest.raises(TypeError, match="new_field"):
        CandidateResult.trained("gbm", wider, cpu_seconds=0.5)


def test_older_records_read_with_what_they_have() -> None:
    evidence = {"challengers": [{"ok": True, "version": "2", "holdout_first_seq": 15},
                                {"candidate": "gbm", "ok": False, "error": "boom"}]}
    first, second = challengers(evidence)
    assert (first.ok, first.version, first.holdout_first_seq, first.cpu_seconds) == (True, "2", 15, None)
    assert (second.candidate, second.ok, second.error) == ("gbm", False, "boom")
    assert challengers({}) == []


def test_a_job_state_carries_the_json_and_reads_it_typed() -> None:
    results = [CandidateResult.trained("gbm", outcome(), cpu_seconds=2.0), CandidateResult.failed("lr", "no rows")]
    message = {"status": "done", "results": [r.to_dict() for r in results]}
    state = JobState.from_message(json.loads(json.dumps(message)))
    assert state.status == "done" and state.error is None
    assert state.results == message["results"] and state.candidate_results() == results
    failed = JobState.from_message({"status": "failed", "error": "OSError: gone"})
    assert (failed.status, failed.results, failed.error, failed.candidate_results()) == ("failed", [], "OSError: gone",
                                                                                        [])


@pytest.mark.parametrize("window", [None, "all", "since_drift", {"last_rows": 500}, {"last_duration": "7d"}])
def test_a_deferred_proposal_is_stored_as_the_loop_always_stored_it(window) -> None:
    now = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    action = Action.model_validate({"strategy": "stateless", "window": window, "candidates": ["gbm"]}
                                   if window is not None else {})
    proposal = Proposal("drift", "concept_drift", action, {"drift_at": now.isoformat(), "p": 0.01})
    before = {"rule": proposal.rule, "trigger": proposal.trigger, "since": now.isoformat(),  # the loop's old dict
              "action": proposal.action.model_dump(mode="json"), "evidence": proposal.evidence}
    deferred = DeferredProposal.of(proposal, since=now)
    assert json.dumps(deferred.to_dict()) == json.dumps(before)

    state = LoopState(deferred=deferred)
    raw = state.to_json()
    assert json.loads(raw)["deferred"] == before
    loaded = LoopState.from_json(raw)
    assert loaded.deferred == deferred and loaded.deferred.since == now
    assert loaded.to_json() == raw and loaded.content() == state.content()  # a tick that changed nothing saves nothing
    assert loaded.deferred.proposal() == proposal
    assert now + timedelta(hours=1) - loaded.deferred.since == timedelta(hours=1)


def test_no_deferred_proposal_is_null() -> None:
    assert json.loads(LoopState().to_json())["deferred"] is None
    assert LoopState.from_json(LoopState().to_json()).deferred is None
