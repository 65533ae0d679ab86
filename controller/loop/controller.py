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
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from controller.actions.incremental import IncrementalRunner
from controller.actions.model_job import ModelJob
from controller.actions.monitoring import MonitorCycle
from controller.actions.training import candidate_of
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.errors import DriftpilotError
from controller.loop.auto import ChampionFacts, choose_strategy, severity
from controller.loop.gate import GateVerdict, PairedSample, PromotionGate
from controller.loop.observe import Observer, last_seq
from controller.loop.results import challengers
from controller.loop.rules import Hygiene, ManualRequest, Proposal, RuleEngine
from controller.loop.runners import InlineRunner, JobState, TrainingJob, TrainingRunner, train_candidates
from controller.loop.scoring import ModelCache, paired_sample
from controller.loop.state import (
    DeferredProposal,
    LoopState,
    Probation,
    clear_manual,
    load_state,
    load_tick_state,
    save_state,
)
from controller.race.driver import RaceDriver
from controller.race.publish import ServedStatePublisher
from controller.race.race import Switch
from controller.store import EventStore, LabeledWindow
from controller.store.control import Decision, DecisionLog, InFlightConflict, Leases, new_decision_id
from controller.store.recent import matured_window
from lineage import Comparison, ModelRegistry, VersionInfo
from trainers import NotFineTunableError, RiverModel, SinceDrift, fine_tune_method

log = logging.getLogger("driftpilot.loop")

DAY = timedelta(days=1)
STATE_HEARTBEAT = timedelta(minutes=1)
#: How long a tick trusts the champion alias it read last. Its own moves re-read it at once, and so does any change
#: of the model's decision log (a `driftpilot promote` / `rollback`, another daemon's decisions); this bounds how
#: late a move that leaves no decision is noticed (the MLflow UI, a raw MLflow client, `bootstrap --force`). The alias read is
#: eight MLflow statements, a third of an idle tick (docs/benchmarks-controller.md).
ALIAS_REFRESH = timedelta(minutes=5)


@dataclass
class TickReport:
    """What one tick did, for logs, tests and backtests."""

    model: str
    now: datetime
    champion: str | None = None
    skipped: str | None = None
    signals: dict[str, Any] = field(default_factory=dict)
    proposal: dict[str, Any] | None = None
    suppressed: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    race: dict[str, Any] | None = None
    error: str | None = None

    def note(self, decision_id: str, text: str) -> None:
        if decision_id not in self.decisions:
            self.decisions.append(decision_id)
        self.events.append(text)
        log.info("%s: %s", self.model, text, extra={"model": self.model, "decision_id": decision_id})

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["now"] = self.now.isoformat()
        return body


