"""The compiled serving path equals the scikit-learn pipeline it was compiled from, or is refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainers import EstimatorSpec, compile_pipeline

TYPES = {"x": "numeric", "z": "numeric", "color": "categorical", "flag": "boolean"}


def training_frame(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x": rng.normal(size=n),
        "z": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
        "color": pd.Series(rng.choice(["red", "blue", "green"], size=n), dtype=object),
        "flag": pd.Series(rng.random(n) < 0.5, dtype=object),
    })
    y = pd.Series(((frame["x"] > 0) ^ (frame["color"] == "red")).astype(int))
    return frame, y


@pytest.mark.parametrize("spec", [
    {"class": "sklearn.linear_model.LogisticRegression"},
    {"pipeline": [{"class": "sklearn.preprocessing.StandardScaler"},
                  {"class": "sklearn.linear_model.SGDClassifier", "params": {"loss": "log_loss"}}]},
    {"class": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 10}},
])
def test_compiled_rows_equal_the_pipeline_on_new_rows(spec: dict) -> None:
    X, y = training_frame()
    model = EstimatorSpec.model_validate(spec).build(TYPES, "classification", seed=0).fit(X, y)
    compiled = compile_pipeline(model)
    assert compiled is not None
    rows = [{"x": 0.3, "z": None, "color": "red", "flag": True},
            {"x": -1.0, "z": 2.0, "color": "purple", "flag": None},   # an unseen category, a missing boolean
            {"x": 5.0, "color": None, "flag": False}]                 # an optional left out entirely
    frame = pd.DataFrame({"x": [0.3, -1.0, 5.0], "z": [np.nan, 2.0, np.nan],
                          "color": pd.Series(["red", "purple", None], dtype=object),
                          "flag": pd.Series([True, None, False], dtype=object)})
    assert np.allclose(compiled.predict_proba_rows(rows), model.predict_proba(frame))
    assert list(compiled.classes_) == list(model.classes_)


def test_a_regressor_compiles_too() -> None:
    X, _ = training_frame()
    y = X["x"] * 2.0
    model = EstimatorSpec.model_validate({"class": "sklearn.linear_model.Ridge"}).build(
        TYPES, "regression").fit(X, y)
    compiled = compile_pipeline(model)
    row = {"x": 1.5, "z": 0.5, "color": "blue", "flag": True}
    assert np.allclose(compiled.predict_rows([row]), model.predict(pd.DataFrame([row]).astype({"flag": object})))


def test_other_shapes_are_not_compiled() -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = training_frame()
    bare = LogisticRegression().fit(X[["x"]], y)
    assert compile_pipeline(bare) is None  # not a driftpilot pipeline: the caller keeps the frame path
    river_model = EstimatorSpec.model_validate({"class": "river.linear_model.LogisticRegression"}).build(
        {"x": "numeric"}, "classification", classes=(0, 1))
    assert compile_pipeline(river_model) is None
