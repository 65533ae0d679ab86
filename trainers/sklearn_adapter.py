"""Everything that touches scikit-learn: the schema-derived preprocessing and fine-tune methods.

Preprocessing is a `ColumnTransformer` named "features" in front of the user's steps:
- numeric: `SimpleImputer(strategy="median")` (NaN for a missing optional);
- categorical: values cast to str, then `OneHotEncoder(handle_unknown="ignore")`; a missing
  value (None) is its own category;
- boolean: True/False -> 1.0/0.0, a missing value imputed with the most frequent one.
It is fitted once, when the model is fitted from scratch (bootstrap or stateless), and stays
frozen through fine-tunes: medians and the category list are the bootstrap ones, and a
category first seen after bootstrap encodes as all zeros. Only the final step keeps learning.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from trainers.errors import NotFineTunableError, TrainingDataError

FEATURES_STEP = "features"

HGB_REASON = (
    "{name} cannot be fine-tuned: HistGradientBoosting warm start re-bins the features on the "
    "new rows while its existing trees keep their old integer bin thresholds, so the added "
    "trees are fitted to corrupted residuals (driftpilot api-notes section 4). Use strategy "
    "'stateless' (a full refit) instead, or an estimator that supports fine-tuning: "
    "partial_fit (SGDClassifier, MLPClassifier, ...) or GradientBoosting/RandomForest warm start."
)


def is_transformer(obj: Any) -> bool:
    return hasattr(obj, "fit") and hasattr(obj, "transform")


def is_predictor(obj: Any) -> bool:
    return hasattr(obj, "fit") and hasattr(obj, "predict")


def matches_task(obj: Any, task: str) -> bool:
    return is_classifier(obj) if task == "classification" else is_regressor(obj)


def booleans_to_float(X: Any) -> np.ndarray:
    """True/False -> 1.0/0.0; None or NaN -> NaN (imputed next). Vectorised: runs per refit."""
    frame = pd.DataFrame(X)
    missing = frame.isna().to_numpy()
    values = frame.where(~missing, False).astype(bool).to_numpy(float)
    values[missing] = np.nan
    return values


def categories_to_str(X: Any) -> np.ndarray:
    """Cast categories to str so the encoder never sees mixed int/str; None stays missing."""
    frame = pd.DataFrame(X)
    missing = frame.isna().to_numpy()
    values = frame.astype(str).to_numpy(object)
    values[missing] = None
    return values


def column_transformer(feature_types: Mapping[str, str]) -> ColumnTransformer:
    by_kind: dict[str, list[str]] = {"numeric": [], "categorical": [], "boolean": []}
    for name, kind in feature_types.items():
        by_kind[kind].append(name)
    parts: list[tuple[str, Any, list[str]]] = []
    if by_kind["numeric"]:
        # keep_empty_features: an optional never seen at bootstrap must keep its column,
        # or every later transform would change width.
        parts.append(
            ("numeric", SimpleImputer(strategy="median", keep_empty_features=True),
             by_kind["numeric"])
        )
    if by_kind["categorical"]:
        parts.append(
            (
                "categorical",
                make_pipeline(
                    FunctionTransformer(categories_to_str, feature_names_out="one-to-one"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                by_kind["categorical"],
            )
        )
    if by_kind["boolean"]:
        parts.append(
            (
                "boolean",
                make_pipeline(
                    FunctionTransformer(booleans_to_float, feature_names_out="one-to-one"),
                    SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                ),
                by_kind["boolean"],
            )
        )
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def assemble(steps: Sequence[Any], feature_types: Mapping[str, str]) -> Pipeline:
    """`features` ColumnTransformer followed by the user's steps, flat, final estimator last."""
    named = make_pipeline(*steps).steps
    return Pipeline([(FEATURES_STEP, column_transformer(feature_types)), *named])


