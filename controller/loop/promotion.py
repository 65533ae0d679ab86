"""``Promotion``: a ``promote`` carried out — the aliases move, probation starts — and every gate comparison logged
as its own MLflow evaluation run.

The gate's verdicts (:mod:`controller.loop.judging`), an incremental checkpoint's (:mod:`controller.loop.incremental`)
and a person's ``driftpilot promote`` all end here.
"""

from __future__ import annotations

from datetime import datetime

from controller.loop.aliases import Aliases
from controller.loop.gate_values import GateVerdict
from controller.loop.probation import ProbationWatch
from controller.loop.report import TickReport
from controller.loop.state import LoopState
from controller.store.control import Decision, DecisionLog
from lineage import Comparison, VersionInfo


class Promotion:
    """Makes a decision's challenger champion, for one model."""

    def __init__(self, aliases: Aliases, decisions: DecisionLog, probation: ProbationWatch) -> None:
        self.aliases = aliases
        self.decisions = decisions
        self.probation = probation

    def promote(self, now: datetime, decision: Decision, version: str | None, state: LoopState,
                report: TickReport) -> None:
        """Move the aliases (idempotent, so a decision interrupted here finishes on the next tick)."""
        previous = decision.champion_version
        self.aliases.promote(version, decision_id=decision.decision_id,
                           reason=f"gate verdict of decision {decision.decision_id}")
        self.decisions.update(decision.decision_id, status="done")
        self.probation.begin(now, decision.decision_id, version, previous, state)
        report.note(decision.decision_id, f"{decision.decision_id}: v{version} is champion (previous v{previous})")

    def log_comparisons(self, decision: Decision, champion: VersionInfo, verdicts: dict[str, GateVerdict],
                        rows: int, fingerprint: str) -> None:
        """One MLflow evaluation run per challenger: both versions under the same metric keys, same rows."""
        for version, verdict in verdicts.items():
            self.aliases.registry.log_comparison(Comparison(
                name=self.aliases.name, comparison_id=f"{decision.decision_id}-v{version}",
                champion_version=champion.version, challenger_version=version,
                champion_metrics=verdict.champion_metrics, challenger_metrics=verdict.challenger_metrics,
                holdout_rows=rows, holdout_fingerprint=fingerprint, verdict=verdict.verdict, p_value=verdict.p_value,
                test=verdict.test, params={"decision_id": decision.decision_id, "trigger": decision.trigger,
                                           "rule": decision.rule or "", "metric": verdict.metric}))
