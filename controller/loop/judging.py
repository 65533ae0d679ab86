"""``Judging``: the gate on a trained decision's challengers (without a ``race:`` section).

Every challenger is judged on the same :class:`Holdout` rows — every matured row from the earliest challenger's holdout
on that the champion never trained on either — and, with ``gate.shadow_rows``, a ``promote`` is confirmed on the rows
that matured after the decision started. The largest improvement among the promoted is made champion; a held
challenger waits as the ``challenger`` alias for the rows of later ticks; the best of the rejected stays
``challenger`` too, for a person to re-judge or override.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.loop.aliases import Aliases
from controller.loop.gate import PromotionGate
from controller.loop.gate_values import GateVerdict
from controller.loop.observe import last_seq
from controller.loop.promotion import Promotion
from controller.loop.report import TickReport
from controller.loop.results import CandidateResult, challengers
from controller.loop.scoring import MaturedRows
from controller.loop.state import LoopState
from controller.store import LabeledWindow
from controller.store.control import Decision, DecisionLog
from lineage import VersionInfo


@dataclass(frozen=True)
class Holdout:
    """The rows a trained decision's challengers are judged on: matured after ``after`` (the earliest holdout's first
    seq, or the champion's training window when it ends later)."""

    trained: list[CandidateResult]
    after: int
    rows: LabeledWindow

    @classmethod
    def of(cls, matured: MaturedRows, now: datetime, champion: VersionInfo, decision: Decision) -> Holdout:
        trained = [r for r in challengers(decision.evidence) if r.ok]
        first = min(r.holdout_first_seq for r in trained)
        after = max(first - 1, last_seq(champion) or -1)
        return cls(trained, after, matured.window(now, after_seq=after))

    def evidence(self, now: datetime, champion: VersionInfo, verdicts: dict[str, GateVerdict],
                 **more: Any) -> dict[str, Any]:
        """The decision's ``evidence["gate"]``: the rows, the champion and every verdict."""
        return {"as_of": now.isoformat(), "rows": self.rows.rows, "fingerprint": self.rows.fingerprint,
                "first_seq": self.after + 1, "champion_version": champion.version, **more,
                "verdicts": {v: verdict.to_dict() for v, verdict in verdicts.items()}}


class Judging:
    """Judges one model's held decisions with the gate and carries out its verdict."""

    def __init__(self, gate: PromotionGate, matured: MaturedRows, aliases: Aliases, decisions: DecisionLog,
                 promotion: Promotion) -> None:
        self.gate = gate
        self.matured = matured
        self.aliases = aliases
        self.decisions = decisions
        self.promotion = promotion

    def judge(self, now: datetime, champion: VersionInfo, decision: Decision, state: LoopState,
              report: TickReport) -> None:
        """The gate on every matured row from the holdout on that the champion never trained on either."""
        holdout = Holdout.of(self.matured, now, champion, decision)
        rows = holdout.rows
        champion_model = self.matured.loaded(champion.version)
        verdicts: dict[str, GateVerdict] = {}
        for result in holdout.trained:
            version = result.version
            sample = self.matured.sample(rows, champion_model, self.matured.loaded(version))
            verdicts[version] = self.gate.judge(sample, held_for=now - decision.created_at)
        self._confirm_on_shadow(now, champion, decision, verdicts)
        winners = sorted((v for v in verdicts.items() if v[1].verdict == "promote"),
                         key=lambda item: item[1].delta or 0.0, reverse=True)
        held = [v for v, verdict in verdicts.items() if verdict.verdict == "hold"]
        gate_evidence = {"gate": holdout.evidence(now, champion, verdicts)}
        if winners:
            version, verdict = winners[0]
            self.promotion.log_comparisons(decision, champion, verdicts, rows.rows, rows.fingerprint)
            decision = self.decisions.update(decision.decision_id, status="promoting", verdict="promote",
                                             challenger_version=version, evidence=gate_evidence)
            report.note(decision.decision_id, f"{decision.decision_id}: gate promotes v{version}: {verdict.reason}")
            self.promotion.promote(now, decision, version, state, report)
        elif held:
            best = held[0]
            if decision.challenger_version != best:
                self.aliases.set_challenger(best)
            self.decisions.update(decision.decision_id, verdict="hold", challenger_version=best,
                                  evidence=gate_evidence)
            report.note(decision.decision_id, f"{decision.decision_id}: gate holds v{best}: {verdicts[best].reason}")
        else:
            self.promotion.log_comparisons(decision, champion, verdicts, rows.rows, rows.fingerprint)
            reasons = "; ".join(f"v{v}: {verdict.reason}" for v, verdict in verdicts.items())
            # The best of the rejected stays `challenger`: visible in MLflow, and `driftpilot promote` re-judges it
            # on the rows that arrive later (or overrides the gate with --force).
            best = max(verdicts, key=lambda v: verdicts[v].delta if verdicts[v].delta is not None else float("-inf"))
            self.aliases.set_challenger(best)
            self.decisions.update(decision.decision_id, status="done", verdict="reject", challenger_version=best,
                                  evidence=gate_evidence)
            report.note(decision.decision_id, f"{decision.decision_id}: gate rejects {reasons}")

    def _confirm_on_shadow(self, now: datetime, champion: VersionInfo, decision: Decision,
                           verdicts: dict[str, GateVerdict]) -> None:
        """gate.shadow_rows: a ``promote`` also needs the rows matured after the decision started (see the gate)."""
        through = decision.evidence.get("trained_through_seq")
        if not self.gate.config.shadow_rows or not any(v.verdict == "promote" for v in verdicts.values()):
            return
        if through is None:  # a decision started before shadow_rows was configured: judged as it was started
            return
        rows = self.matured.window(now, after_seq=int(through))
        champion_model = self.matured.loaded(champion.version)
        for version, verdict in verdicts.items():
            if verdict.verdict == "promote":
                shadow = self.matured.sample(rows, champion_model, self.matured.loaded(version))
                verdicts[version] = self.gate.confirm(verdict, shadow, held_for=now - decision.created_at)
