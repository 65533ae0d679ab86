"""``Controller.tick(now)``: one model's decision loop, the same code for the daemon, the CLI and backtests.

A tick, in order:

1. **Lease** — act only while holding the model's lease (one active controller per model across processes).
2. **In-flight decision** — poll its training job; once trained, the **gate** judges every challenger on the same
   matured rows that neither it nor the champion trained on; ``promote`` moves the aliases, ``hold`` waits for more
   labels (re-judged on later ticks with the rows that arrive), ``reject`` ends the decision.
3. **Probation** — a new champion that does worse than the previous one on matured labels is rolled back.
4. **Observe** — the monitors on what arrived since the last tick (:class:`~controller.loop.observe.Observer`).
5. **Decide** — the rules (:class:`~controller.loop.rules.RuleEngine`) propose at most one decision; strategy
   ``auto`` is resolved (:func:`~controller.loop.auto.choose_strategy`); the training job goes to the runner.

Every decision is a row of the decision log with its evidence; gate verdicts also become an MLflow evaluation run.
A failure inside a tick is logged, recorded and retried with exponential backoff; it never raises out of
:meth:`Controller.tick`, so one model cannot take the daemon or the other models down.

The tick and its order are here; each step it hands over has a module of its own: starting a decision
(:mod:`~controller.loop.starting`), the gate's judging of a trained one (:mod:`~controller.loop.judging`), carrying
out a promotion (:mod:`~controller.loop.promotion`), probation (:mod:`~controller.loop.probation`), a River champion's
incremental learning (:mod:`~controller.loop.incremental`), the race's switches, checkpoints and entries
(:mod:`~controller.loop.race_seat`), and the champion alias as this controller knows it
(:mod:`~controller.loop.champion`).
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from controller.actions.incremental import IncrementalRunner, IncrementalStep
from controller.actions.model_job import ModelJob
from controller.actions.monitoring import MonitorCycle
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.errors import DriftpilotError
from controller.loop.aliases import Aliases
from controller.loop.auto import severity
from controller.loop.gate import PromotionGate
from controller.loop.gate_values import GateVerdict
from controller.loop.incremental import IncrementalLearning
from controller.loop.judging import Judging
from controller.loop.observe import Observer, last_seq
from controller.loop.probation import ProbationWatch
from controller.loop.promotion import Promotion
from controller.loop.race_seat import RaceSeat
from controller.loop.report import TickReport
from controller.loop.rules import Hygiene, ManualRequest, Proposal, RuleEngine
from controller.loop.runners import InlineRunner, JobState, TrainingRunner, train_candidates
from controller.loop.scoring import MaturedRows, ModelCache
from controller.loop.starting import Starter
from controller.loop.state import (
    LoopState,
    clear_manual,
    load_state,
    load_tick_state,
    save_state,
)
from controller.race.driver import RaceDriver
from controller.race.publish import ServedStatePublisher
from controller.store import EventStore
from controller.store.control import Decision, DecisionLog, Leases, new_decision_id
from lineage import ModelRegistry, VersionInfo

__all__ = ["Controller", "TickReport"]

log = logging.getLogger("driftpilot.loop")

DAY = timedelta(days=1)
STATE_HEARTBEAT = timedelta(minutes=1)


class Controller(ModelJob):
    """The decision loop of one model. Build once per model; call :meth:`tick` with the (injected) time."""

    def __init__(self, loaded: LoadedPolicy, store: EventStore, registry: ModelRegistry, clock: Clock, *,
                 runner: TrainingRunner | None = None, decisions: DecisionLog | None = None,
                 leases: Leases | None = None, owner: str = "inline",
                 publisher: ServedStatePublisher | None = None) -> None:
        policy = loaded.config
        self.decisions = decisions or DecisionLog(store, clock)
        # Every part of the loop reaches MLflow through the aliases (see `registry` below): built before ModelJob
        # sets the registry.
        self.aliases = Aliases(registry, policy.registered_model, policy.model, self.decisions, clock)
        super().__init__(loaded, store, registry, clock)
        self.runner = runner or InlineRunner(lambda job: train_candidates(job, loaded, store, registry, clock))
        self.leases = leases
        self.owner = owner
        self.cycle = MonitorCycle(loaded, store, registry, clock)
        self.observer = Observer(self.cycle, policy.loop)
        self.engine = RuleEngine(policy.rules, policy.loop, [policy.rule_name(i) for i in range(len(policy.rules))])
        self.gate = PromotionGate(policy.gate, policy.task)
        self.models = ModelCache(lambda version: self.registry.load(self.name, version=version))
        matured = MaturedRows(store, policy.model, self.models, policy.task, policy.target.classes or (),
                              policy.feature_types)
        self.matured = matured
        self.probation = ProbationWatch(policy.probation, self.gate, matured, self.aliases, self.decisions,
                                        model=policy.model, owner=owner)
        self.promotion = Promotion(self.aliases, self.decisions, self.probation)
        self.judging = Judging(self.gate, matured, self.aliases, self.decisions, self.promotion)
        self.learning = IncrementalLearning(self._incremental_step, self.gate, self.decisions, self.promotion,
                                            model=policy.model, owner=owner, task=policy.task,
                                            classes=policy.target.classes or ())
        # With a `race:` section the champion is chosen by the race on natural labels (controller/race); without
        # one, the gate judges each challenger once and probation watches a new champion.
        self.race = RaceDriver(loaded, store, registry, clock, publisher=publisher) if policy.race else None
        self.starter = Starter(policy, store, self.runner, self.decisions, self.observer, matured, self.learning,
                               racing=self.race is not None, owner=owner)
        self.seat = (RaceSeat(self.race, self.aliases, self.decisions, self.gate, matured, store, model=policy.model,
                              owner=owner) if self.race is not None else None)

    @property
    def name(self) -> str:
        return self.policy.registered_model

    @property
    def registry(self) -> ModelRegistry:
        """MLflow's registry, the one the aliases (and through them every part of the loop) use."""
        return self.aliases.registry

    @registry.setter
    def registry(self, registry: ModelRegistry) -> None:
        # Replacing it on a built controller reaches every part at once (a test's MLflow that goes down).
        self.aliases.registry = registry

    def _incremental_step(self) -> IncrementalStep:
        return IncrementalRunner(self.loaded, self.store, self.registry, self.clock).step()

    # ------------------------------------------------------------------------------------------------ the tick

    def tick(self, now: datetime | None = None) -> TickReport:
        """One pass of the loop as of ``now`` (default: the clock's now). Never raises."""
        now = now or self.clock.now()
        report = TickReport(self.policy.model, now)
        try:
            if self.leases is not None and not self.leases.acquire(self.policy.model, self.owner,
                                                                   self.policy.loop.lease_ttl):
                current = self.leases.current(self.policy.model)
                report.skipped = f"lease held by {current.holder if current else 'another controller'}"
                return report
            state, manual = load_tick_state(self.store, self.policy.model)
        except Exception as exc:  # noqa: BLE001 - the store is down: nothing to record it in; retried next tick
            report.error = f"{type(exc).__name__}: {exc}"
            log.error("%s: tick failed before it started: %s", self.policy.model, report.error)
            return report
        if state.retry_at is not None and now < state.retry_at:
            report.skipped = f"backing off after {state.failures} failed tick(s) until {state.retry_at.isoformat()}"
            return report
        before, last_saved = state.content(), state.last_tick
        try:
            self._tick(now, state, manual, report)
            state.failures, state.retry_at, state.last_error = 0, None, None
        except Exception as exc:  # noqa: BLE001 - recorded as a failed decision, retried with backoff
            self._failed_tick(now, state, report, exc)
        state.last_tick = now
        # An idle tick changes nothing but the time: it is written at most once a minute (an fsync per tick and per
        # model was a quarter of an idle round of 100 models; docs/benchmarks-controller.md).
        if state.content() != before or last_saved is None or now - last_saved >= STATE_HEARTBEAT:
            try:
                save_state(self.store, self.policy.model, state)
            except Exception as exc:  # noqa: BLE001
                report.error = report.error or f"could not save the loop state: {exc}"
        return report

    def _tick(self, now: datetime, state: LoopState, manual: ManualRequest | None, report: TickReport) -> None:
        champion = self.aliases.champion()
        if champion is None:
            report.skipped = "no champion yet (run `driftpilot bootstrap`)"
            return
        report.champion = champion.version
        moves = self.aliases.moves
        read = traffic = None
        if self.seat is not None:
            # First the race: it scores the rows logged since the last tick before anything learns their labels.
            read, traffic = self.seat.tick(now, champion, report)
            if self.aliases.moves != moves:
                champion = self.aliases.champion() or champion
        self._advance(now, champion, state, report)
        if self.race is None:
            self.probation.check(now, self.aliases.champion() if self.aliases.moves != moves else champion, state, report)
        if self.aliases.moves != moves:  # the gate promoted, or probation rolled back
            champion = self.aliases.champion() or champion
        cursor = state.label_cursor
        race = (self.race.metric, self.race.standings) if self.race is not None and self.policy.costs else None
        obs = self.observer.observe(now, champion, state, manual, read=read, traffic=traffic, race=race)
        report.signals = {k: v for k, v in state.signals.items() if v.get("at") == now.isoformat()}
        if self.race is not None and obs.concept_drift is not None and obs.concept_drift.drift:
            joined = self.race.join_past(now, champion)
            if joined:
                report.events.append(f"race: after the drift alarm, past versions race again: {', '.join(joined)}")
        in_flight, retrains = self.decisions.in_flight_and_recent(self.policy.model, since=now - DAY,
                                                                   actions=("retrain",))
        if (self.policy.loop.continuous_learning and self.race is None and champion.flavor == "river"
                and in_flight is None and state.label_cursor != cursor):
            # What River learners are for: every matured label, not batches when a rule fires.
            self.learning.learn(now, champion, "new_labels", "continuous_learning", {}, state, report, quiet=True)
            if self.aliases.moves != moves:
                champion = self.aliases.champion() or champion
        if in_flight is None and state.deferred is not None:
            deferred = self.starter.resume(now, champion, state)
            if deferred is not None:
                self._start(now, champion, state, deferred, report)
            in_flight, retrains = self.decisions.in_flight_and_recent(self.policy.model, since=now - DAY,
                                                                       actions=("retrain",))
        waiting = f"deferred:{state.deferred.rule}" if state.deferred else None
        severe = severity(obs.concept_drift, obs.data_drift, self.policy.auto, obs.performance)
        hygiene = Hygiene(in_flight=in_flight.decision_id if in_flight else waiting,
                          last_retrain_at=retrains[0].created_at if retrains else None,
                          retrains_last_day=len(retrains), river_champion=champion.flavor == "river",
                          in_flight_trigger=in_flight.trigger if in_flight else None, severe=severe)
        evaluation = self.engine.evaluate(obs, state.rules, hygiene)
        state.rules = evaluation.state
        for held in evaluation.suppressed:
            report.suppressed.append(asdict(held))
        if manual is not None and (evaluation.proposal is None or evaluation.proposal.manual is None):
            # A person's request that hygiene refused is answered in the log, not kept forever.
            self._record_refused_manual(manual, evaluation.suppressed, champion)
        if evaluation.proposal is not None:
            report.proposal = {"rule": evaluation.proposal.rule, "trigger": evaluation.proposal.trigger,
                               "action": evaluation.proposal.action.model_dump(mode="json")}
            self._start(now, champion, state, evaluation.proposal, report)
        if manual is not None:
            clear_manual(self.store, self.policy.model)

    # ------------------------------------------------------------------------------------------ start a decision

    def _start(self, now: datetime, champion: VersionInfo, state: LoopState, proposal: Proposal,
               report: TickReport) -> None:
        if self.starter.start(now, champion, state, proposal, report) and isinstance(self.runner, InlineRunner):
            self._advance(now, champion, state, report)  # trained already: judge it in the same tick

    # ------------------------------------------------------------------------------------- the in-flight decision

    def _advance(self, now: datetime, champion: VersionInfo, state: LoopState, report: TickReport) -> None:
        decision = self.decisions.in_flight(self.policy.model)
        if decision is None:
            return
        if decision.status == "training":
            job = self.runner.poll(decision.decision_id)
            if job.status == "running":
                return
            decision = self._trained(decision, job, state, report)
            if decision is None:
                return
        if decision.status == "held":
            if self.seat is not None:
                self.seat.enter(now, champion, decision, report)
            else:
                self.judging.judge(now, champion, decision, state, report)
        elif decision.status == "promoting":
            self.promotion.promote(now, decision, decision.challenger_version, state, report)

    def _trained(self, decision: Decision, job: JobState, state: LoopState, report: TickReport) -> Decision | None:
        results = job.candidate_results()
        if job.status == "unknown":
            error = ("interrupted: no training worker knows this decision (the daemon stopped or restarted while it "
                     "trained); a later trigger starts a new one")
        elif job.status == "failed":
            error = f"training failed: {job.error}"
        elif not any(r.ok for r in results):
            error = "every candidate failed: " + "; ".join(f"{r.candidate}: {r.error}" for r in results)
        else:
            error = None
        if error is not None:
            self.decisions.update(decision.decision_id, status="failed", error=error,
                                  evidence={"challengers": job.results})
            report.note(decision.decision_id, f"{decision.decision_id} failed: {error}")
            return None
        versions = [r.version for r in results if r.ok]
        cpu = [r.cpu_seconds for r in results if r.cpu_seconds is not None]
        if cpu:  # what the next retrain is expected to cost in compute (costs.compute_second)
            state.staleness.retrain_cpu_seconds = sum(cpu)
        report.note(decision.decision_id, f"{decision.decision_id}: trained version(s) {', '.join(versions)}")
        return self.decisions.update(decision.decision_id, status="held", evidence={"challengers": job.results})

    # ------------------------------------------------------------------------------------------- by a person

    def promote_by_hand(self, version: str | None = None, *, force: bool = False,
                        now: datetime | None = None) -> tuple[Decision, GateVerdict]:
        """Promote ``version`` (default: the challenger) through the gate, on the matured rows neither it nor the
        champion trained on; ``force`` promotes whatever the verdict says, and the override is recorded."""
        now = now or self.clock.now()
        champion = self.aliases.champion()
        if champion is None:
            raise DriftpilotError(f"model {self.name!r} has no champion yet; run `driftpilot bootstrap` first")
        target = str(version) if version is not None else self.aliases.current().get("challenger")
        if target is None:
            raise DriftpilotError(f"{self.name!r} has no challenger to promote; name one with --version V "
                                  "(see `driftpilot lineage`)")
        if target == champion.version:
            raise DriftpilotError(f"version {target} of {self.name!r} is the champion already")
        candidate = self.registry.get(self.name, target)
        after = max(last_seq(candidate) or -1, last_seq(champion) or -1)
        rows = self.matured.window(now, after_seq=after)
        sample = self.matured.sample(rows, self.matured.loaded(champion.version), self.matured.loaded(target))
        verdict = self.gate.judge(sample)
        promote = verdict.verdict == "promote" or force
        evidence = {"gate": {"as_of": now.isoformat(), "rows": rows.rows, "fingerprint": rows.fingerprint,
                             "first_seq": after + 1, "champion_version": champion.version,
                             "verdicts": {target: verdict.to_dict()}},
                    "forced": force and verdict.verdict != "promote"}
        decision = self.decisions.open(
            self.policy.model, trigger="manual", action="promote", rule="by-hand",
            status="promoting" if promote else "done", champion_version=champion.version,
            challenger_version=target, verdict=verdict.verdict, evidence=evidence, owner=self.owner)
        self.promotion.log_comparisons(decision, champion, {target: verdict}, rows.rows, rows.fingerprint)
        if promote:
            state = load_state(self.store, self.policy.model)
            self.promotion.promote(now, decision, target, state, TickReport(self.policy.model, now))
            save_state(self.store, self.policy.model, state)
        return self.decisions.get(decision.decision_id) or decision, verdict

    def rollback_by_hand(self, *, now: datetime | None = None) -> Decision:
        """``previous`` -> champion, recorded as a decision (and in MLflow's alias history)."""
        now = now or self.clock.now()
        aliases = self.aliases.current()
        if "previous" not in aliases:
            shown = ", ".join(f"{a} v{v}" for a, v in sorted(aliases.items())) or "none"
            raise DriftpilotError(
                f"cannot roll back {self.name!r}: there is no previous champion (aliases: {shown}); a rollback "
                "cannot be repeated. Make a chosen version champion with `driftpilot promote --config FILE "
                "--version V` (through the gate; add --force to override it); `driftpilot lineage` lists versions")
        decision_id = new_decision_id("rollback")
        change = self.aliases.rollback(decision_id=decision_id, reason="by hand (driftpilot rollback)")
        state = load_state(self.store, self.policy.model)
        state.probation = None
        save_state(self.store, self.policy.model, state)
        return self.decisions.open(
            self.policy.model, trigger="manual", action="rollback", rule="by-hand", status="done",
            champion_version=change.before.get("champion"), challenger_version=change.version, verdict="rollback",
            evidence={"aliases_before": dict(change.before), "aliases_after": dict(change.after)},
            owner=self.owner, decision_id=decision_id)

    # ------------------------------------------------------------------------------------------------ failures

    def _failed_tick(self, now: datetime, state: LoopState, report: TickReport, exc: Exception) -> None:
        state.failures += 1
        backoff = self.policy.loop.backoff
        delay = min(backoff.initial * (2 ** (state.failures - 1)), backoff.max)
        state.retry_at = now + delay
        message = f"{type(exc).__name__}: {exc}"
        state.last_error = message
        report.error = message
        known = isinstance(exc, DriftpilotError) or type(exc).__module__.startswith(("lineage", "trainers"))
        log.error("%s: tick failed (%d in a row), retry in %s: %s", self.policy.model, state.failures, delay,
                  message, exc_info=None if known else exc)
        try:
            self.decisions.open(self.policy.model, trigger="schedule", action="tick", status="failed",
                                error=message, owner=self.owner,
                                evidence={"failures": state.failures, "retry_at": state.retry_at.isoformat(),
                                          "traceback": None if known else traceback.format_exc(limit=8)})
        except Exception as again:  # noqa: BLE001 - the store itself may be what failed
            log.error("%s: could not record the failed tick either: %s", self.policy.model, again)

    def _record_refused_manual(self, manual: ManualRequest, suppressed: Any, champion: VersionInfo) -> None:
        reasons = [s for s in suppressed if s.trigger == "manual"]
        detail = reasons[0].detail if reasons else "another rule acted first"
        self.decisions.open(self.policy.model, trigger="manual", action="skip", status="skipped",
                            rule=reasons[0].rule if reasons else "manual", champion_version=champion.version,
                            error=detail, evidence={"manual": manual.to_dict()}, owner=self.owner)

    # ------------------------------------------------------------------------------------------------ helpers

    def champion_version(self, *, recheck: bool = True) -> str | None:
        """The champion alias as this controller knows it (read again only when something may have moved it).
        ``recheck=False`` trusts what this controller read or moved last, without a store read: for a caller in the
        same thread right after :meth:`tick` (the backtest), where nothing else moves the aliases."""
        return self.aliases.champion_version(recheck=recheck)
