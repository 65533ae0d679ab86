"""The data-drift tests Evidently 0.7 offers, as plain data (no Evidently import).

Which side of the threshold means drift depends on the kind of test: a p-value test drifts when
``score < threshold`` (``ks`` and ``cramer_von_mises``: ``<=``), a distance drifts when
``score >= threshold`` (``ed``: ``>``). ``tests/monitors`` checks this table against Evidently's registry,
so an upstream change fails a test instead of silently flipping a flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FeatureType = Literal["numeric", "categorical", "boolean"]
FEATURE_TYPES: tuple[str, ...] = ("numeric", "categorical", "boolean")

# Booleans go to Evidently as a categorical column with the values "True"/"False".
EVIDENTLY_KIND: dict[str, str] = {"numeric": "num", "categorical": "cat", "boolean": "cat"}


@dataclass(frozen=True)
class DriftMethod:
    name: str
    kinds: frozenset[str]  # Evidently column kinds: "num" and/or "cat"
    score: Literal["p_value", "distance"]
    default_threshold: float

    def applies_to(self, feature_type: str) -> bool:
        return EVIDENTLY_KIND[feature_type] in self.kinds


def _m(
    name: str, kinds: str, score: Literal["p_value", "distance"], threshold: float
) -> DriftMethod:
    return DriftMethod(name, frozenset(kinds.split(",")), score, threshold)


DRIFT_METHODS: dict[str, DriftMethod] = {
    m.name: m
    for m in (
        _m("ks", "num", "p_value", 0.05),
        _m("wasserstein", "num", "distance", 0.1),
        _m("anderson", "num", "p_value", 0.1),
        _m("cramer_von_mises", "num", "p_value", 0.1),
        _m("ed", "num", "distance", 0.1),
        _m("es", "num", "p_value", 0.05),
        _m("mannw", "num", "p_value", 0.05),
        _m("t_test", "num", "p_value", 0.05),
        _m("empirical_mmd", "num", "p_value", 0.1),
        _m("chisquare", "cat", "p_value", 0.05),
        _m("z", "cat", "p_value", 0.05),
        _m("fisher_exact", "cat", "p_value", 0.1),
        _m("g_test", "cat", "p_value", 0.1),
        # TVD's p-value is slow: ~6 s for one column of 3,000 rows here (chi-square: 3 ms).
        _m("TVD", "cat", "p_value", 0.1),
        _m("jensenshannon", "num,cat", "distance", 0.1),
        _m("kl_div", "num,cat", "distance", 0.1),
        _m("psi", "num,cat", "distance", 0.1),
        _m("hellinger", "num,cat", "distance", 0.1),
    )
}

# Explicit defaults instead of Evidently's "auto", which switches test family at 1,000 reference rows
# (K-S/chi-square p-values below, Wasserstein/Jensen-Shannon distances above): a window that grows past
# 1,000 rows would otherwise change meaning and threshold silently.
DEFAULT_METHOD: dict[str, str] = {
    "numeric": "wasserstein",
    "categorical": "jensenshannon",
    "boolean": "jensenshannon",
}


def methods_for(feature_type: str) -> list[str]:
    """Names of the tests that accept a feature of this type."""
    return [name for name, m in DRIFT_METHODS.items() if m.applies_to(feature_type)]


def check_method(name: str, feature_type: str | None = None) -> DriftMethod:
    """The method called ``name``; raise ``ValueError`` naming the valid ones when it is unknown or unfit."""
    method = DRIFT_METHODS.get(name)
    if method is None:
        raise ValueError(
            f"unknown drift method {name!r}; valid methods: numeric: {', '.join(methods_for('numeric'))}; "
            f"categorical/boolean: {', '.join(methods_for('categorical'))}"
        )
    if feature_type is not None and not method.applies_to(feature_type):
        raise ValueError(
            f"drift method {name!r} does not apply to {feature_type} features; "
            f"use one of: {', '.join(methods_for(feature_type))}"
        )
    return method


def is_drift(method: str, score: float, threshold: float) -> bool:
    """Evidently's own rule for one score (p-value: small means drift; distance: large means drift)."""
    if DRIFT_METHODS[method].score == "p_value":
        return score <= threshold if method in ("ks", "cramer_von_mises") else score < threshold
    return score > threshold if method == "ed" else score >= threshold
