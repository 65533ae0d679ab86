"""Check incoming predictions and labels against a model's policy (feature schema, target) before anything is stored.

Each check returns :class:`~controller.errors.Problem` entries naming the item, the field and what is accepted, so a
whole batch can be refused with every problem listed at once. The checks also keep out what the event store could not
hold or the models could not use: integers beyond a 64-bit float (or, as class labels, beyond 64-bit integers), text
with NUL characters or lone surrogates (PostgreSQL refuses both), and event times outside the range pandas can
represent (every window holds its times as pandas timestamps).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from controller.config import PolicyConfig
from controller.errors import Problem

PREDICTION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ID_RULE = "1-128 characters: letters, digits and . _ : - (not starting with a symbol)"
# The predictions.model_version column is VARCHAR(64).
MODEL_VERSION_MAX = 64
# Inside pandas' nanosecond Timestamp range (1677-09-21 .. 2262-04-11), with a margin for any offset.
EVENT_TIME_MIN = datetime(1678, 1, 1, tzinfo=UTC)
EVENT_TIME_MAX = datetime(2262, 1, 1, tzinfo=UTC)
EVENT_TIME_RULE = "between 1678-01-01 and 2262-01-01 UTC (the range of the timestamps driftpilot's windows hold)"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_prediction_id(index: int, value: Any) -> list[Problem]:
    if not isinstance(value, str) or not PREDICTION_ID_PATTERN.fullmatch(value):
        return [Problem(index, "prediction_id", f"bad id {show_value(value)}; expected {ID_RULE}")]
    return []


def check_model_version(index: int, value: Any) -> list[Problem]:
    if value is None:
        return []
    if not isinstance(value, str) or not 1 <= len(value) <= MODEL_VERSION_MAX:
        return [Problem(index, "model_version", f"bad model version {show_value(value)}; expected a string of 1-"
                                                f"{MODEL_VERSION_MAX} characters, such as the registry version \"3\"")]
    return check_text(index, "model_version", value)


def check_event_time(index: int, value: datetime | None) -> list[Problem]:
    """A time the store and every window can hold once converted to UTC (naive = UTC)."""
    if value is None:
        return []
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        utc = None
    if utc is None or not EVENT_TIME_MIN <= utc < EVENT_TIME_MAX:
        return [Problem(index, "event_time", f"{value.isoformat()} is out of range; send a time {EVENT_TIME_RULE}")]
    return []


def check_text(index: int, field: str, value: str) -> list[Problem]:
    """Text the store can keep: no NUL character (PostgreSQL refuses it) and valid Unicode (no lone surrogate)."""
    if "\x00" in value:
        return [Problem(index, field, "text contains a NUL character (\\u0000), which the event store cannot keep; "
                                      "remove it")]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return [Problem(index, field, "text is not valid Unicode (it holds a lone surrogate such as \\ud800); "
                                      "send UTF-8 text")]
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
                problems.append(Problem(index, field, f"expected a number, got {_type_name(value)} {show_value(value)}"))
            elif isinstance(value, int) and not _fits_float(value):
                problems.append(Problem(index, field, _too_large_for_float(value)))
            elif not math.isfinite(value) and not spec.allow_nan:
                problems.append(Problem(index, field, f"{value} is not allowed; set allow_nan: true on the feature "
                                                      "to accept NaN/inf, or send null for a missing optional value"))
        elif spec.type == "categorical":
            if not isinstance(value, str):
                problems.append(Problem(index, field,
                                        f"expected a string category, got {_type_name(value)} {show_value(value)}"))
            else:
                problems += check_text(index, field, value)
        elif not isinstance(value, bool):
            problems.append(Problem(index, field, f"expected true or false, got {_type_name(value)} {show_value(value)}"))
    return problems


def check_target_value(policy: PolicyConfig, index: int, field: str, value: Any) -> list[Problem]:
    """A label or a prediction: a known class for classification, a finite number for regression."""
    if policy.task == "regression":
        if isinstance(value, int) and not isinstance(value, bool) and not _fits_float(value):
            return [Problem(index, field, _too_large_for_float(value))]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return [Problem(index, field, f"expected a finite number for a regression target, got {show_value(value)}")]
        return []
    if value is None or isinstance(value, (float, dict, list)):
        return [Problem(index, field, f"expected a class label (string, integer or boolean), got {show_value(value)}")]
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return [Problem(index, field, f"integer class label {show_value(value)} is outside the 64-bit integer range; "
                                      "send it as a string")]
    if isinstance(value, str) and (problems := check_text(index, field, value)):
        return problems
    classes = policy.target.classes
    if classes is not None and not any(_same_class(value, c) for c in classes):
        return [Problem(index, field, f"unknown class {show_value(value)}; target.classes is {classes}")]
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
        field = f"scores.{key}"
        if known is not None and str(key) not in known:
            problems.append(Problem(index, field, f"unknown class; target.classes is {policy.target.classes}"))
        elif known is None:
            problems += check_text(index, field, key)
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not (0.0 <= prob <= 1.0):
            problems.append(Problem(index, field, f"expected a probability in [0, 1], got {show_value(prob)}"))
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


def _fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _too_large_for_float(value: int) -> str:
    return (f"integer {show_value(value)} is too large for a 64-bit float (at most about 1.8e308); send a smaller "
            "number")


def show_value(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters so an error never echoes a megabyte (or a 400-digit number)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        # Not str(value): beyond 4300 digits Python refuses to convert it.
        return f"<{'negative ' if value < 0 else ''}integer of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
    try:
        text = repr(value)
    except RecursionError:
        return f"<{_type_name(value)} nested too deeply to show>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
