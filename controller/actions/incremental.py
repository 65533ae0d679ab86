"""Continual learning: a River learner follows the newly matured labels, checkpointed as registered versions.

Each :meth:`IncrementalRunner.step` reads the labels matured since the learner's last one (in arrival order), lets
the learner predict each row before learning it (test-then-train), and saves the learner's bytes in the store, so a
daemon restart resumes exactly where it stopped. Every ``retrain.incremental.checkpoint`` (N updates or T minutes)
the learner is registered as a version (strategy ``incremental``, parent = the version it continued) and marked
challenger; it becomes champion only through a promotion.
"""

from __future__ import annotations

import pickle
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from controller.actions.model_job import ModelJob
from controller.actions.run_params import training_params
from controller.actions.training import CANDIDATE, DEFAULT_CANDIDATE, FIRST_SEQ, LAST_SEQ, candidate_of, plain
from controller.errors import DriftpilotError
from controller.store import LabeledWindow
from lineage import LineageNotFound, LineageRecord
from trainers import ParentModel, RiverModel, get_trainer

STATE_KEY = "incremental.learner"


class IncrementalError(DriftpilotError):
    """The incremental learner cannot run; the message says why."""


@dataclass(frozen=True)
class LearnerState:
    """What survives a restart: the learner and where its lineage stands."""

    model: bytes
    parent_version: str          # the registered version the learner continues (champion or last checkpoint)
    parent_depth: int
    forked_from_champion: str    # champion version when the learner started; a different champion restarts it
    updates_since_checkpoint: int = 0
    last_checkpoint_at: datetime | None = None
    first_seq_since_checkpoint: int | None = None
    candidate: str = DEFAULT_CANDIDATE   # the pool member whose estimator the learner is
    # Rows since the last checkpoint whose champion prediction was logged: (label, learner's prequential
    # prediction, champion's logged prediction). The gate judges a checkpoint on exactly these pairs.
    paired: tuple[tuple[Any, Any, Any], ...] = ()


@dataclass(frozen=True)
class IncrementalStep:
    learned: int
    prequential_accuracy: float | None     # the learner's test-then-train accuracy on every row it learned
    paired_rows: int = 0                   # rows where the champion's prediction was logged too
    learner_paired_accuracy: float | None = None
    champion_paired_accuracy: float | None = None
    checkpoint_version: str | None = None
    details: dict = field(default_factory=dict)
    champion_version: str | None = None
    # On a checkpoint: the paired rows since the previous checkpoint (labels, learner, champion), for the gate.
    paired: tuple[tuple[Any, Any, Any], ...] = ()


