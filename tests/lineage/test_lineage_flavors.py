"""Flavors on the real sqlite store: scikit-learn models MLflow's default (skops) refuses, and River round trips."""

from __future__ import annotations

import copy
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from river import datasets, linear_model, preprocessing, tree
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lineage import LineageError, ModelRegistry, flavor_for, pinned_requirements
from tests.lineage.lineage_helpers import make_data, make_record

X, Y = make_data(n=400, seed=1)


class ClipOutliers(BaseEstimator, TransformerMixin):
    """A custom transformer: skops refuses unknown classes, cloudpickle does not."""

    def __init__(self, limit: float = 2.0) -> None:
        self.limit = limit

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.clip(X, -self.limit, self.limit)


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=15, random_state=0),
        GradientBoostingClassifier(n_estimators=20, random_state=0),
        HistGradientBoostingClassifier(max_iter=20, random_state=0),
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0),
        make_pipeline(
            ClipOutliers(1.5),
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(4,), max_iter=200, random_state=0),
        ),
    ],
    ids=[
        "random_forest",
        "gradient_boosting",
        "hist_gradient_boosting",
        "mlp",
        "pipeline_custom_transformer",
    ],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_models_that_skops_refuses_register_and_load_natively(
    sqlite_registry: ModelRegistry, model_name: str, estimator
):
    fitted = estimator.fit(X, Y)
    info = sqlite_registry.register(model_name, fitted, make_record(), training_data=(X, Y))
    assert info.flavor == "sklearn"
    sqlite_registry.promote(model_name, info.version)

    loaded = sqlite_registry.load(model_name)
    assert type(loaded.model) is type(fitted)
    np.testing.assert_array_equal(loaded.model.predict_proba(X), fitted.predict_proba(X))


def _river_stream(n: int) -> list[tuple[dict, bool]]:
    return list(datasets.Phishing().take(n))


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=1),
    ],
    ids=["scaler_logreg", "hoeffding_adaptive_tree"],
)
def test_river_model_round_trips_and_keeps_learning_like_the_original(
    sqlite_registry: ModelRegistry, model_name: str, make_model
):
    stream = _river_stream(900)
    original = make_model()
    for x, y in stream[:500]:
        original.learn_one(x, y)
    info = sqlite_registry.register(model_name, original, make_record())
    assert info.flavor == "river"

    loaded = sqlite_registry.load(model_name, version=info.version).model
    assert type(loaded) is type(original) and loaded is not original
    held_out = [x for x, _ in stream[500:700]]
    assert [loaded.predict_proba_one(x) for x in held_out] == [
        original.predict_proba_one(x) for x in held_out
    ]

    for x, y in stream[700:900]:  # the same further updates on both
        original.learn_one(x, y)
        loaded.learn_one(x, y)
    after = [x for x, _ in stream[:200]]
    assert [loaded.predict_proba_one(x) for x in after] == [
        original.predict_proba_one(x) for x in after
    ]
    before_updates = sqlite_registry.load(model_name, version=info.version).model
    assert [before_updates.predict_proba_one(x) for x in after] != [
        loaded.predict_proba_one(x) for x in after
    ]


def test_river_pyfunc_predicts_class_probabilities_for_a_dataframe(
    sqlite_registry: ModelRegistry, model_name: str
):
    stream = _river_stream(400)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in stream[:300]:
        model.learn_one(x, y)
    frame = pd.DataFrame([x for x, _ in stream[300:]])
    labels = pd.Series([y for _, y in stream[300:]], name="is_phishing")
    info = sqlite_registry.register(model_name, model, make_record(), training_data=(frame, labels))

    # Through the generic pyfunc interface, as `mlflow models serve` would use it (from the artifact folder).
    client = MlflowClient(sqlite_registry.tracking_uri)
    model_id = client.get_model_version(model_name, info.version).source.removeprefix("models:/")
    artifact_dir = client.get_logged_model(model_id).artifact_location
    pyfunc = mlflow.pyfunc.load_model(artifact_dir)
    probas = pyfunc.predict(frame)
    assert list(probas.columns) == [False, True]
    expected = [model.predict_proba_one(x)[True] for x in frame.to_dict(orient="records")]
    np.testing.assert_allclose(probas[True].to_numpy(), expected)
    np.testing.assert_allclose(probas.sum(axis=1).to_numpy(), 1.0)

    requirements = (Path(artifact_dir) / "requirements.txt").read_text().split()
    assert set(pinned_requirements("mlflow", "river", "cloudpickle", "numpy", "pandas")) <= set(
        requirements
    )
    assert any(r.startswith("river==") for r in requirements)


def test_sklearn_model_pins_installed_versions(sqlite_registry: ModelRegistry, model_name: str):
    info = sqlite_registry.register(
        model_name, RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y), make_record()
    )
    client = MlflowClient(sqlite_registry.tracking_uri)
    model_id = client.get_model_version(model_name, info.version).source.removeprefix("models:/")
    requirements = (
        Path(client.get_logged_model(model_id).artifact_location) / "requirements.txt"
    ).read_text()
    assert f"scikit-learn=={version('scikit-learn')}" in requirements.split()
    assert f"mlflow=={version('mlflow')}" in requirements.split()


def test_unsupported_models_are_refused_with_what_is_accepted(
    sqlite_registry: ModelRegistry, model_name: str
):
    with pytest.raises(
        LineageError, match="cannot register a builtins.dict: .*scikit-learn.*River"
    ):
        sqlite_registry.register(model_name, {"weights": [1, 2]}, make_record())
    assert sqlite_registry.aliases(model_name) == {}  # nothing was created
    assert flavor_for(copy.deepcopy(tree.HoeffdingTreeClassifier())).name == "river"
