"""``IncrementalLearning``: a River champion's learner takes one test-then-train step; a checkpoint it registers goes
through the gate and, when promoted, becomes champion.

The step itself (learner state in the store, checkpoints as versions) is
:class:`~controller.actions.incremental.IncrementalRunner`; this is the loop's side of it: the gate on the checkpoint's
paired rows, the decision, the promotion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from controller.actions.incremental import IncrementalStep
from controller.loop.gate import PromotionGate
from controller.loop.gate_values import PairedSample
from controller.loop.promotion import Promotion
from controller.loop.report import TickReport
from controller.loop.state import LoopState
from controller.store.control import DecisionLog
from lineage import VersionInfo


class IncrementalLearning:
    """Incremental learning of one model; ``step`` runs one step of its learner (a fresh ``IncrementalRunner``'s)."""

    def __init__(self, step: Callable[[], IncrementalStep], gate: PromotionGate, decisions: DecisionLog,
                 promotion: Promotion, *, model: str, owner: str, task: str, classes: Sequence[Any]) -> None:
        self.step = step
        self.gate = gate
        self.decisions = decisions
        self.promotion = promotion
        self.model = model
        self.owner = owner
        self.task = task
        self.classes = tuple(classes)

    def learn(self, now: datetime, champion: VersionInfo, trigger: str, rule: str, evidence: dict[str, Any],
              state: LoopState, report: TickReport, *, quiet: bool = False) -> None:
        """One test-then-train step of the River learner. A checkpoint goes through the gate on its paired rows: the
        learner's prequential predictions vs the champion's logged predictions on the same rows, which the
        learner predicted before it learned them."""
        step = self.step()
        state.last_retrain_seq, state.new_labels = state.label_cursor, 0
        if step.checkpoint_version is None:
            if not quiet:  # continuous learning reports checkpoints only, not every tick's rows
                report.events.append(f"incremental: learned {step.learned} rows")
            return
        version = step.checkpoint_version
        labels, learner, logged = (list(column) for column in zip(*step.paired, strict=True)) if step.paired \
            else ([], [], [])
        dtype = float if self.task == "regression" else object
        fingerprint = f"prequential-v{version}-{len(labels)}"
        sample = PairedSample(labels=np.asarray(labels, dtype=dtype), champion=np.asarray(logged, dtype=dtype),
                              challenger=np.asarray(learner, dtype=dtype), classes=self.classes,
                              fingerprint=fingerprint)
        verdict = self.gate.judge_checkpoint(sample)
        evidence = {**evidence, "learned": step.learned, "gate": {
            "as_of": now.isoformat(), "rows": sample.rows, "fingerprint": fingerprint,
            "paired": "the learner's prequential predictions vs the champion's logged predictions",
            "champion_version": champion.version, "verdicts": {version: verdict.to_dict()}}}
        promote = verdict.verdict == "promote"
        decision = self.decisions.open(
            self.model, trigger=trigger, action="learn", rule=rule, strategy="incremental",
            status="promoting" if promote else "done", champion_version=champion.version,
            challenger_version=version, verdict=verdict.verdict, evidence=evidence, owner=self.owner)
        self.promotion.log_comparisons(decision, champion, {version: verdict}, sample.rows, fingerprint)
        report.note(decision.decision_id, f"{decision.decision_id}: checkpoint v{version} after {step.learned} rows, "
                                          f"gate {verdict.verdict}: {verdict.reason}")
        if promote:
            self.promotion.promote(now, decision, version, state, report)