class IncrementalRunner(ModelJob):
    """Runs the incremental learner of one model, one step per call."""

    def step(self) -> IncrementalStep:
        as_of = self.clock.now()
        state, champion = self._state()
        learner = RiverModel.loads(state.model)
        window = self.store.labeled_window(self.policy.model, as_of, after_seq=learner.last_label_seq,
                                           feature_types=self.policy.feature_types)
        if window.rows == 0:
            return IncrementalStep(learned=0, prequential_accuracy=None)
        parent = ParentModel(model=learner, version=state.parent_version, chain_depth=state.parent_depth,
                             last_label_seq=learner.last_label_seq)
        trainer = get_trainer("incremental", self.policy.retrain.incremental)
        estimator = self.policy.pool_members().get(state.candidate)
        result = trainer.train(window, parent, self.training_context(estimator.estimator if estimator else None))
        learned = len(result.prequential)
        prequential = result.prequential.predictions.tolist()
        state = replace(
            state, model=result.model.dumps(), updates_since_checkpoint=state.updates_since_checkpoint + learned,
            first_seq_since_checkpoint=state.first_seq_since_checkpoint or int(window.label_seqs.iloc[0]),
            paired=state.paired + _pairs(window, prequential, champion))
        accuracy = self._accuracy(window, prequential, champion)
        checkpoint, paired = None, ()
        if self.policy.retrain.incremental.checkpoint.due(as_of, state.updates_since_checkpoint,
                                                          state.last_checkpoint_at):
            checkpoint = self._checkpoint(result.model, state, window, as_of, result.report.fit_metrics)
            paired = state.paired
            state = replace(state, parent_version=checkpoint, parent_depth=state.parent_depth + 1,
                            updates_since_checkpoint=0, last_checkpoint_at=as_of, first_seq_since_checkpoint=None,
                            paired=())
        # Saved after the checkpoint, so a crash in between re-learns nothing and at worst checkpoints twice.
        self.store.put_state(self.policy.model, STATE_KEY, pickle.dumps(state))
        return IncrementalStep(learned=learned, **accuracy, checkpoint_version=checkpoint,
                               details=dict(result.report.details), champion_version=champion, paired=paired)

    # ------------------------------------------------------------------------------------------------ helpers

    def _state(self) -> tuple[LearnerState, str]:
        """The saved learner, or a fresh fork of the champion (also when the champion changed under it); and the
        champion's version."""
        name = self.policy.registered_model
        raw = self.store.get_state(self.policy.model, STATE_KEY)
        champion = self.registry.champion_version(name)
        if champion is None:
            raise IncrementalError(f"model {name!r} has no champion yet; bootstrap a River model first")
        if raw is not None:
            state: LearnerState = pickle.loads(raw)
            if champion in (state.forked_from_champion, state.parent_version):
                return state, champion
        try:
            loaded = self.registry.load(name, version=champion)
        except LineageNotFound as exc:
            raise IncrementalError(str(exc)) from exc
        if not isinstance(loaded.model, RiverModel):
            raise IncrementalError(
                f"champion version {champion} of {name!r} is a {type(loaded.model).__name__}; incremental learning "
                "continues a River model. Bootstrap with a river.* estimator, or use `driftpilot retrain`.")
        depth = loaded.record.chain_depth if loaded.record else 0
        # The registered champion is the learner's first checkpoint: the cadence counts from the fork.
        return LearnerState(model=loaded.model.dumps(), parent_version=champion, parent_depth=depth,
                            forked_from_champion=champion, last_checkpoint_at=self.clock.now(),
                            candidate=candidate_of(loaded.record)), champion

    def _checkpoint(self, model: RiverModel, state: LearnerState, window: LabeledWindow, as_of: datetime,
                    metrics: dict) -> str:
        name = self.policy.registered_model
        decision_id = f"incremental-{uuid.uuid4().hex[:12]}"
        record = LineageRecord(
            parent_version=state.parent_version, strategy="incremental", trigger="data_volume",
            window_start=window.start, window_end=window.end, window_rows=state.updates_since_checkpoint,
            window_fingerprint=window.fingerprint, maturity_cut=as_of,
            holdout_metrics={f"prequential_{k}": float(v) for k, v in metrics.items()}, champion_metrics={},
            chain_depth=state.parent_depth + 1, policy_hash=self.loaded.sha256, decision_id=decision_id,
            extra={FIRST_SEQ: state.first_seq_since_checkpoint, LAST_SEQ: model.last_label_seq,
                   "n_updates_total": model.n_updates, CANDIDATE: state.candidate},
        )
        member = self.policy.pool_members().get(state.candidate)
        estimator = member.estimator if member else self.policy.estimator
        info = self.registry.register(name, model, record, params=training_params(
            estimator, "incremental", seed=self.policy.bootstrap.seed,
            extra={"updates": state.updates_since_checkpoint}))
        self.registry.set_challenger(name, info.version)
        return str(info.version)

    def _accuracy(self, window: LabeledWindow, prequential: list, champion: str) -> dict:
        """Prequential accuracy, and a paired comparison with the champion's logged predictions on the same rows."""
        if self.policy.task != "classification":
            return {"prequential_accuracy": None}
        labels = window.labels.tolist()
        hits = [p == y for p, y in zip(prequential, labels, strict=True)]
        served = ((window.model_versions == champion) & window.predictions.notna()).tolist()
        paired = [i for i, flag in enumerate(served) if flag]
        result = {"prequential_accuracy": sum(hits) / len(hits), "paired_rows": len(paired)}
        if paired:
            result["learner_paired_accuracy"] = sum(hits[i] for i in paired) / len(paired)
            result["champion_paired_accuracy"] = sum(window.predictions.iloc[i] == labels[i] for i in paired) / len(
                paired)
        return result


def _pairs(window: LabeledWindow, prequential: list, champion: str) -> tuple[tuple[Any, Any, Any], ...]:
    """(label, learner prediction, champion's logged prediction) for the rows the champion served."""
    served = ((window.model_versions == champion) & window.predictions.notna()).tolist()
    labels, logged = window.labels.tolist(), window.predictions.tolist()
    return tuple((plain(labels[i]), plain(prequential[i]), plain(logged[i])) for i, ok in enumerate(served) if ok)
