"""The params every training run logs to MLflow: the estimator (class path and each parameter) and the strategy.

MLflow's runs table shows params as columns, so these are what a person filters and sorts versions by. Values are
the estimator's effective parameters (defaults included), taken from the unfitted steps the policy's spec builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainers import EstimatorSpec

_SCALARS = (str, int, float, bool, type(None))


def estimator_params(spec: EstimatorSpec, seed: int | None = None) -> dict[str, Any]:
    """``estimator`` (class paths) plus ``estimator.<param>`` (one class) or ``estimator.<Class>.<param>`` (pipeline).

    Only plain values are kept (nested estimators and callables are described by the class path already).
    """
    params: dict[str, Any] = {"estimator": spec.describe()}
    steps = spec.instantiate(seed)
    names = [type(step).__name__ for step in steps]
    for index, step in enumerate(steps):
        if len(steps) == 1:
            prefix = "estimator."
        else:
            name = names[index] if names.count(names[index]) == 1 else f"{index}.{names[index]}"
            prefix = f"estimator.{name}."
        for key, value in sorted(_step_params(step).items()):
            if isinstance(value, _SCALARS):
                params[prefix + key] = value
    return params


def training_params(spec: EstimatorSpec, strategy: str, *, seed: int | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a training run of ``strategy`` logs: the estimator's params, the strategy, then ``extra``."""
    return {**estimator_params(spec, seed), "strategy": strategy, **dict(extra or {})}


def _step_params(step: Any) -> Mapping[str, Any]:
    if hasattr(step, "get_params"):  # scikit-learn
        return step.get_params(deep=False)
    if hasattr(step, "_get_params"):  # River
        return step._get_params()
    return {}
