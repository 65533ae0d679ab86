"""``Starter``: a rule's proposal becomes a decision — strategy ``auto`` resolved, then a training job for the
runner, or one incremental step of a River champion's learner.

A since-drift retrain right after a drift waits (``waiting_for_rows``, kept in the loop state as a
:class:`~controller.loop.state.DeferredProposal`) until enough rows of the new concept can train, at most
``gate.max_hold``; a severe change supersedes a routine decision still training.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.actions.training import candidate_of
from controller.config import PolicyConfig
from controller.loop.auto import ChampionFacts, choose_strategy
from controller.loop.incremental import IncrementalLearning
from controller.loop.observe import Observer
from controller.loop.report import TickReport
from controller.loop.rules import Proposal
from controller.loop.runners import TrainingJob, TrainingRunner
from controller.loop.scoring import MaturedRows
from controller.loop.state import DeferredProposal, LoopState
from controller.store import EventStore
from controller.store.control import DecisionLog, InFlightConflict
from lineage import VersionInfo
from trainers import NotFineTunableError, RiverModel, SinceDrift, fine_tune_method


class Starter:
    """Starts one model's decisions (``racing``: the model has a race, whose online racers learn every label)."""

    def __init__(self, policy: PolicyConfig, store: EventStore, runner: TrainingRunner, decisions: DecisionLog,
                 observer: Observer, matured: MaturedRows, learning: IncrementalLearning, *, racing: bool,
                 owner: str) -> None:
        self.policy = policy
        self.store = store
        self.runner = runner
        self.decisions = decisions
        self.observer = observer
        self.matured = matured
        self.learning = learning
        self.racing = racing
        self.owner = owner

    def start(self, now: datetime, champion: VersionInfo, state: LoopState, proposal: Proposal,
              report: TickReport) -> bool:
        """Act on ``proposal``; True when a training job went to the runner (its decision is now ``training``)."""
        choice = choose_strategy(
            proposal.action, self._facts(champion, self.matured.loaded(champion.version)), self.policy.auto, now=now,
            default_window=self.policy.retrain.stateless.window,
            concept_drift=self.observer.latest.get("concept_drift"), data_drift=self.observer.latest.get("data_drift"),
            performance=self.observer.latest.get("performance"))
        evidence = {"rule_evidence": proposal.evidence, "strategy_choice": choice.to_dict(),
                    "signals": dict(state.signals), "unlearned_rows": state.unlearned,
                    "new_labels": state.new_labels}
        if choice.strategy == "incremental":
            if self.racing:  # the race's online racers, the champion among them, learn every label
                report.events.append(f"{proposal.rule}: incremental learning is what the race's online racers do on "
                                     "every tick; nothing to start")
                return False
            self.learning.learn(now, champion, proposal.trigger, proposal.rule, evidence, state, report)
            return False
        drift_at = proposal.evidence.get("drift_at")
        if isinstance(choice.window, SinceDrift) and drift_at and self._defer(now, proposal, drift_at, state, report):
            return False
        if state.deferred is not None:
            evidence["deferred_since"] = state.deferred.since.isoformat()
            state.deferred = None
        if proposal.supersedes:
            # A severe change does not wait for a routine refresh (or its cooldown) to finish.
            self.runner.cancel(proposal.supersedes)
            self.decisions.update(proposal.supersedes, status="superseded",
                                  error=f"superseded by rule {proposal.rule}: {proposal.evidence.get('severe')}")
            report.events.append(f"{proposal.supersedes} superseded by rule {proposal.rule} (a severe change)")
            evidence["superseded"] = proposal.supersedes
        candidates = self._candidates(proposal, champion)
        if self.policy.gate.shadow_rows:
            # The newest label this decision's training can see: the gate's shadow rows are the ones after it.
            evidence["trained_through_seq"] = self.matured.newest_seq(now, state.label_cursor)
        try:
            decision = self.decisions.open(
                self.policy.model, trigger=proposal.trigger, action="retrain", rule=proposal.rule,
                strategy=choice.strategy, status="training", champion_version=champion.version,
                evidence={**evidence, "candidates": candidates}, owner=self.owner)
        except InFlightConflict as exc:
            report.events.append(f"not started: {exc}")
            return False
        state.last_retrain_seq, state.new_labels = state.label_cursor, 0
        state.staleness.restart()  # this retrain pays the staleness accrued so far (the cost trigger's ledger)
        report.note(decision.decision_id, f"{decision.decision_id}: {proposal.trigger} via rule {proposal.rule} -> "
                                          f"{choice.strategy} ({choice.rationale}); training {', '.join(candidates)}")
        job = TrainingJob(
            decision_id=decision.decision_id, model=self.policy.model, strategy=choice.strategy,
            candidates=tuple(candidates), as_of=now, trigger=proposal.trigger,
            window=choice.window.model_dump(mode="json") if choice.window is not None else None,
            drift_at=datetime.fromisoformat(drift_at) if drift_at else None,
            timeout=self.policy.loop.training_timeout, champion_version=champion.version)
        self.runner.submit(job)
        return True

    def resume(self, now: datetime, champion: VersionInfo, state: LoopState) -> Proposal | None:
        """The deferred proposal, to start again; None (and a ``skipped`` decision) once it waited gate.max_hold."""
        deferred = state.deferred
        if now - deferred.since > self.policy.gate.max_hold:
            self.decisions.open(self.policy.model, trigger=deferred.trigger, action="skip", status="skipped",
                                rule=deferred.rule, champion_version=champion.version, owner=self.owner,
                                error=f"waited gate.max_hold {self.policy.gate.max_hold} for rows of the new concept",
                                evidence=deferred.evidence)
            state.deferred = None
            return None
        return deferred.proposal()

    def _defer(self, now: datetime, proposal: Proposal, drift_at: str, state: LoopState,
               report: TickReport) -> bool:
        """Wait until enough rows of the new concept can train (the newest rows are the holdout)."""
        post, _ = self.store.labeled_count(self.policy.model, now, since=datetime.fromisoformat(drift_at))
        trainable = post - round(post * self.policy.retrain.holdout_fraction)  # the newest share is the holdout
        if trainable >= self.policy.loop.min_matured_rows:
            return False
        if state.deferred is None:
            state.deferred = DeferredProposal.of(proposal, since=now)
        report.suppressed.append({
            "rule": proposal.rule, "trigger": proposal.trigger, "reason": "waiting_for_rows",
            "detail": f"{post} rows since the drift at {drift_at}, {max(trainable, 0)} of them before the holdout; "
                      f"waiting for loop.min_matured_rows {self.policy.loop.min_matured_rows} to train on"})
        return True

    def _candidates(self, proposal: Proposal, champion: VersionInfo) -> list[str]:
        """Pool members to train: the champion's own family first, then the policy's order, up to the budget."""
        pool = list(self.policy.pool_members())
        wanted = pool if proposal.action.candidates == "all" else list(proposal.action.candidates)
        own = candidate_of(champion.record)
        ordered = ([own] if own in wanted else []) + [name for name in wanted if name != own]
        return ordered[: self.policy.pool.max_candidates]

    @staticmethod
    def _facts(champion: VersionInfo, model: Any) -> ChampionFacts:
        reason = None
        try:
            fine_tune_method(model)
        except NotFineTunableError as exc:
            reason = getattr(exc, "reason", None) or str(exc)
        record = champion.record
        return ChampionFacts(version=champion.version, flavor="river" if isinstance(model, RiverModel) else "sklearn",
                             chain_depth=record.chain_depth if record else 0,
                             window_end=record.window_end if record else None, not_fine_tunable=reason)
