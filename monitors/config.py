"""Typed configuration of the monitors: the ``monitors:`` section of a policy file.

```yaml
monitors:
  data_drift:
    current: {last_rows: 5000}          # or {last_duration: "1d"}
    method: {numeric: ks}               # or one name for every feature; default wasserstein / jensenshannon
    threshold: {numeric: 0.01}          # or one number; default: the method's own
    per_feature: {amount: {method: psi, threshold: 0.2}}
    drift_share: 0.5
    sample_cap: 5000
    seed: 0
  concept_drift: {detector: adwin, params: {delta: 0.002}, loss: zero_one}
  performance: {window_rows: 1000, min_labels: 200, metric: f1, max_drop: 0.05, drop: relative}
```
"""

from __future__ import annotations

import difflib
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

from monitors.detectors import DETECTORS, build_detector, detector_spec
from monitors.drift_methods import DEFAULT_METHOD, DRIFT_METHODS, FEATURE_TYPES, check_method
from monitors.metrics import metric_for

LossName = Literal["zero_one", "log_loss", "squared", "absolute"]
MetricName = Literal["accuracy", "f1", "roc_auc", "log_loss", "mae", "rmse", "r2"]
Task = Literal["classification", "regression"]

CLASSIFICATION_LOSSES = ("zero_one", "log_loss")
REGRESSION_LOSSES = ("squared", "absolute")
DEFAULT_LOSS = {"classification": "zero_one", "regression": "absolute"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _did_you_mean(value: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------------------------------------------
# Data drift


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``"90s"``, ``"30m"``, ``"12h"``, ``"1d"``, ``"2w"`` (or a timedelta / seconds) as a timedelta."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = timedelta(seconds=value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        result = timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    # ISO 8601, as model_dump(mode="json") writes it
    elif isinstance(value, str) and value.startswith(("P", "-P")):
        result = TypeAdapter(timedelta).validate_python(value)
    else:
        raise ValueError(
            f"cannot read duration {value!r}; write a number and a unit s/m/h/d/w, e.g. '30m', '1d'"
        )
    if result <= timedelta(0):
        raise ValueError(f"duration must be positive, got {value!r}")
    return result


def format_duration(value: timedelta) -> str:
    """The shortest exact ``"<n><unit>"`` spelling of ``value`` (``"1d"``, ``"90m"``, ``"1.5s"``)."""
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{int(seconds // _UNIT_SECONDS[unit])}{unit}"
    return f"{seconds:g}s"


class LastRows(_Strict):
    """The current window is the newest ``last_rows`` rows."""

    last_rows: int = Field(ge=1)

    def select(self, frame: pd.DataFrame, times: pd.Series, as_of: datetime) -> pd.DataFrame:
        """Rows with ``times <= as_of``, newest ``last_rows`` of them (``frame`` is in time order)."""
        kept = frame.loc[(times <= as_of).to_numpy()]
        return kept.iloc[-self.last_rows :].reset_index(drop=True)


class LastDuration(_Strict):
    """The current window is every row whose time is in ``(as_of - last_duration, as_of]``."""

    last_duration: Annotated[
        timedelta,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": r"^\d+(\.\d+)?(s|m|h|d|w)$",
                "examples": ["30m", "12h", "1d"],
            }
        ),
    ]

    @field_validator("last_duration", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_serializer("last_duration", when_used="json")
    def _compact(self, value: timedelta) -> str:
        return format_duration(value)

    def select(self, frame: pd.DataFrame, times: pd.Series, as_of: datetime) -> pd.DataFrame:
        mask = (times > as_of - self.last_duration) & (times <= as_of)
        return frame.loc[mask.to_numpy()].reset_index(drop=True)


def _current_kind(value: Any) -> str | None:
    keys = (
        set(value)
        if isinstance(value, dict)
        else set(type(value).model_fields)
        if isinstance(value, BaseModel)
        else set()
    )
    return "rows" if "last_rows" in keys else "duration" if "last_duration" in keys else None


CurrentWindow = Annotated[
    Annotated[LastRows, Tag("rows")] | Annotated[LastDuration, Tag("duration")],
    Discriminator(
        _current_kind,
        custom_error_type="current_window",
        custom_error_message="current must be {last_rows: N} or {last_duration: '1d'}",
    ),
]


class FeatureTest(_Strict):
    """The test of one feature; unset fields fall back to the section's method/threshold."""

    method: str | None = None
    threshold: float | None = Field(None, gt=0)

    @field_validator("method")
    @classmethod
    def _known(cls, method: str | None) -> str | None:
        if method is not None:
            check_method(method)
        return method


class ByType(_Strict):
    """A value per feature type; one plain value in YAML means the same value for every type."""

    numeric: Any = None
    categorical: Any = None
    boolean: Any = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return {t: value for t in FEATURE_TYPES}
        return value

    def get(self, feature_type: str) -> Any:
        return getattr(self, feature_type)


class MethodByType(ByType):
    numeric: str | None = None
    categorical: str | None = None
    boolean: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> MethodByType:
        for feature_type in FEATURE_TYPES:
            name = self.get(feature_type)
            if name is not None:
                try:
                    check_method(name, feature_type)
                except ValueError as exc:
                    raise ValueError(
                        f"{exc} (to set one type only, write e.g. method: {{numeric: {name}}})"
                    ) from None
        return self


class ThresholdByType(ByType):
    numeric: float | None = Field(None, gt=0)
    categorical: float | None = Field(None, gt=0)
    boolean: float | None = Field(None, gt=0)


class DataDriftConfig(_Strict):
    """Data drift: does the current window's feature distribution differ from the reference window's?"""

    enabled: bool = True
    current: CurrentWindow = Field(
        default_factory=lambda: LastRows(last_rows=5000),
        description="The current window: {last_rows: N} or {last_duration: '1d'}.",
    )
    method: MethodByType = Field(
        default_factory=MethodByType,
        description="Test per feature type (or one name for all); default wasserstein (numeric), "
        "jensenshannon (categorical, boolean).",
    )
    threshold: ThresholdByType = Field(
        default_factory=ThresholdByType,
        description="Threshold per feature type (or one number); default: the method's own.",
    )
    per_feature: dict[str, FeatureTest] = Field(default_factory=dict)
    drift_share: float = Field(
        0.5, gt=0, le=1, description="The dataset drifts when this share of features drifts."
    )
    sample_cap: int | None = Field(
        5000,
        ge=100,
        description="At most this many rows per side go to the tests (seeded sample); null = no cap.",
    )
    seed: int = 0
    min_rows: int = Field(30, ge=2, description="Fewer rows than this on either side: no verdict.")

    @model_validator(mode="before")
    @classmethod
    def _current_shape(cls, data: Any) -> Any:
        current = data.get("current") if isinstance(data, dict) else None
        if isinstance(current, dict) and set(current) not in ({"last_rows"}, {"last_duration"}):
            raise ValueError(
                f"current must be exactly one of {{last_rows: N}} or {{last_duration: '1d'}}, got keys {sorted(current)}"
            )
        return data

    def feature_test(self, feature: str, feature_type: str) -> tuple[str, float]:
        """The (method, threshold) used for one feature; raise ``ValueError`` if the method does not fit the type."""
        own = self.per_feature.get(feature, FeatureTest())
        method = own.method or self.method.get(feature_type) or DEFAULT_METHOD[feature_type]
        try:
            check_method(method, feature_type)
        except ValueError as exc:
            raise ValueError(f"feature {feature!r} ({feature_type}): {exc}") from None
        threshold = (
            own.threshold
            or self.threshold.get(feature_type)
            or DRIFT_METHODS[method].default_threshold
        )
        return method, float(threshold)

    def check_features(self, feature_types: dict[str, str]) -> None:
        """Fail at start-up when a per-feature entry names an unknown feature or a method misfits a type."""
        unknown = sorted(set(self.per_feature) - set(feature_types))
        if unknown:
            raise ValueError(
                f"data_drift.per_feature names unknown feature(s) {unknown}"
                f"{_did_you_mean(unknown[0], list(feature_types))}; the policy's features are {sorted(feature_types)}"
            )
        for name, feature_type in feature_types.items():
            if feature_type not in FEATURE_TYPES:
                raise ValueError(
                    f"feature {name!r} has type {feature_type!r}; accepted: {', '.join(FEATURE_TYPES)}"
                )
            self.feature_test(name, feature_type)


# --------------------------------------------------------------------------------------------------------------
# Concept drift


class ConceptDriftConfig(_Strict):
    """Concept drift: a River detector over the champion's per-row loss, in label-arrival order."""

    enabled: bool = True
    detector: str = Field("adwin", description=f"One of: {', '.join(DETECTORS)}.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Detector parameters (River's names); override the project defaults.",
    )
    loss: LossName | None = Field(
        None, description="Per-row loss; default zero_one (classification) / absolute (regression)."
    )
    scale_warmup_rows: int = Field(
        200,
        ge=2,
        description="page_hinkley only: losses are divided by the std of the first N losses.",
    )
    history_rows: int = Field(
        10_000,
        ge=0,
        description="Recent rows whose label seq/time are kept to place an estimated change point.",
    )

    @field_validator("detector", mode="before")
    @classmethod
    def _known_detector(cls, name: Any) -> Any:
        if isinstance(name, str) and name not in DETECTORS:
            raise ValueError(
                f"unknown detector {name!r}{_did_you_mean(name, list(DETECTORS))}; valid detectors: {', '.join(DETECTORS)}"
            )
        return name

    @model_validator(mode="after")
    def _coherent(self) -> ConceptDriftConfig:
        spec = detector_spec(self.detector)
        # Binary detectors count errors: a real-valued loss would be accepted silently by River and mean
        # nothing, so it is refused here rather than thresholded (a thresholded log loss is zero_one anyway).
        if spec.binary and self.loss not in (None, "zero_one"):
            raise ValueError(
                f"detector {self.detector!r} takes 0/1 errors, so loss must be zero_one (got {self.loss!r}); "
                "for a real-valued loss use adwin, page_hinkley or kswin"
            )
        # A bad parameter fails at start-up, not at the first tick
        build_detector(self.detector, self.params)
        return self

    def loss_for(self, task: str) -> str:
        """The loss in use for ``task``; raise ``ValueError`` when it does not fit the task."""
        if self.loss is None:
            if detector_spec(self.detector).binary and task == "regression":
                raise ValueError(
                    f"detector {self.detector!r} needs 0/1 errors, which a regression model has not; "
                    "use adwin, page_hinkley or kswin with loss squared or absolute"
                )
            return DEFAULT_LOSS[task]
        fitting = CLASSIFICATION_LOSSES if task == "classification" else REGRESSION_LOSSES
        if self.loss not in fitting:
            raise ValueError(
                f"loss {self.loss!r} does not fit a {task} model; use one of: {', '.join(fitting)}"
            )
        return self.loss


# --------------------------------------------------------------------------------------------------------------
# Performance


class PerformanceConfig(_Strict):
    """Live performance on the last ``window_rows`` matured labels against the metric recorded at promotion."""

    enabled: bool = True
    window_rows: int = Field(1000, ge=1)
    min_labels: int = Field(
        200, ge=1, description="Fewer labeled predictions than this: no verdict."
    )
    metric: MetricName | None = Field(
        None, description="Default accuracy (classification) / rmse (regression). The gate judges the same metric "
        "unless gate.metric is set."
    )
    max_drop: float = Field(0.05, ge=0)
    drop: Literal["relative", "absolute"] = Field(
        "relative",
        description="relative: (reference - current) / |reference| for higher-is-better metrics, "
        "(current - reference) / |reference| for losses; absolute: the same without the division.",
    )
    positive_class: int | str | bool | None = Field(
        None,
        description="Binary F1/ROC AUC: the positive class (also the gate's, unless gate.positive_class is set); "
        "default 1/True when the classes are 0/1 or False/True (see monitors.metrics).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> PerformanceConfig:
        if self.min_labels > self.window_rows:
            raise ValueError(
                f"min_labels ({self.min_labels}) is larger than window_rows ({self.window_rows}), so no verdict "
                "could ever be given; lower min_labels or raise window_rows"
            )
        return self

    def metric_for(self, task: str) -> str:
        """The monitored metric for ``task``; ValueError when the configured one does not fit the task."""
        return metric_for(task, self.metric)


class MonitorsConfig(_Strict):
    """The ``monitors:`` section of a policy file."""

    data_drift: DataDriftConfig = Field(default_factory=DataDriftConfig)
    concept_drift: ConceptDriftConfig = Field(default_factory=ConceptDriftConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
