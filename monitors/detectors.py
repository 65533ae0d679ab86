"""River drift detectors behind one registry (the only module that imports ``river.drift``).

Project defaults differ from River's where River's false-alarm on loss streams. Measured on 10 seeded
stationary streams of 10,000 rows each (see ``docs/benchmarks-monitors.md`` for the full table):

- ``page_hinkley``: River's ``threshold=50`` is in the units of the input and false-alarms on real-valued
  losses. The monitor divides every loss by the standard deviation of the first ``scale_warmup_rows`` losses,
  so ``delta``/``threshold`` are in standard deviations; ``delta=0.3, threshold=75, mode="up"`` (only rising
  loss is a concept drift worth retraining for).
- ``ddm``: ``warm_start=500, warning_threshold=3, drift_threshold=4`` (River's 30/2/3 false-alarmed in 7 of
  10 streams at a 10 % error rate).
- ``hddm_a``: confidences 1e-4/1e-3; ``hddm_w``: ``lambda_val=0.005`` (defaults false-alarmed at a 30 % error rate).
- ``kswin``: ``alpha=1e-5, window_size=500, stat_size=150`` and a fixed ``seed``. River's ``alpha=0.005`` with
  a 100-row window false-alarmed on every real-valued stream (it runs a K-S test on every row), and its
  30-row samples could not see a 0.1 -> 0.4 error-rate change on 0/1 losses; with no seed its sub-sampling
  is not reproducible. KSWIN costs about 0.3 ms per row (one scipy test each).
- ``fhddm``: River's defaults, fed ``1 - error``: it detects a fall in the rate of 1s (its docstring says
  1 = error, but fed errors it never fired on a rising error rate; fed 1 = correct it did).
- ``eddm``: River's defaults; EDDM false-alarms on stationary low-error streams whatever its parameters
  (measured, not fixed here): prefer ``adwin`` unless you know why you want it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from river import drift
from river.drift import binary


@dataclass(frozen=True)
class DetectorSpec:
    """How to build one detector and what it can tell."""

    name: str
    cls: Callable[..., Any]
    binary: bool  # needs 0/1 input (1 = error)
    has_warning: bool
    # How the change point is estimated on a detection (see ConceptDriftMonitor).
    change_estimate: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    scaled: bool = False  # losses are divided by the warm-up standard deviation before the update
    # River's FHDDM watches for a *drop* in the rate of 1s, so it is fed 1 - error (1 = correct).
    inverted: bool = False

    def accepted_params(self) -> list[str]:
        # ``window`` (KSWIN) pre-fills state: that is state, not a hyperparameter.
        return [p for p in inspect.signature(self.cls).parameters if p != "window"]


DETECTORS: dict[str, DetectorSpec] = {
    s.name: s
    for s in (
        DetectorSpec(
            "adwin", drift.ADWIN, binary=False, has_warning=False, change_estimate="adwin_width"
        ),
        DetectorSpec(
            "page_hinkley",
            drift.PageHinkley,
            binary=False,
            has_warning=False,
            change_estimate="detection_row",
            defaults={"delta": 0.3, "threshold": 75.0, "mode": "up"},
            scaled=True,
        ),
        DetectorSpec(
            "kswin",
            drift.KSWIN,
            binary=False,
            has_warning=False,
            change_estimate="detection_row",
            defaults={"alpha": 1e-5, "window_size": 500, "stat_size": 150, "seed": 0},
        ),
        DetectorSpec(
            "ddm",
            binary.DDM,
            binary=True,
            has_warning=True,
            change_estimate="warning_start",
            defaults={"warm_start": 500, "warning_threshold": 3.0, "drift_threshold": 4.0},
        ),
        DetectorSpec(
            "eddm", binary.EDDM, binary=True, has_warning=True, change_estimate="warning_start"
        ),
        DetectorSpec(
            "hddm_a",
            binary.HDDMA,
            binary=True,
            has_warning=True,
            change_estimate="warning_start",
            defaults={"drift_confidence": 1e-4, "warning_confidence": 1e-3},
        ),
        DetectorSpec(
            "hddm_w",
            binary.HDDMW,
            binary=True,
            has_warning=True,
            change_estimate="warning_start",
            defaults={"lambda_val": 0.005},
        ),
        DetectorSpec(
            "fhddm",
            binary.FHDDM,
            binary=True,
            has_warning=False,
            change_estimate="detection_row",
            inverted=True,
        ),
    )
}


def detector_spec(name: str) -> DetectorSpec:
    """The spec of ``name``; raise ``ValueError`` listing the valid names when it is unknown."""
    spec = DETECTORS.get(name)
    if spec is None:
        raise ValueError(
            f"unknown concept-drift detector {name!r}; valid detectors: {', '.join(DETECTORS)}"
        )
    return spec


def resolve_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Project defaults overlaid with ``params``; raise ``ValueError`` on a parameter the detector lacks."""
    spec = detector_spec(name)
    accepted = spec.accepted_params()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"detector {name!r} has no parameter(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    return {**spec.defaults, **params}


def build_detector(name: str, params: Mapping[str, Any]) -> Any:
    """A fresh River detector; River's own ``ValueError`` for a bad value is re-raised with the detector name."""
    resolved = resolve_params(name, params)
    try:
        return detector_spec(name).cls(**resolved)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"detector {name!r} refused params {resolved}: {exc}") from None


def window_rows(detector: Any) -> int | None:
    """Rows the detector holds in its window (ADWIN, KSWIN); None for detectors that keep O(1) statistics."""
    if isinstance(detector, drift.ADWIN):
        return int(detector.width)
    if isinstance(detector, drift.KSWIN):
        return len(detector.window)
    return None


def river_version() -> str:
    import river

    return river.__version__
