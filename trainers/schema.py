"""The policy's feature schema (name -> kind) and the checks every trainer runs on a window."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import pandas as pd

from trainers.errors import FeatureSchemaError, schema_mismatch_message

FeatureKind = Literal["numeric", "categorical", "boolean"]
Task = Literal["classification", "regression"]
FEATURE_KINDS: tuple[str, ...] = ("numeric", "categorical", "boolean")
TASKS: tuple[str, ...] = ("classification", "regression")


def is_missing(value: Any) -> bool:
    """None or a float NaN (the window gives both for a missing optional)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def check_feature_types(feature_types: Mapping[str, str]) -> dict[str, str]:
    """Return the schema as a plain dict after checking every kind is one we can preprocess."""
    bad = {name: kind for name, kind in feature_types.items() if kind not in FEATURE_KINDS}
    if bad:
        raise FeatureSchemaError(
            f"feature kinds {bad} are not supported; each feature must be one of "
            f"{list(FEATURE_KINDS)}. Fix the policy's feature schema."
        )
    if not feature_types:
        raise FeatureSchemaError(
            "the feature schema is empty; a model needs at least one feature. "
            "List the features in the policy file."
        )
    return dict(feature_types)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise FeatureSchemaError(f"task {task!r} is not supported; use one of {list(TASKS)}.")
    return task


def align_columns(features: pd.DataFrame, feature_types: Mapping[str, str], who: str) -> pd.DataFrame:
    """Return `features` with exactly the schema's columns in schema order, or refuse loudly.

    Reordering is safe (columns are matched by name); missing or extra columns are not,
    because a model silently trained on a different schema is the failure we must prevent.
    """
    message = schema_mismatch_message(
        who,
        expected=feature_types.keys(),
        got=features.columns,
        hint="The window must carry exactly the policy's features; fix the policy schema "
        "or the store query.",
    )
    if message:
        raise FeatureSchemaError(message)
    order = list(feature_types)
    if list(features.columns) == order:
        return features
    return features.loc[:, order]


def check_parent_schema(
    parent_types: Mapping[str, str | None],
    feature_types: Mapping[str, str],
    parent_version: str | None,
) -> None:
    """Refuse to continue a parent whose feature schema differs from the policy's.

    A parent kind of None means "unknown" (a model not built by driftpilot): names only.
    """
    message = schema_mismatch_message(
        f"parent version {parent_version}",
        expected=parent_types.keys(),
        got=feature_types.keys(),
        hint="A fine-tuned or incremental model keeps its parent's inputs; after a schema "
        "change retrain with strategy 'stateless'.",
        subject="the policy's features differ from the ones the parent was trained on",
    )
    if message:
        raise FeatureSchemaError(message)
    changed = {
        name: (parent_types[name], kind)
        for name, kind in feature_types.items()
        if parent_types[name] is not None and parent_types[name] != kind
    }
    if changed:
        raise FeatureSchemaError(
            f"parent version {parent_version}: feature kinds changed (parent, now): {changed}. "
            "A fine-tuned or incremental model keeps its parent's preprocessing; after a "
            "schema change retrain with strategy 'stateless'."
        )
