"""Fine-tuning: continue a deep copy of the parent on rows it has not seen.

- scikit-learn final step with `partial_fit` (SGD*, MLP*, *NB, Perceptron, PassiveAggressive*):
  the fitted preprocessing stays frozen, the final step is `partial_fit` on transformed rows.
- `warm_start` ensembles (GradientBoosting*, RandomForest*, ExtraTrees*): `n_more_estimators`
  trees are added, fitted on the new rows only; the old trees are never modified.
- River (`RiverModel`): `learn_one` over the new rows in arrival order.
- Anything else (HistGradientBoosting in particular) raises `NotFineTunableError`; the caller
  falls back to stateless and records `err.reason`.
The parent object is never mutated; `chain_depth` is the parent's plus one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, PositiveInt

from trainers import sklearn_adapter
from trainers._common import report, unseen_rows, window_rows
from trainers.base import NoParent, ParentModel, TrainingContext, TrainingResult, TrainingWindow
from trainers.errors import FeatureSchemaError, NotFineTunableError, TrainingDataError
from trainers.metrics import evaluate
from trainers.river_adapter import RiverModel
from trainers.schema import check_parent_schema


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Passes of partial_fit over the new rows (each pass is one call on the whole batch).
    epochs: PositiveInt = 1
    # Trees a warm-start ensemble adds per fine-tune.
    n_more_estimators: PositiveInt = 30


DEFAULT_CONFIG = FinetuneConfig()


def fine_tune_method(model: Any) -> str:
    """How `model` would be fine-tuned (`partial_fit`, `warm_start`, `learn_one`).

    Raises NotFineTunableError with the reason; the controller can call this before it
    queries a window, to fall back to stateless early.
    """
    if isinstance(model, RiverModel):
        return "learn_one"
    return sklearn_adapter.fine_tune_method(model)


def parent_feature_types(parent: ParentModel) -> dict[str, str | None]:
    if isinstance(parent.model, RiverModel):
        return dict(parent.model.feature_types)
    found = sklearn_adapter.feature_types_of(parent.model)
    if found is None:
        raise FeatureSchemaError(
            f"parent version {parent.version}: cannot tell which features it was trained on "
            "(no `features` ColumnTransformer, no feature_names_in_). Fine-tune only models "
            "driftpilot built, or retrain with strategy 'stateless'."
        )
    return found


class FinetuneTrainer:
    """Continue the registered parent on new rows only."""

    name: ClassVar[str] = "finetune"
    config_model: ClassVar[type[BaseModel]] = FinetuneConfig

    def __init__(
        self,
        config: FinetuneConfig = DEFAULT_CONFIG,
        *,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config
        self.timer = timer

    def train(
        self, window: TrainingWindow, parent: ParentModel | NoParent, context: TrainingContext
    ) -> TrainingResult:
        if isinstance(parent, NoParent):
            raise NotFineTunableError(
                "finetune needs a parent model to continue, and none was given (first "
                "version?). Bootstrap with strategy 'stateless' (or 'incremental' for River)."
            )
        check_parent_schema(parent_feature_types(parent), context.feature_types, parent.version)
        method = fine_tune_method(parent.model)
        rows = unseen_rows(window_rows(window, context, "finetune"), parent.last_label_seq)
        if not len(rows):
            raise TrainingDataError(
                f"the window holds no rows newer than parent version {parent.version} (last "
                f"label seq {parent.last_label_seq}); fine-tuning on nothing would copy the "
                "parent. Query labels that arrived after the parent's window."
            )
        started = self.timer()
        if method == "learn_one":
            unseen = parent.model.unlearnable_classes(rows.labels) if context.task == "classification" else []
            if unseen:
                # Like scikit-learn's check_known_classes: a refit can learn them, continuing cannot.
                raise NotFineTunableError(
                    f"the new rows contain classes {unseen} that the parent's binary River learner "
                    f"({type(parent.model.learner).__name__}, classes {parent.model.classes_.tolist()}) cannot "
                    "learn. Use strategy 'stateless', or a multiclass River learner."
                )
            child = copy.deepcopy(parent.model)
            child.learn(rows.features, rows.labels, rows.label_seqs)
            facts: dict[str, Any] = {"method": "learn_one"}
        else:
            if context.task == "classification":
                sklearn_adapter.check_known_classes(parent.model, rows.labels)
            child, facts = sklearn_adapter.fine_tune(
                parent.model,
                rows.features,
                rows.labels,
                method,
                epochs=self.config.epochs,
                n_more_estimators=self.config.n_more_estimators,
            )
        duration = self.timer() - started
        facts["rows_skipped_seen"] = window.rows - len(rows)
        return TrainingResult(
            child,
            report(
                strategy=self.name,
                estimator=_describe(child),
                window=window,
                rows=rows,
                context=context,
                parent=parent,
                chain_depth=parent.child_depth(),
                duration_s=duration,
                fit_metrics=evaluate(child, rows.features, rows.labels, context.task),
                last_label_seq=rows.last_seq,
                details=facts,
            ),
        )


def _describe(model: Any) -> str:
    if isinstance(model, RiverModel):
        return str(model.learner)
    return sklearn_adapter.describe(model)
