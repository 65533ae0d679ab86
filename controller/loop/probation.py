"""``ProbationWatch``: a new champion that does worse than the one it replaced, on matured labels, is rolled back.

Without a ``race:`` section only (the race's own test rolls back). A promotion starts the watch (:meth:`begin`); each
tick then compares the two versions on the newest rows matured since the promotion (:meth:`check`). What it carries
between ticks is :class:`~controller.loop.state.Probation`, in the loop state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.loop.aliases import Aliases
from controller.loop.config import ProbationConfig
from controller.loop.gate import PromotionGate
from controller.loop.report import TickReport
from controller.loop.scoring import MaturedRows
from controller.loop.state import LoopState, Probation
from controller.store.control import DecisionLog, new_decision_id
from lineage import VersionInfo


class ProbationWatch:
    """Watches one model's new champion (``config``: the policy's ``probation:`` section)."""

    def __init__(self, config: ProbationConfig, gate: PromotionGate, matured: MaturedRows, aliases: Aliases,
                 decisions: DecisionLog, *, model: str, owner: str) -> None:
        self.config = config
        self.gate = gate
        self.matured = matured
        self.aliases = aliases
        self.decisions = decisions
        self.model = model
        self.owner = owner

    def begin(self, now: datetime, decision_id: str, version: str | None, previous: str | None,
              state: LoopState) -> None:
        """After ``decision_id`` made ``version`` champion in place of ``previous`` (when probation is enabled)."""
        if self.config.enabled and previous is not None and previous != version:
            # Probation judges the rows that mature after this moment: both versions are scored on them.
            state.probation = Probation(decision_id=decision_id, version=str(version), previous=previous,
                                        since_seq=self.matured.newest_seq(now, state.label_cursor),
                                        until=now + self.config.duration, ends_by=now + self.config.longest)

    def check(self, now: datetime, champion: VersionInfo, state: LoopState, report: TickReport) -> None:
        """One tick of the watch: pass, roll back, or wait for more matured rows."""
        probation = state.probation
        if probation is None:
            return
        if champion.version != probation.version:
            self._end(probation, f"ended: the champion moved to v{champion.version}")
            state.probation = None
            return
        config = self.config
        fresh = (state.label_cursor or 0) - (probation.checked_seq or probation.since_seq or 0)
        ends_by = probation.ends_by or probation.until
        needed = max(1, config.min_rows // 4) if now < probation.until else 1  # past `until` any new row may end it
        if now < ends_by and fresh < needed:
            return  # too little new since the last check to change its verdict
        probation.checked_seq = state.label_cursor
        rows = self.matured.window(now, after_seq=probation.since_seq, max_rows=config.window_rows)
        if rows.rows >= config.min_rows:
            sample = self.matured.sample(rows, self.matured.loaded(probation.previous),
                                         self.matured.loaded(probation.version))
            verdict = self.gate.judge(sample)
            metric = verdict.metric
            new, old = verdict.challenger_metrics.get(metric), verdict.champion_metrics.get(metric)
            worse = (old - new) if verdict.higher_is_better else (new - old)
            evidence = {"metric": metric, "new_champion": new, "previous": old, "rows": rows.rows,
                        "fingerprint": rows.fingerprint, "max_drop": config.max_drop}
            if worse > config.max_drop:
                self._rollback(probation, evidence, report)
                state.probation = None
                return
            if now >= probation.until:
                self._end(probation, "passed", evidence)
                state.probation = None
        elif now >= ends_by:
            # Past `duration` a probation waits for min_rows matured rows (rows, not hours, make a verdict), but not
            # beyond max_duration.
            self._end(probation, f"passed without a verdict: only {rows.rows} matured rows < "
                                 f"probation.min_rows {config.min_rows} by max_duration")
            state.probation = None

    def _rollback(self, probation: Probation, evidence: dict[str, Any], report: TickReport) -> None:
        decision_id = new_decision_id("rollback")
        reason = (f"probation: v{probation.version} {evidence['metric']} {evidence['new_champion']:.4f} vs previous "
                  f"v{probation.previous} {evidence['previous']:.4f} on {evidence['rows']} matured rows "
                  f"(drop > probation.max_drop {evidence['max_drop']})")
        self.aliases.rollback(decision_id=decision_id, reason=reason)
        self.decisions.open(self.model, trigger="performance_drop", action="rollback", rule="probation",
                            status="done", champion_version=probation.version,
                            challenger_version=probation.previous, verdict="rollback",
                            evidence={"probation": evidence, "promoted_by": probation.decision_id},
                            owner=self.owner, decision_id=decision_id)
        self._end(probation, f"rolled back by {decision_id}", evidence)
        report.note(decision_id, f"{decision_id}: rolled back v{probation.version} -> v{probation.previous}: {reason}")

    def _end(self, probation: Probation, result: str, evidence: dict[str, Any] | None = None) -> None:
        self.decisions.update(probation.decision_id, evidence={"probation": {"result": result, **(evidence or {})}})