def feature_types_of(model: Any) -> dict[str, str | None] | None:
    """The schema a fitted model was trained on: kinds from our ColumnTransformer, else names only."""
    if isinstance(model, Pipeline) and FEATURES_STEP in model.named_steps:
        ct = model.named_steps[FEATURES_STEP]
        if hasattr(ct, "transformers_"):
            kinds = {
                column: kind
                for kind, _, columns in ct.transformers_
                if kind in ("numeric", "categorical", "boolean")
                for column in columns
            }
            return {name: kinds.get(name) for name in ct.feature_names_in_}
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return None
    return {str(name): None for name in names}


def final_estimator(model: Any) -> Any:
    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def describe(model: Any) -> str:
    steps = [s for n, s in model.steps if n != FEATURES_STEP] if isinstance(model, Pipeline) else [model]
    return " | ".join(f"{type(s).__module__.split('._')[0]}.{type(s).__name__}" for s in steps)


def fine_tune_method(model: Any) -> str:
    """`partial_fit` or `warm_start`, or NotFineTunableError saying why and what to do instead."""
    final = final_estimator(model)
    name = type(final).__name__
    if name.startswith("HistGradientBoosting"):
        raise NotFineTunableError(HGB_REASON.format(name=name))
    if hasattr(final, "partial_fit"):
        return "partial_fit"
    params = final.get_params(deep=False) if hasattr(final, "get_params") else {}
    if "warm_start" in params and "n_estimators" in params:
        return "warm_start"
    hint = ""
    if name.startswith("MLP") and "solver" in params:
        hint = f" (with solver={params['solver']!r}; MLP supports partial_fit with 'sgd' or 'adam')"
    elif "warm_start" in params:
        hint = (
            " (its warm_start only initialises a full re-solve on the new rows, which forgets the "
            "old window once it converges)"
        )
    raise NotFineTunableError(
        f"{name} cannot be fine-tuned{hint}: it has no partial_fit and no warm start that adds "
        "estimators. Fine-tunable final steps have partial_fit (SGD*, MLP*, *NB, Perceptron, "
        "PassiveAggressive*) or warm_start with n_estimators (GradientBoosting*, RandomForest*, "
        "ExtraTrees*). Use strategy 'stateless' instead."
    )


def check_known_classes(model: Any, y: pd.Series) -> None:
    """A fine-tuned classifier keeps its classes; a label it never saw needs a refit."""
    classes = getattr(final_estimator(model), "classes_", None)
    if classes is None:
        return
    unseen = sorted(set(y.tolist()) - set(np.asarray(classes).tolist()), key=repr)
    if unseen:
        raise NotFineTunableError(
            f"the new rows contain classes {unseen} the parent never saw (it knows "
            f"{np.asarray(classes).tolist()}); a fine-tuned classifier cannot add classes. "
            "Use strategy 'stateless', or list every class in the policy so the bootstrap "
            "model knows them."
        )


def fine_tune(
    parent: Any, X: pd.DataFrame, y: pd.Series, method: str, *, epochs: int, n_more_estimators: int
) -> tuple[Any, dict[str, Any]]:
    """Continue a deep copy of `parent` on (X, y); the parent itself is never touched."""
    child = copy.deepcopy(parent)
    final = final_estimator(child)
    # The fitted preprocessing is frozen: it is only used to transform the new rows.
    Xt = child[:-1].transform(X) if isinstance(child, Pipeline) else X
    target = y.to_numpy()
    if method == "partial_fit":
        for _ in range(epochs):
            final.partial_fit(Xt, target)
        return child, {"method": "partial_fit", "epochs": epochs}
    before = len(final.estimators_)
    final.set_params(warm_start=True, n_estimators=before + n_more_estimators)
    final.fit(Xt, target)
    return child, {"method": "warm_start", "trees_before": before,
                   "trees_added": len(final.estimators_) - before}


def check_fit_labels(y: pd.Series, task: str) -> None:
    if task == "classification" and y.nunique(dropna=False) < 2:
        raise TrainingDataError(
            f"the window holds a single class ({y.iloc[0]!r}); a scikit-learn classifier needs "
            "at least two classes to fit. Wait for more labels or widen the window."
        )
