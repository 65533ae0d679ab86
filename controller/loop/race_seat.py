"""``RaceSeat``: the controller's side of the race (with a ``race:`` section; the race itself is :mod:`controller.race`).

The race decides which model serves; this carries its verdicts out as the loop carries out the gate's: a switch
registers the winner if it is an online racer, moves the aliases, records a decision and an MLflow comparison run;
an online champion's checkpoint moves the champion alias along its learner; a trained decision's challengers enter
the race unless their holdout shows them worse than the champion.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from controller.loop.aliases import Aliases
from controller.loop.gate import PromotionGate
from controller.loop.gate_values import GateVerdict
from controller.loop.judging import Holdout
from controller.loop.report import TickReport
from controller.loop.scoring import MaturedRows
from controller.race.driver import RaceDriver
from controller.race.race import Switch
from controller.store import EventStore, LabeledWindow
from controller.store.control import Decision, DecisionLog, new_decision_id
from controller.store.recent import matured_window
from lineage import Comparison, VersionInfo


class RaceSeat:
    """One model's race (``driver``), seated in the decision loop."""

    def __init__(self, driver: RaceDriver, aliases: Aliases, decisions: DecisionLog, gate: PromotionGate,
                 matured: MaturedRows, store: EventStore, *, model: str, owner: str) -> None:
        self.driver = driver
        self.aliases = aliases
        self.decisions = decisions
        self.gate = gate
        self.matured = matured
        self.store = store
        self.model = model
        self.owner = owner

    def tick(self, now: datetime, champion: VersionInfo, report: TickReport
             ) -> tuple[tuple[int | None, LabeledWindow] | None, tuple[int, datetime | None]]:
        """Score the new rows, learn the matured labels, and switch when a challenger's evidence says so. Returns
        what it read, for the monitors: the labeled rows (and the cursor they follow) and the new traffic."""
        tick = self.driver.tick(now, champion)
        report.race = {"scored": tick.scored, "matured": tick.matured, "learned": tick.learned,
                       "joined": tick.joined, "left": [vars(d) for d in tick.left]}
        for gone in tick.left:
            report.events.append(f"race: {gone.key} left the race: {gone.reason}")
        if tick.switch is not None:
            self.switch(now, champion, tick.switch, report)
        elif tick.checkpoint_due:
            self.checkpoint(now, champion, report)
        traffic = (tick.logged, tick.newest_event_time)
        if tick.read is None:
            return None, traffic
        sqlite = self.store.engine.dialect.name == "sqlite"
        return (tick.read_after, matured_window(tick.read, self.model, now, None, sqlite, features=False)), traffic

    def switch(self, now: datetime, champion: VersionInfo, switch: Switch, report: TickReport) -> None:
        """The race's verdict: the challenger's evidence crossed K/alpha. Register it if it is an online racer, move
        the aliases, record the decision with the evidence, log the comparison run."""
        driver = self.driver
        decision_id = new_decision_id("race")
        aliases = self.aliases.current()
        version = driver.promote(now, switch.challenger, decision_id=decision_id)
        back = version == aliases.get("previous")
        racer = driver.race.racers[switch.challenger]
        # A registered version that served before wins again: no training, the version that knew this concept.
        again = racer.kind == "frozen" and racer.origin in ("past", "champion")
        what = "re-promoted" if again else "promoted"
        reason = (f"race {what} v{version} ({switch.challenger}): it beat {switch.champion} on {switch.rows} paired "
                  f"rows ({driver.metric} "
                  f"{_fmt(switch.challenger_metric)} vs {_fmt(switch.champion_metric)}), evidence "
                  f"{switch.evidence:.4g} >= K/alpha = {switch.threshold:.4g}")
        self.aliases.promote(version, decision_id=decision_id, reason=reason)
        driver.crowned(now, switch.challenger)
        evidence = {"race": {**switch.to_dict(), "metric": driver.metric, "challenger_kind": racer.kind,
                             "challenger_origin": racer.origin, "re_promoted": again},
                    "standings": driver.standings()}
        self.decisions.open(self.model, trigger="race", action="rollback" if back else "promote", rule="race",
                            strategy=racer.kind, status="done", champion_version=champion.version,
                            challenger_version=version, verdict="promote", evidence=evidence, owner=self.owner,
                            decision_id=decision_id)
        metric = driver.metric
        self.aliases.registry.log_comparison(Comparison(
            name=self.aliases.name, comparison_id=decision_id, champion_version=champion.version, challenger_version=version,
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

    def checkpoint(self, now: datetime, champion: VersionInfo, report: TickReport) -> None:
        """An online champion's state registered at race.checkpoint's cadence; the champion alias follows it (the
        same learner continued), ``previous`` stays what it was."""
        race = self.driver.race
        key = race.champion
        decision_id = new_decision_id("checkpoint")
        version = self.driver.register(now, key, decision_id=decision_id, trigger="race")
        self.aliases.advance(version, decision_id=decision_id,
                           reason=f"checkpoint of the serving racer {key} (continues v{champion.version})")
        self.driver.crowned(now, key)
        self.decisions.open(self.model, trigger="race", action="checkpoint", rule="race",
                            strategy="incremental", status="done", champion_version=champion.version,
                            challenger_version=version, verdict="continue", owner=self.owner, decision_id=decision_id,
                            evidence={"racer": key, "learned": race.racers[key].learned})
        report.note(decision_id, f"{decision_id}: checkpoint of {key} registered as v{version} (continues "
                                 f"v{champion.version})")

    def enter(self, now: datetime, champion: VersionInfo, decision: Decision, report: TickReport) -> None:
        """Trained challengers enter the race unless their holdout shows them worse than the champion (the holdout
        is only an entry filter: promotion is the race's test on rows scored after they joined)."""
        holdout = Holdout.of(self.matured, now, champion, decision)
        champion_model = self.matured.loaded(champion.version)
        verdicts: dict[str, GateVerdict] = {}
        entered, refused = [], {}
        for result in holdout.trained:
            version = result.version
            sample = self.matured.sample(holdout.rows, champion_model, self.matured.loaded(version))
            verdict = verdicts[version] = self.gate.judge(sample, held_for=now - decision.created_at)
            # Too few holdout rows to tell (a hold) is no reason to keep it out: the race judges it on what comes.
            judged = verdict.verdict != "hold"
            worse = judged and verdict.delta is not None and verdict.delta < 0
            below_floor = judged and verdict.verdict == "reject" and "floor" in verdict.reason
            if worse or below_floor:
                refused[version] = f"holdout: {verdict.reason}"
                continue
            why_not = self.driver.enter(now, version, origin="retrain")
            if why_not is None:
                entered.append(version)
            else:
                refused[version] = why_not
        evidence = {"gate": holdout.evidence(now, champion, verdicts, role="entry filter"),
                    "race": {"entered": entered, "refused": refused}}
        self.decisions.update(decision.decision_id, status="done", verdict="race" if entered else "reject",
                              challenger_version=entered[0] if entered else None, evidence=evidence)
        text = (f"v{', v'.join(entered)} joined the race" if entered else "no challenger joined the race")
        if refused:
            text += "; refused: " + "; ".join(f"v{v}: {why}" for v, why in refused.items())
        report.note(decision.decision_id, f"{decision.decision_id}: {text}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
