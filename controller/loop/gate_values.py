"""What the promotion gate takes and gives: a :class:`PairedSample` in, a :class:`GateVerdict` out.

Value objects only; the judging is :mod:`controller.loop.gate`, the scoring of versions on matured rows
:mod:`controller.loop.scoring`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = ["GateVerdict", "PairedSample", "Verdict"]

Verdict = Literal["promote", "hold", "reject"]


def _as_array(value: Any, name: str) -> np.ndarray:
    array = value.to_numpy() if isinstance(value, (pd.Series, pd.Index)) else np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"PairedSample.{name} must be one-dimensional, got shape {array.shape}")
    return array


def _as_proba(value: Any, name: str, rows: int, classes: tuple) -> np.ndarray | None:
    if value is None:
        return None
    proba = np.asarray(value.to_numpy() if isinstance(value, pd.DataFrame) else value, dtype=np.float64)
    if not classes:
        raise ValueError(f"PairedSample.{name} is given without classes; pass classes= in the column order")
    if proba.shape != (rows, len(classes)):
        raise ValueError(
            f"PairedSample.{name} has shape {proba.shape}, expected ({rows}, {len(classes)}): one row per sample "
            f"row and one column per class of {list(classes)}"
        )
    return proba


@dataclass(frozen=True)
class PairedSample:
    """The same matured rows scored by both models (neither trained on them).

    ``champion`` / ``challenger`` are predicted labels (classification) or values (regression); the optional
    ``*_proba`` arrays have one column per entry of ``classes``, in that order.
    """

    labels: np.ndarray
    champion: np.ndarray
    challenger: np.ndarray
    champion_proba: np.ndarray | None = None
    challenger_proba: np.ndarray | None = None
    classes: tuple = ()
    fingerprint: str = ""

    def __post_init__(self) -> None:
        # Frozen, so normalise through object.__setattr__: lists and pandas objects become numpy arrays once.
        for name in ("labels", "champion", "challenger"):
            object.__setattr__(self, name, _as_array(getattr(self, name), name))
        lengths = {name: len(getattr(self, name)) for name in ("labels", "champion", "challenger")}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"PairedSample needs one champion and one challenger prediction per labeled row, got lengths "
                f"{lengths}; score the same rows with both models"
            )
        object.__setattr__(self, "classes", tuple(self.classes))
        for name in ("champion_proba", "challenger_proba"):
            object.__setattr__(self, name, _as_proba(getattr(self, name), name, self.rows, self.classes))

    @property
    def rows(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer with every number behind it; ``to_dict()`` is what gets stored."""

    verdict: Verdict
    reason: str
    metric: str
    higher_is_better: bool
    rows: int
    min_rows: int
    champion_value: float | None
    challenger_value: float | None
    delta: float | None
    required_delta: float | None
    p_value: float | None
    alpha: float
    test: Literal["mcnemar_exact", "paired_bootstrap"] | None
    champion_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    details: dict[str, Any]
    fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN and inf become None, numpy scalars become Python numbers."""
        return _json_safe(dataclasses.asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return value
