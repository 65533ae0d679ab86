"""What every training path of the controller shares: the trainer context of a policy, the lineage keys of a
version's label-sequence range, and plain-value conversion for JSON and MLflow tags."""

from __future__ import annotations

from typing import Any

import numpy as np

from controller.config import PolicyConfig
from controller.errors import DriftpilotError
from trainers import EstimatorSpec, TrainingContext

# Label-sequence range of a version's training window, kept in its lineage record so later refreshes and the
# monitors know exactly which rows the version has seen.
FIRST_SEQ = "first_label_seq"
LAST_SEQ = "last_label_seq"
# Which member of the policy's candidate pool trained a version ("default": the policy's `estimator:`).
CANDIDATE = "candidate"
DEFAULT_CANDIDATE = "default"


def candidate_of(record: Any) -> str:
    """The candidate-pool member that trained the version with this lineage record (None: a foreign version)."""
    extra = getattr(record, "extra", None) or {}
    return str(extra.get(CANDIDATE) or DEFAULT_CANDIDATE)


def training_context(policy: PolicyConfig, source: str, estimator: EstimatorSpec | None = None) -> TrainingContext:
    """The trainers' context for ``policy``; ``source`` (the policy file) names where a missing estimator goes.

    ``estimator`` overrides the policy's own (a member of the candidate pool)."""
    spec = estimator or policy.estimator
    if spec is None:
        raise DriftpilotError(f"{source}: the policy has no `estimator:` section; add one (for example "
                              "`estimator: {class: sklearn.linear_model.SGDClassifier, params: {loss: log_loss}}`)")
    return TrainingContext(estimator=spec, feature_types=policy.feature_types, task=policy.task,
                           classes=tuple(policy.target.classes or ()), seed=policy.bootstrap.seed)


def plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so values serialize to JSON, fit MLflow tags and equal stored labels."""
    return value.item() if isinstance(value, np.generic) else value