class Controller(ModelJob):
    """The decision loop of one model. Build once per model; call :meth:`tick` with the (injected) time."""

    def __init__(self, loaded: LoadedPolicy, store: EventStore, registry: ModelRegistry, clock: Clock, *,
                 runner: TrainingRunner | None = None, decisions: DecisionLog | None = None,
                 leases: Leases | None = None, owner: str = "inline",
                 publisher: ServedStatePublisher | None = None) -> None:
        super().__init__(loaded, store, registry, clock)
        self.runner = runner or InlineRunner(lambda job: train_candidates(job, loaded, store, registry, clock))
        self.decisions = decisions or DecisionLog(store, clock)
        self.leases = leases
        self.owner = owner
        self.cycle = MonitorCycle(loaded, store, registry, clock)
        self.observer = Observer(self.cycle, self.policy.loop)
        self.engine = RuleEngine(self.policy.rules, self.policy.loop,
                                 [self.policy.rule_name(i) for i in range(len(self.policy.rules))])
        self.gate = PromotionGate(self.policy.gate, self.policy.task)
        self.models = ModelCache(lambda version: self.registry.load(self.name, version=version))
        # With a `race:` section the champion is chosen by the race on natural labels (controller/race); without
        # one, the gate judges each challenger once and probation watches a new champion.
        self.race = RaceDriver(loaded, store, registry, clock, publisher=publisher) if self.policy.race else None
        # A version's lineage never changes: read it from MLflow once. Alias moves made here are counted, so a tick
        # re-reads the champion only when it moved it.
        self._versions: dict[str, VersionInfo] = {}
        self._alias_moves = 0
        self._alias_read: tuple[datetime, Any, str] | None = None  # (when, decision-log mark, champion version)

    @property
    def name(self) -> str:
        return self.policy.registered_model

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
        champion = self._champion()
        if champion is None:
            report.skipped = "no champion yet (run `driftpilot bootstrap`)"
            return
        report.champion = champion.version
        moves = self._alias_moves
        read = traffic = None
        if self.race is not None:
            # First the race: it scores the rows logged since the last tick before anything learns their labels.
            read, traffic = self._race_tick(now, champion, report)
            if self._alias_moves != moves:
                champion = self._champion() or champion
        self._advance(now, champion, state, report)
        if self.race is None:
            self._probation(now, self._champion() if self._alias_moves != moves else champion, state, report)
        if self._alias_moves != moves:  # the gate promoted, or probation rolled back
            champion = self._champion() or champion
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
            self._learn(now, champion, "new_labels", "continuous_learning", {}, state, report, quiet=True)
            if self._alias_moves != moves:
                champion = self._champion() or champion
        if in_flight is None and state.deferred is not None:
            self._resume_deferred(now, champion, state, report)
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
        loaded = self.models.get(champion.version)
        choice = choose_strategy(
            proposal.action, self._facts(champion, loaded.model), self.policy.auto, now=now,
            default_window=self.policy.retrain.stateless.window,
            concept_drift=self.observer.latest.get("concept_drift"), data_drift=self.observer.latest.get("data_drift"),
            performance=self.observer.latest.get("performance"))
        evidence = {"rule_evidence": proposal.evidence, "strategy_choice": choice.to_dict(),
                    "signals": dict(state.signals), "unlearned_rows": state.unlearned,
                    "new_labels": state.new_labels}
        if choice.strategy == "incremental":
            if self.race is not None:  # the race's online racers, the champion among them, learn every label
                report.events.append(f"{proposal.rule}: incremental learning is what the race's online racers do on "
                                     "every tick; nothing to start")
                return
            self._learn(now, champion, proposal.trigger, proposal.rule, evidence, state, report)
            return
        drift_at = proposal.evidence.get("drift_at")
        if isinstance(choice.window, SinceDrift) and drift_at and self._defer(now, proposal, drift_at, state, report):
            return
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
            evidence["trained_through_seq"] = self._newest_label_seq(now, state)
        try:
            decision = self.decisions.open(
                self.policy.model, trigger=proposal.trigger, action="retrain", rule=proposal.rule,
                strategy=choice.strategy, status="training", champion_version=champion.version,
                evidence={**evidence, "candidates": candidates}, owner=self.owner)
        except InFlightConflict as exc:
            report.events.append(f"not started: {exc}")
            return
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
        if isinstance(self.runner, InlineRunner):
            self._advance(now, champion, state, report)  # trained already: judge it in the same tick

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

    def _resume_deferred(self, now: datetime, champion: VersionInfo, state: LoopState, report: TickReport) -> None:
        deferred = state.deferred
        if now - deferred.since > self.policy.gate.max_hold:
            self.decisions.open(self.policy.model, trigger=deferred.trigger, action="skip", status="skipped",
                                rule=deferred.rule, champion_version=champion.version, owner=self.owner,
                                error=f"waited gate.max_hold {self.policy.gate.max_hold} for rows of the new concept",
                                evidence=deferred.evidence)
            state.deferred = None
            return
        self._start(now, champion, state, deferred.proposal(), report)

    def _candidates(self, proposal: Proposal, champion: VersionInfo) -> list[str]:
        """Pool members to train: the champion's own family first, then the policy's order, up to the budget."""
        pool = list(self.policy.pool_members())
        wanted = pool if proposal.action.candidates == "all" else list(proposal.action.candidates)
        own = candidate_of(champion.record)
        ordered = ([own] if own in wanted else []) + [name for name in wanted if name != own]
        return ordered[: self.policy.pool.max_candidates]

    def _facts(self, champion: VersionInfo, model: Any) -> ChampionFacts:
        reason = None
        try:
            fine_tune_method(model)
        except NotFineTunableError as exc:
            reason = getattr(exc, "reason", None) or str(exc)
        record = champion.record
        return ChampionFacts(version=champion.version, flavor="river" if isinstance(model, RiverModel) else "sklearn",
                             chain_depth=record.chain_depth if record else 0,
                             window_end=record.window_end if record else None, not_fine_tunable=reason)

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
            if self.race is not None:
                self._enter_race(now, champion, decision, report)
            else:
                self._judge(now, champion, decision, state, report)
        elif decision.status == "promoting":
            self._promote(now, decision, decision.challenger_version, state, report)

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

    def _judge(self, now: datetime, champion: VersionInfo, decision: Decision, state: LoopState,
               report: TickReport) -> None:
        """The gate on every matured row from the holdout on that the champion never trained on either."""
        trained = [r for r in challengers(decision.evidence) if r.ok]
        first = min(r.holdout_first_seq for r in trained)
        after = max(first - 1, last_seq(champion) or -1)
        rows = self.store.labeled_window(self.policy.model, now, after_seq=after,
                                         feature_types=self.policy.feature_types)
        champion_model = self.models.get(champion.version).model
        classes = tuple(self.policy.target.classes or ())
        verdicts: dict[str, GateVerdict] = {}
        for result in trained:
            version = result.version
            sample = paired_sample(rows, champion_model, self.models.get(version).model, self.policy.task, classes)
            verdicts[version] = self.gate.judge(sample, held_for=now - decision.created_at)
        self._confirm_on_shadow(now, champion, decision, verdicts)
        winners = sorted((v for v in verdicts.items() if v[1].verdict == "promote"),
                         key=lambda item: item[1].delta or 0.0, reverse=True)
        held = [v for v, verdict in verdicts.items() if verdict.verdict == "hold"]
        gate_evidence = {"gate": {"as_of": now.isoformat(), "rows": rows.rows, "fingerprint": rows.fingerprint,
                                  "first_seq": after + 1, "champion_version": champion.version,
                                  "verdicts": {v: verdict.to_dict() for v, verdict in verdicts.items()}}}
        if winners:
            version, verdict = winners[0]
            self._log_comparisons(decision, champion, verdicts, rows.rows, rows.fingerprint)
            decision = self.decisions.update(decision.decision_id, status="promoting", verdict="promote",
                                             challenger_version=version, evidence=gate_evidence)
            report.note(decision.decision_id, f"{decision.decision_id}: gate promotes v{version}: {verdict.reason}")
            self._promote(now, decision, version, state, report)
        elif held:
            best = held[0]
            if decision.challenger_version != best:
                self.registry.set_challenger(self.name, best)
            self.decisions.update(decision.decision_id, verdict="hold", challenger_version=best,
                                  evidence=gate_evidence)
            report.note(decision.decision_id, f"{decision.decision_id}: gate holds v{best}: {verdicts[best].reason}")
        else:
            self._log_comparisons(decision, champion, verdicts, rows.rows, rows.fingerprint)
            reasons = "; ".join(f"v{v}: {verdict.reason}" for v, verdict in verdicts.items())
            # The best of the rejected stays `challenger`: visible in MLflow, and `driftpilot promote` re-judges it
            # on the rows that arrive later (or overrides the gate with --force).
            best = max(verdicts, key=lambda v: verdicts[v].delta if verdicts[v].delta is not None else float("-inf"))
            self.registry.set_challenger(self.name, best)
            self.decisions.update(decision.decision_id, status="done", verdict="reject", challenger_version=best,
                                  evidence=gate_evidence)
            report.note(decision.decision_id, f"{decision.decision_id}: gate rejects {reasons}")

    # ------------------------------------------------------------------------------------------------- the race

    def _race_tick(self, now: datetime, champion: VersionInfo, report: TickReport
                   ) -> tuple[tuple[int | None, LabeledWindow] | None, tuple[int, datetime | None]]:
        """Score the new rows, learn the matured labels, and switch when a challenger's evidence says so. Returns
        what it read, for the monitors: the labeled rows (and the cursor they follow) and the new traffic."""
        assert self.race is not None
        tick = self.race.tick(now, champion)
        report.race = {"scored": tick.scored, "matured": tick.matured, "learned": tick.learned,
                       "joined": tick.joined, "left": [vars(d) for d in tick.left]}
        for gone in tick.left:
            report.events.append(f"race: {gone.key} left the race: {gone.reason}")
        if tick.switch is not None:
            self._switch(now, champion, tick.switch, report)
        elif tick.checkpoint_due:
            self._checkpoint(now, champion, report)
        traffic = (tick.logged, tick.newest_event_time)
        if tick.read is None:
            return None, traffic
        sqlite = self.store.engine.dialect.name == "sqlite"
        return (tick.read_after, matured_window(tick.read, self.policy.model, now, None, sqlite,
                                                features=False)), traffic

    def _switch(self, now: datetime, champion: VersionInfo, switch: Switch, report: TickReport) -> None:
        """The race's verdict: the challenger's evidence crossed K/alpha. Register it if it is an online racer, move
        the aliases, record the decision with the evidence, log the comparison run."""
        assert self.race is not None
        decision_id = new_decision_id("race")
        aliases = self.registry.aliases(self.name)
        version = self.race.promote(now, switch.challenger, decision_id=decision_id)
        back = version == aliases.get("previous")
        racer = self.race.race.racers[switch.challenger]
        # A registered version that served before wins again: no training, the version that knew this concept.
        again = racer.kind == "frozen" and racer.origin in ("past", "champion")
        what = "re-promoted" if again else "promoted"
        reason = (f"race {what} v{version} ({switch.challenger}): it beat {switch.champion} on {switch.rows} paired "
                  f"rows ({self.race.metric} "
                  f"{_fmt(switch.challenger_metric)} vs {_fmt(switch.champion_metric)}), evidence "
                  f"{switch.evidence:.4g} >= K/alpha = {switch.threshold:.4g}")
        self.registry.promote(self.name, version, decision_id=decision_id, reason=reason)
        self._alias_moves += 1
        self.race.crowned(now, switch.challenger)
        evidence = {"race": {**switch.to_dict(), "metric": self.race.metric, "challenger_kind": racer.kind,
                             "challenger_origin": racer.origin, "re_promoted": again},
                    "standings": self.race.standings()}
        self.decisions.open(self.policy.model, trigger="race", action="rollback" if back else "promote", rule="race",
                            strategy=racer.kind, status="done", champion_version=champion.version,
                            challenger_version=version, verdict="promote", evidence=evidence, owner=self.owner,
                            decision_id=decision_id)
        metric = self.race.metric
        self.registry.log_comparison(Comparison(
            name=self.name, comparison_id=decision_id, champion_version=champion.version, challenger_version=version,
            champion_metrics={metric: switch.champion_metric} if switch.champion_metric is not None else {},
            challenger_metrics={metric: switch.challenger_metric} if switch.challenger_metric is not None else {},
            # The duel's rows are held out in the race's sense: each was scored before any racer learned its label.
            holdout_rows=switch.rows, holdout_fingerprint=hashlib.sha256(
                f"{decision_id}:{switch.challenger}:{switch.champion}:{switch.rows}".encode()).hexdigest(),
            verdict="promote", p_value=min(1.0, 1.0 / switch.evidence) if switch.evidence > 0 else 1.0,
            test="e-process", params={"decision_id": decision_id, "trigger": "race", "rule": "race",
                                      "metric": metric, "evidence": switch.evidence, "threshold": switch.threshold,
                                      "racer": switch.challenger}))
        report.note(decision_id, f"{decision_id}: {reason} (champion was v{champion.version})")

    def _checkpoint(self, now: datetime, champion: VersionInfo, report: TickReport) -> None:
        """An online champion's state registered at race.checkpoint's cadence; the champion alias follows it (the
        same learner continued), ``previous`` stays what it was."""
        assert self.race is not None
        race = self.race.race
        key = race.champion
        decision_id = new_decision_id("checkpoint")
        version = self.race.register(now, key, decision_id=decision_id, trigger="race")
        self.registry.advance(self.name, version, decision_id=decision_id,
                              reason=f"checkpoint of the serving racer {key} (continues v{champion.version})")
        self._alias_moves += 1
        self.race.crowned(now, key)
        self.decisions.open(self.policy.model, trigger="race", action="checkpoint", rule="race",
                            strategy="incremental", status="done", champion_version=champion.version,
                            challenger_version=version, verdict="continue", owner=self.owner, decision_id=decision_id,
                            evidence={"racer": key, "learned": race.racers[key].learned})
        report.note(decision_id, f"{decision_id}: checkpoint of {key} registered as v{version} (continues "
                                 f"v{champion.version})")

    def _enter_race(self, now: datetime, champion: VersionInfo, decision: Decision, report: TickReport) -> None:
        """Trained challengers enter the race unless their holdout shows them worse than the champion (the holdout
        is only an entry filter: promotion is the race's test on rows scored after they joined)."""
        assert self.race is not None
        trained = [r for r in challengers(decision.evidence) if r.ok]
        first = min(r.holdout_first_seq for r in trained)
        after = max(first - 1, last_seq(champion) or -1)
        rows = self.store.labeled_window(self.policy.model, now, after_seq=after,
                                         feature_types=self.policy.feature_types)
        champion_model = self.models.get(champion.version).model
        classes = tuple(self.policy.target.classes or ())
        verdicts: dict[str, GateVerdict] = {}
        entered, refused = [], {}
        for result in trained:
            version = result.version
            sample = paired_sample(rows, champion_model, self.models.get(version).model, self.policy.task, classes)
            verdict = verdicts[version] = self.gate.judge(sample, held_for=now - decision.created_at)
            # Too few holdout rows to tell (a hold) is no reason to keep it out: the race judges it on what comes.
            judged = verdict.verdict != "hold"
            worse = judged and verdict.delta is not None and verdict.delta < 0
            below_floor = judged and verdict.verdict == "reject" and "floor" in verdict.reason
            if worse or below_floor:
                refused[version] = f"holdout: {verdict.reason}"
                continue
            why_not = self.race.enter(now, version, origin="retrain")
            if why_not is None:
                entered.append(version)
            else:
                refused[version] = why_not
        evidence = {"gate": {"as_of": now.isoformat(), "rows": rows.rows, "fingerprint": rows.fingerprint,
                             "first_seq": after + 1, "champion_version": champion.version, "role": "entry filter",
                             "verdicts": {v: verdict.to_dict() for v, verdict in verdicts.items()}},
                    "race": {"entered": entered, "refused": refused}}
        self.decisions.update(decision.decision_id, status="done", verdict="race" if entered else "reject",
                              challenger_version=entered[0] if entered else None, evidence=evidence)
        text = (f"v{', v'.join(entered)} joined the race" if entered else "no challenger joined the race")
        if refused:
            text += "; refused: " + "; ".join(f"v{v}: {why}" for v, why in refused.items())
        report.note(decision.decision_id, f"{decision.decision_id}: {text}")

    def _confirm_on_shadow(self, now: datetime, champion: VersionInfo, decision: Decision,
                           verdicts: dict[str, GateVerdict]) -> None:
        """gate.shadow_rows: a ``promote`` also needs the rows matured after the decision started (see the gate)."""
        through = decision.evidence.get("trained_through_seq")
        if not self.policy.gate.shadow_rows or not any(v.verdict == "promote" for v in verdicts.values()):
            return
        if through is None:  # a decision started before shadow_rows was configured: judged as it was started
            return
        rows = self.store.labeled_window(self.policy.model, now, after_seq=int(through),
                                         feature_types=self.policy.feature_types)
        champion_model = self.models.get(champion.version).model
        classes = tuple(self.policy.target.classes or ())
        for version, verdict in verdicts.items():
            if verdict.verdict == "promote":
                shadow = paired_sample(rows, champion_model, self.models.get(version).model, self.policy.task,
                                       classes)
                verdicts[version] = self.gate.confirm(verdict, shadow, held_for=now - decision.created_at)

    def _promote(self, now: datetime, decision: Decision, version: str | None, state: LoopState,
                 report: TickReport) -> None:
        """Move the aliases (idempotent, so a decision interrupted here finishes on the next tick)."""
        previous = decision.champion_version
        self.registry.promote(self.name, version, decision_id=decision.decision_id,
                              reason=f"gate verdict of decision {decision.decision_id}")
        self._alias_moves += 1
        self.decisions.update(decision.decision_id, status="done")
        if self.policy.probation.enabled and previous is not None and previous != version:
            # Probation judges the rows that mature after this moment: both versions are scored on them.
            state.probation = Probation(decision_id=decision.decision_id, version=str(version), previous=previous,
                                        since_seq=self._newest_label_seq(now, state),
                                        until=now + self.policy.probation.duration,
                                        ends_by=now + self.policy.probation.longest)
        report.note(decision.decision_id, f"{decision.decision_id}: v{version} is champion (previous v{previous})")

    def _newest_label_seq(self, now: datetime, state: LoopState) -> int | None:
        """The newest labeled row's seq as of ``now`` (the loop's cursor may not have read it yet)."""
        return self.store.labeled_count(self.policy.model, now, after_seq=state.label_cursor)[1] or state.label_cursor

    def _log_comparisons(self, decision: Decision, champion: VersionInfo, verdicts: dict[str, GateVerdict],
                         rows: int, fingerprint: str) -> None:
        """One MLflow evaluation run per challenger: both versions under the same metric keys, same rows."""
        for version, verdict in verdicts.items():
            self.registry.log_comparison(Comparison(
                name=self.name, comparison_id=f"{decision.decision_id}-v{version}", champion_version=champion.version,
                challenger_version=version, champion_metrics=verdict.champion_metrics,
                challenger_metrics=verdict.challenger_metrics, holdout_rows=rows,
                holdout_fingerprint=fingerprint, verdict=verdict.verdict, p_value=verdict.p_value,
                test=verdict.test, params={"decision_id": decision.decision_id, "trigger": decision.trigger,
                                           "rule": decision.rule or "", "metric": verdict.metric}))

    # ------------------------------------------------------------------------------------------------ probation

    def _probation(self, now: datetime, champion: VersionInfo, state: LoopState, report: TickReport) -> None:
        probation = state.probation
        if probation is None:
            return
        if champion.version != probation.version:
            self._end_probation(probation, f"ended: the champion moved to v{champion.version}")
            state.probation = None
            return
        config = self.policy.probation
        fresh = (state.label_cursor or 0) - (probation.checked_seq or probation.since_seq or 0)
        ends_by = probation.ends_by or probation.until
        needed = max(1, config.min_rows // 4) if now < probation.until else 1  # past `until` any new row may end it
        if now < ends_by and fresh < needed:
            return  # too little new since the last check to change its verdict
        probation.checked_seq = state.label_cursor
        rows = self.store.labeled_window(self.policy.model, now, after_seq=probation.since_seq,
                                         max_rows=config.window_rows, feature_types=self.policy.feature_types)
        if rows.rows >= config.min_rows:
            sample = paired_sample(rows, self.models.get(probation.previous).model,
                                   self.models.get(probation.version).model, self.policy.task,
                                   tuple(self.policy.target.classes or ()))
            verdict = self.gate.judge(sample)
            metric = verdict.metric
            new, old = verdict.challenger_metrics.get(metric), verdict.champion_metrics.get(metric)
            worse = (old - new) if verdict.higher_is_better else (new - old)
            evidence = {"metric": metric, "new_champion": new, "previous": old, "rows": rows.rows,
                        "fingerprint": rows.fingerprint, "max_drop": config.max_drop}
            if worse > config.max_drop:
                self._rollback(now, probation, evidence, report)
                state.probation = None
                return
            if now >= probation.until:
                self._end_probation(probation, "passed", evidence)
                state.probation = None
        elif now >= ends_by:
            # Past `duration` a probation waits for min_rows matured rows (rows, not hours, make a verdict), but not
            # beyond max_duration.
            self._end_probation(probation, f"passed without a verdict: only {rows.rows} matured rows < "
                                           f"probation.min_rows {config.min_rows} by max_duration")
            state.probation = None

    def _rollback(self, now: datetime, probation: Probation, evidence: dict[str, Any], report: TickReport) -> None:
        decision_id = new_decision_id("rollback")
        reason = (f"probation: v{probation.version} {evidence['metric']} {evidence['new_champion']:.4f} vs previous "
                  f"v{probation.previous} {evidence['previous']:.4f} on {evidence['rows']} matured rows "
                  f"(drop > probation.max_drop {evidence['max_drop']})")
        self.registry.rollback(self.name, decision_id=decision_id, reason=reason)
        self._alias_moves += 1
        self.decisions.open(self.policy.model, trigger="performance_drop", action="rollback", rule="probation",
                            status="done", champion_version=probation.version,
                            challenger_version=probation.previous, verdict="rollback",
                            evidence={"probation": evidence, "promoted_by": probation.decision_id},
                            owner=self.owner, decision_id=decision_id)
        self._end_probation(probation, f"rolled back by {decision_id}", evidence)
        report.note(decision_id, f"{decision_id}: rolled back v{probation.version} -> v{probation.previous}: {reason}")

    def _end_probation(self, probation: Probation, result: str, evidence: dict[str, Any] | None = None) -> None:
        self.decisions.update(probation.decision_id, evidence={"probation": {"result": result, **(evidence or {})}})

    # ------------------------------------------------------------------------------------ incremental learning

    def _learn(self, now: datetime, champion: VersionInfo, trigger: str, rule: str, evidence: dict[str, Any],
               state: LoopState, report: TickReport, *, quiet: bool = False) -> None:
        """One test-then-train step of the River learner. A checkpoint goes through the gate on its paired rows: the
        learner's prequential predictions vs the champion's logged predictions on the same rows, which the
        learner predicted before it learned them."""
        step = IncrementalRunner(self.loaded, self.store, self.registry, self.clock).step()
        state.last_retrain_seq, state.new_labels = state.label_cursor, 0
        if step.checkpoint_version is None:
            if not quiet:  # continuous learning reports checkpoints only, not every tick's rows
                report.events.append(f"incremental: learned {step.learned} rows")
            return
        version = step.checkpoint_version
        labels, learner, logged = (list(column) for column in zip(*step.paired, strict=True)) if step.paired \
            else ([], [], [])
        dtype = float if self.policy.task == "regression" else object
        fingerprint = f"prequential-v{version}-{len(labels)}"
        sample = PairedSample(labels=np.asarray(labels, dtype=dtype), champion=np.asarray(logged, dtype=dtype),
                              challenger=np.asarray(learner, dtype=dtype),
                              classes=tuple(self.policy.target.classes or ()), fingerprint=fingerprint)
        verdict = self.gate.judge_checkpoint(sample)
        evidence = {**evidence, "learned": step.learned, "gate": {
            "as_of": now.isoformat(), "rows": sample.rows, "fingerprint": fingerprint,
            "paired": "the learner's prequential predictions vs the champion's logged predictions",
            "champion_version": champion.version, "verdicts": {version: verdict.to_dict()}}}
        promote = verdict.verdict == "promote"
        decision = self.decisions.open(
            self.policy.model, trigger=trigger, action="learn", rule=rule, strategy="incremental",
            status="promoting" if promote else "done", champion_version=champion.version,
            challenger_version=version, verdict=verdict.verdict, evidence=evidence, owner=self.owner)
        self._log_comparisons(decision, champion, {version: verdict}, sample.rows, fingerprint)
        report.note(decision.decision_id, f"{decision.decision_id}: checkpoint v{version} after {step.learned} rows, "
                                          f"gate {verdict.verdict}: {verdict.reason}")
        if promote:
            self._promote(now, decision, version, state, report)

    # ------------------------------------------------------------------------------------------- by a person

    def promote_by_hand(self, version: str | None = None, *, force: bool = False,
                        now: datetime | None = None) -> tuple[Decision, GateVerdict]:
        """Promote ``version`` (default: the challenger) through the gate, on the matured rows neither it nor the
        champion trained on; ``force`` promotes whatever the verdict says, and the override is recorded."""
        now = now or self.clock.now()
        champion = self._champion()
        if champion is None:
            raise DriftpilotError(f"model {self.name!r} has no champion yet; run `driftpilot bootstrap` first")
        target = str(version) if version is not None else self.registry.aliases(self.name).get("challenger")
        if target is None:
            raise DriftpilotError(f"{self.name!r} has no challenger to promote; name one with --version V "
                                  "(see `driftpilot lineage`)")
        if target == champion.version:
            raise DriftpilotError(f"version {target} of {self.name!r} is the champion already")
        candidate = self.registry.get(self.name, target)
        after = max(last_seq(candidate) or -1, last_seq(champion) or -1)
        rows = self.store.labeled_window(self.policy.model, now, after_seq=after,
                                         feature_types=self.policy.feature_types)
        sample = paired_sample(rows, self.models.get(champion.version).model, self.models.get(target).model,
                               self.policy.task, tuple(self.policy.target.classes or ()))
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
        self._log_comparisons(decision, champion, {target: verdict}, rows.rows, rows.fingerprint)
        if promote:
            state = load_state(self.store, self.policy.model)
            self._promote(now, decision, target, state, TickReport(self.policy.model, now))
            save_state(self.store, self.policy.model, state)
        return self.decisions.get(decision.decision_id) or decision, verdict

    def rollback_by_hand(self, *, now: datetime | None = None) -> Decision:
        """``previous`` -> champion, recorded as a decision (and in MLflow's alias history)."""
        now = now or self.clock.now()
        aliases = self.registry.aliases(self.name)
        if "previous" not in aliases:
            shown = ", ".join(f"{a} v{v}" for a, v in sorted(aliases.items())) or "none"
            raise DriftpilotError(
                f"cannot roll back {self.name!r}: there is no previous champion (aliases: {shown}); a rollback "
                "cannot be repeated. Make a chosen version champion with `driftpilot promote --config FILE "
                "--version V` (through the gate; add --force to override it); `driftpilot lineage` lists versions")
        decision_id = new_decision_id("rollback")
        change = self.registry.rollback(self.name, decision_id=decision_id, reason="by hand (driftpilot rollback)")
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
        if not recheck and self._alias_read is not None and self._alias_read[1][0] == self._alias_moves:
            return self._alias_read[2]
        return self._champion_alias()

    def _champion(self) -> VersionInfo | None:
        version = self._champion_alias()
        if version is None:
            return None
        if version not in self._versions:
            self._versions[version] = self.registry.get(self.name, version)
        return self._versions[version]

    def _champion_alias(self) -> str | None:
        """The champion alias, re-read from MLflow only when something may have moved it (see ALIAS_REFRESH)."""
        now = self.clock.now()
        newest = self.decisions.newest_mark(self.policy.model)
        # A hand promotion opens its decision before it moves the alias and marks it done after: the status is part
        # of the mark, so a read between the two is not trusted past the move.
        mark = (self._alias_moves, *(newest or ()))
        cached = self._alias_read
        if cached is not None and cached[1] == mark and now - cached[0] < ALIAS_REFRESH:
            return cached[2]
        version = self.registry.champion_version(self.name)
        # No champion yet is never cached: a bootstrap made by hand is picked up on the next tick.
        self._alias_read = (now, mark, version) if version is not None else None
        return version


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
