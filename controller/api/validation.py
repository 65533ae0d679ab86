"""Check incoming predictions and labels against a model's policy (feature schema, target) before anything is stored.

Each check returns :class:`~controller.errors.Problem` entries naming the item, the field and what is accepted, so a
whole batch can be refused with every problem listed at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from controller.config import PolicyConfig
from controller.errors import Problem

PREDICTION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
ID_RULE = "1-128 characters: letters, digits and . _ : - (not starting with a symbol)"


def check_prediction_id(index: int, value: Any) -> list[Problem]:
    if not isinstance(value, str) or not PREDICTION_ID_PATTERN.match(value):
        return [Problem(index, "prediction_id", f"bad id {value!r}; expected {ID_RULE}")]
    return []


def check_features(policy: PolicyConfig, index: int, features: Mapping[str, Any]) -> list[Problem]:
    """Unknown and missing features, wrong types, and NaN/inf where the schema does not allow them."""
    problems = []
    for name in features:
        if name not in policy.features:
            problems.append(Problem(index, f"features.{name}",
                                    f"unknown feature; the policy declares: {', '.join(policy.features)}"))
    for name, spec in policy.features.items():
        field = f"features.{name}"
        value = features.get(name)
        if value is None:
            if spec.required:
                problems.append(Problem(index, field, "required feature is missing (or null)"))
            continue
        if spec.type == "numeric":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(Problem(index, field, f"expected a number, got {_type_name(value)} {value!r}"))
            elif not math.isfinite(value) and not spec.allow_nan:
                problems.append(Problem(index, field, f"{value} is not allowed; set allow_nan: true on the feature "
                                                      "to accept NaN/inf, or send null for a missing optional value"))
        elif spec.type == "categorical":
            if not isinstance(value, str):
                problems.append(Problem(index, field,
                                        f"expected a string category, got {_type_name(value)} {value!r}"))
        elif not isinstance(value, bool):
            problems.append(Problem(index, field, f"expected true or false, got {_type_name(value)} {value!r}"))
    return problems


def check_target_value(policy: PolicyConfig, index: int, field: str, value: Any) -> list[Problem]:
    """A label or a prediction: a known class for classification, a finite number for regression."""
    if policy.task == "regression":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return [Problem(index, field, f"expected a finite number for a regression target, got {value!r}")]
        return []
    if value is None or isinstance(value, (float, dict, list)):
        return [Problem(index, field, f"expected a class label (string, integer or boolean), got {value!r}")]
    classes = policy.target.classes
    if classes is not None and not any(_same_class(value, c) for c in classes):
        return [Problem(index, field, f"unknown class {value!r}; target.classes is {classes}")]
    return []


def check_scores(policy: PolicyConfig, index: int, scores: Mapping[str, Any] | None) -> list[Problem]:
    """Class probabilities: finite numbers in [0, 1], keyed by known classes."""
    if scores is None:
        return []
    if policy.task == "regression":
        return [Problem(index, "scores", "class scores only apply to classification models")]
    problems = []
    known = {str(c) for c in policy.target.classes} if policy.target.classes is not None else None
    for key, prob in scores.items():
        if known is not None and str(key) not in known:
            problems.append(Problem(index, f"scores.{key}", f"unknown class; target.classes is {policy.target.classes}"))
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not (0.0 <= prob <= 1.0):
            problems.append(Problem(index, f"scores.{key}", f"expected a probability in [0, 1], got {prob!r}"))
    return problems


def check_unique_ids(ids: Sequence[str | None]) -> list[Problem]:
    seen: dict[str, int] = {}
    problems = []
    for index, pid in enumerate(ids):
        if pid is None:
            continue
        if pid in seen:
            problems.append(Problem(index, "prediction_id", f"{pid!r} appears twice in this batch (first at item "
                                                            f"{seen[pid]})"))
        else:
            seen[pid] = index
    return problems


def normalize_target(policy: PolicyConfig, value: Any) -> Any:
    """Regression targets are stored as floats so 3 and 3.0 are the same label."""
    return float(value) if policy.task == "regression" else value


def _same_class(value: Any, cls: Any) -> bool:
    return type(value) is type(cls) and value == cls


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
