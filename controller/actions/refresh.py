"""Refresh a model: build a challenger with a strategy, compare it with the champion on the same held-out matured rows,
register it with its lineage record and mark it ``challenger``.

Rows are split by label sequence, as of one maturity cut:

    [ ... champion's training window ... ] [ rows matured since then ..................... ]
                                           [ training rows (finetune) ] [ holdout: newest % ]

The holdout is the newest share of the rows the champion never trained on; neither model trains on it, so the two
sets of metrics are a fair, paired comparison, recorded in MLflow as a comparison run (both versions under the same
metric keys, the holdout's rows and fingerprint). Promotion is a separate step (the controller's gate, or
``driftpilot promote``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.actions.model_job import ModelJob
from controller.actions.run_params import training_params
from controller.actions.training import CANDIDATE, FIRST_SEQ, LAST_SEQ, candidate_of, plain
from controller.config import Candidate
from controller.errors import DriftpilotError
from controller.store import LabeledWindow
from lineage import Comparison, LineageNotFound, LineageRecord, LoadedModel
from trainers import (
    NO_PARENT,
    EstimatorSpec,
    NotFineTunableError,
    ParentModel,
    TrainingResult,
    WindowConfig,
    get_trainer,
    window_bounds,
)
from trainers.metrics import evaluate


class RefreshError(DriftpilotError):
    """A refresh cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class RefreshOutcome:
    version: str
    strategy: str
    requested_strategy: str
    parent_version: str
    train_rows: int
    holdout_rows: int
    holdout_metrics: dict[str, float]
    champion_metrics: dict[str, float]
    chain_depth: int
    decision_id: str
    fallback_reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    holdout_first_seq: int | None = None   # the holdout is every matured row from this label seq on
    candidate: str | None = None
    holdout_fingerprint: str | None = None
    comparison_run_id: str | None = None   # the MLflow evaluation run of challenger vs champion on the holdout

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Refresher(ModelJob):
    """Runs one strategy for one model: the controller's verb for "retrain now"."""

    def retrain(self, strategy: str, *, trigger: str = "manual", drift_at: datetime | None = None,
                decision_id: str | None = None, window: WindowConfig | None = None,
                candidate: Candidate | None = None, as_of: datetime | None = None,
                mark_challenger: bool = True, comparison: bool = True,
                champion_version: str | None = None) -> RefreshOutcome:
        """Train a challenger with ``stateless`` or ``finetune`` as of ``as_of`` (default now), register it and (unless
        ``mark_challenger=False``) mark it challenger. With ``comparison`` (default) the challenger-vs-champion scores
        on the holdout are logged as an MLflow comparison run (id ``<decision_id>-retrain-v<version>``).

        ``window`` overrides the policy's stateless window; ``candidate`` trains a member of the candidate pool
        instead of the policy's estimator (a candidate of another family than the champion cannot fine-tune it, so it
        is trained stateless and the reason is recorded). ``champion_version`` pins the champion the decision was made
        against (a training worker must not pick up a champion the race crowned while it trained).
        """
        if strategy not in ("stateless", "finetune"):
            raise RefreshError(f"retrain strategy {strategy!r} is not one of 'stateless', 'finetune' (incremental "
                               "learning runs continuously: see `driftpilot learn`)")
        as_of = as_of or self.clock.now()
        champion = self._champion(champion_version)
        estimator = candidate.estimator if candidate is not None else None
        champion_last_seq = _last_seq(champion)
        bounds = window_bounds(window or self.policy.retrain.stateless.window, as_of, drift_at)
        # A stateless retrain on a recent window (since a drift, the last days) is held out on the newest share of
        # that window: rows of the old concept would only dilute the comparison, and would shrink what it trains on.
        since = bounds.since if strategy == "stateless" else None
        fresh = self._window(as_of, after_seq=champion_last_seq, since=since)
        holdout_rows = round(fresh.rows * self.policy.retrain.holdout_fraction)
        if fresh.rows < self.policy.retrain.min_rows or holdout_rows < 1:
            raise RefreshError(
                f"only {fresh.rows} labeled rows matured since champion version {champion.version}'s window (label "
                f"seq > {champion_last_seq}{f', arrived since {since.isoformat()}' if since else ''}); "
                f"retrain.min_rows is {self.policy.retrain.min_rows}. Wait for more natural labels, or lower "
                "retrain.min_rows.")
        holdout = fresh.slice(fresh.rows - holdout_rows)
        cut = int(holdout.label_seqs.iloc[0]) - 1  # training rows end just before the holdout

        fallback = None
        if strategy == "finetune" and candidate is not None and candidate.name != candidate_of(champion.record):
            fallback = (f"candidate {candidate.name!r} ({candidate.estimator.describe()}) did not train champion "
                        f"version {champion.version} ({candidate_of(champion.record)!r} did), so it cannot fine-tune "
                        "it; trained stateless")
            strategy_used = "stateless"
        elif strategy == "finetune":
            train_window = fresh.slice(0, fresh.rows - holdout_rows)
            try:
                result = self._train("finetune", train_window, self._parent(champion), estimator)
            except NotFineTunableError as exc:
                if not self.policy.retrain.fallback_to_stateless:
                    raise RefreshError(f"{exc} (retrain.fallback_to_stateless is off)") from exc
                fallback = str(exc)
                strategy_used = "stateless"
            else:
                strategy_used = "finetune"
        else:
            strategy_used = "stateless"
        if strategy_used == "stateless":
            train_window = self._window(as_of, since=bounds.since, max_rows=bounds.max_rows, through_seq=cut)
            result = self._train("stateless", train_window, NO_PARENT, estimator)

        # The monitor's positive class: these holdout metrics become the challenger's reference live metric.
        positive = self.policy.monitors.performance.positive_class
        challenger_metrics = evaluate(result.model, holdout.features, holdout.labels, self.policy.task,
                                      positive_class=positive)
        champion_metrics = evaluate(champion.model, holdout.features, holdout.labels, self.policy.task,
                                    positive_class=positive)
        decision_id = decision_id or f"retrain-{uuid.uuid4().hex[:12]}"
        extra = {
            FIRST_SEQ: int(train_window.label_seqs.iloc[0]),
            LAST_SEQ: int(train_window.label_seqs.iloc[-1]),
            "holdout_rows": holdout.rows,
            "holdout_fingerprint": holdout.fingerprint,
            "requested_strategy": strategy,
            "holdout_first_seq": int(holdout.label_seqs.iloc[0]),
            "holdout_last_seq": int(holdout.label_seqs.iloc[-1]),
            **({CANDIDATE: candidate.name} if candidate is not None else {}),
            **({"fallback_reason": fallback} if fallback else {}),
            **{k: plain(v) for k, v in result.report.details.items()},
        }
        record = LineageRecord(
            parent_version=champion.version, strategy=strategy_used, trigger=trigger,
            window_start=train_window.start, window_end=train_window.end, window_rows=train_window.rows,
            window_fingerprint=train_window.fingerprint, maturity_cut=as_of,
            holdout_metrics=challenger_metrics, champion_metrics=champion_metrics,
            chain_depth=result.report.chain_depth, policy_hash=self.loaded.sha256, decision_id=decision_id,
            extra=extra,
            event_time_start=_event_time(train_window, min), event_time_end=_event_time(train_window, max),
        )
        name = self.policy.registered_model
        info = self.registry.register(
            name, result.model, record,
            params=training_params(
                estimator or self.policy.estimator, strategy_used, seed=self.policy.bootstrap.seed,
                extra={"requested_strategy": strategy, "train_rows": train_window.rows, "holdout_rows": holdout.rows,
                       "holdout_fingerprint": holdout.fingerprint,
                       **({"candidate": candidate.name} if candidate else {})}),
            training_data=(train_window.features, train_window.labels),
        )
        comparison_run_id = None
        if comparison:
            comparison_run_id = self.registry.log_comparison(Comparison(
                name=name, comparison_id=f"{decision_id}-retrain-v{info.version}", champion_version=champion.version,
                challenger_version=str(info.version), champion_metrics=champion_metrics,
                challenger_metrics=challenger_metrics, holdout_rows=holdout.rows,
                holdout_fingerprint=holdout.fingerprint,
                params={"decision_id": decision_id, "trigger": trigger, "strategy": strategy_used,
                        "stage": "retrain holdout"},
                tags={"driftpilot.stage": "retrain"}))
        if mark_challenger:
            self.registry.set_challenger(name, info.version)
        return RefreshOutcome(
            version=str(info.version), strategy=strategy_used, requested_strategy=strategy,
            parent_version=champion.version, train_rows=train_window.rows, holdout_rows=holdout.rows,
            holdout_metrics=challenger_metrics, champion_metrics=champion_metrics,
            chain_depth=result.report.chain_depth, decision_id=decision_id, fallback_reason=fallback,
            details=dict(result.report.details), holdout_first_seq=int(holdout.label_seqs.iloc[0]),
            candidate=candidate.name if candidate is not None else None,
            holdout_fingerprint=holdout.fingerprint, comparison_run_id=comparison_run_id,
        )

    # ------------------------------------------------------------------------------------------------ helpers

    def _champion(self, version: str | None = None) -> LoadedModel:
        name = self.policy.registered_model
        try:
            return self.registry.load(name, version=version) if version is not None else self.registry.load(name)
        except LineageNotFound:
            raise RefreshError(f"model {name!r} has no champion yet; run `driftpilot bootstrap` first") from None

    def _window(self, as_of: datetime, **limits: Any) -> LabeledWindow:
        return self.store.labeled_window(self.policy.model, as_of, feature_types=self.policy.feature_types,
                                         **limits)

    def _parent(self, champion: LoadedModel) -> ParentModel:
        record = champion.record
        return ParentModel(model=champion.model, version=champion.version,
                           chain_depth=record.chain_depth if record else 0,
                           window_end=record.window_end if record else None,
                           last_label_seq=_last_seq(champion))

    def _train(self, strategy: str, window: LabeledWindow, parent: Any,
               estimator: EstimatorSpec | None = None) -> TrainingResult:
        if window.rows == 0:
            raise RefreshError(f"the {strategy} training window is empty (as of {window.as_of.isoformat()}); "
                               "wait for more natural labels")
        config = getattr(self.policy.retrain, strategy)
        return get_trainer(strategy, config).train(window, parent, self.training_context(estimator))


def _event_time(window: LabeledWindow, pick: Any) -> datetime | None:
    """The oldest (``min``) or newest (``max``) event time of the window: the period of the world its rows cover."""
    times = window.event_times.dropna()
    return pick(times).to_pydatetime() if len(times) else None


def _last_seq(version: LoadedModel) -> int | None:
    """The newest label the version trained on (recorded by driftpilot in the lineage record's extra facts)."""
    if version.record is None:
        return None
    value = version.record.extra.get(LAST_SEQ)
    return int(value) if value is not None else None
