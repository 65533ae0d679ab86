"""Errors raised by trainers. Each message says what was wrong, what is accepted and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable


class TrainerError(Exception):
    """Base class of every error the trainers package raises on purpose."""


class EstimatorSpecError(TrainerError, ValueError):
    """The policy's `estimator:` section names something that cannot be built.

    A ValueError so that pydantic wraps it into a ValidationError carrying the key path.
    """


class FeatureSchemaError(TrainerError, ValueError):
    """The window's columns do not match the policy schema or the parent model's schema."""


class TrainingDataError(TrainerError, ValueError):
    """The window cannot be trained on (empty, a single class, unknown labels...)."""


class NotFineTunableError(TrainerError):
    """The parent cannot be continued on new rows; the caller should fall back to stateless.

    `reason` is the short, recordable explanation (it goes into the lineage record).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IncompatibleEstimatorError(TrainerError, ValueError):
    """The estimator family does not fit the strategy (e.g. scikit-learn given to incremental)."""


class UnknownTrainerError(TrainerError, LookupError):
    """No trainer is registered under that name."""


def schema_mismatch_message(
    what: str,
    expected: Iterable[str],
    got: Iterable[str],
    hint: str,
    subject: str = "the window's feature columns do not match",
) -> str | None:
    """Describe the difference between two column sets, or None when they hold the same names."""
    expected_list, got_list = list(expected), list(got)
    missing = [c for c in expected_list if c not in set(got_list)]
    extra = [c for c in got_list if c not in set(expected_list)]
    if not missing and not extra:
        return None
    parts = [f"{what}: {subject}."]
    if missing:
        parts.append(f"missing columns: {missing}")
    if extra:
        parts.append(f"unexpected columns: {extra}")
    parts.append(f"expected exactly {expected_list}. {hint}")
    return " ".join(parts)
