"""Schema-derived preprocessing: missing optionals, new categories, booleans, label types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.trainers.trainer_testkit import MIXED_TYPES, RIVER_LR, SGD, context, make_window, mixed_frame
from trainers import NO_PARENT, ParentModel, TrainingDataError, get_trainer
from trainers.river_adapter import to_rows

ODD_ROWS = pd.DataFrame({
    "num_a": [np.nan, 0.3, 1.0],
    "num_b": [np.nan, np.nan, 2.0],
    "color": pd.Series([None, "purple", "red"], dtype=object),  # purple never seen
    "flag": pd.Series([None, True, False], dtype=object),
})


@pytest.mark.parametrize("spec", [SGD, RIVER_LR], ids=["sklearn", "river"])
def test_missing_values_and_unseen_categories_predict(spec):
    X, y = mixed_frame(500, seed=1)
    model = get_trainer("stateless").train(make_window(X, y), NO_PARENT, context(spec)).model
    predicted = model.predict(ODD_ROWS)
    assert len(predicted) == 3 and set(np.asarray(predicted).tolist()) <= {0, 1}
    assert np.isfinite(model.predict_proba(ODD_ROWS)).all()


def test_river_rows_drop_missing_values_and_encode_kinds():
    rows = to_rows(ODD_ROWS, MIXED_TYPES)
    assert rows == [
        {},
        {"num_a": 0.3, "color": "purple", "flag": 1.0},
        {"num_a": 1.0, "num_b": 2.0, "color": "red", "flag": 0.0},
    ]


def test_sklearn_preprocessing_is_frozen_after_bootstrap():
    X, y = mixed_frame(500, seed=1)
    ctx = context(SGD)
    boot = get_trainer("stateless").train(make_window(X, y), NO_PARENT, ctx).model
    categories = boot.named_steps["features"].named_transformers_["categorical"][-1].categories_
    newer = X.assign(color=np.where(np.arange(500) % 2, "purple", "red").astype(object))
    child = get_trainer("finetune").train(make_window(newer, y, first_seq=501),
                                          ParentModel(boot, version="1"), ctx).model
    child_categories = child.named_steps["features"].named_transformers_["categorical"][-1].categories_
    assert [c.tolist() for c in child_categories] == [c.tolist() for c in categories]
    assert "purple" not in child_categories[0].tolist()


def test_river_one_hot_keeps_learning_new_categories():
    X, y = mixed_frame(300, seed=1)
    ctx = context(RIVER_LR)
    boot = get_trainer("stateless").train(make_window(X, y), NO_PARENT, ctx).model
    newer = X.assign(color="purple")
    child = get_trainer("finetune").train(make_window(newer, y, first_seq=301),
                                          ParentModel(boot, version="1"), ctx).model
    weights = child.learner["LogisticRegression"].weights
    assert "color_purple" in weights and "color_purple" not in boot.learner["LogisticRegression"].weights


@pytest.mark.parametrize("spec", [SGD, RIVER_LR], ids=["sklearn", "river"])
def test_string_labels_round_trip(spec):
    X, y = mixed_frame(500, seed=1)
    labels = y.map({0: "no", 1: "yes"})
    result = get_trainer("stateless").train(make_window(X, labels), NO_PARENT, context(spec))
    predicted = result.model.predict(X)
    assert set(predicted.tolist()) == {"no", "yes"}
    assert list(result.model.classes_) == ["no", "yes"]
    assert (predicted == labels.to_numpy()).mean() > 0.85
    assert result.report.fit_metrics["accuracy"] > 0.85


def test_boolean_labels_with_a_river_binary_learner():
    X, y = mixed_frame(500, seed=1)
    labels = y.astype(bool)
    model = get_trainer("stateless").train(make_window(X, labels), NO_PARENT,
                                           context(RIVER_LR)).model
    assert model.predict(X).dtype == bool
    assert (model.predict(X) == labels.to_numpy()).mean() > 0.85


def test_a_binary_river_learner_refuses_a_third_class():
    X, y = mixed_frame(300, seed=1)
    labels = y.copy()
    labels.iloc[-1] = 2
    with pytest.raises(TrainingDataError, match="binary River classifier fixed to classes"):
        get_trainer("stateless").train(make_window(X, labels), NO_PARENT,
                                       context(RIVER_LR, classes=(0, 1)))


def test_a_binary_river_learner_refuses_three_classes_up_front():
    X, y = mixed_frame(300, seed=1)
    labels = y.where(X["num_a"] < 1.0, 2)
    with pytest.raises(TrainingDataError, match="binary River classifier but the target has 3"):
        get_trainer("stateless").train(make_window(X, labels), NO_PARENT, context(RIVER_LR))


def test_a_multiclass_river_learner_takes_three_classes():
    X, y = mixed_frame(600, seed=1)
    labels = y.where(X["num_a"] < 1.0, 2)
    spec = {"class": "river.tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}}
    model = get_trainer("stateless").train(make_window(X, labels), NO_PARENT, context(spec)).model
    assert model.classes_.tolist() == [0, 1, 2]
    assert model.predict_proba(X).shape == (600, 3)


def test_stateless_records_the_parent_it_replaces_but_starts_a_new_chain():
    X, y = mixed_frame(400, seed=1)
    parent = ParentModel(model=object(), version="12", chain_depth=4)
    report = get_trainer("stateless").train(make_window(X, y), parent, context(SGD)).report
    assert (report.parent_version, report.chain_depth) == ("12", 0)


def test_stateless_refuses_an_empty_window_and_a_single_class():
    X, y = mixed_frame(50, seed=1)
    with pytest.raises(TrainingDataError, match="holds no matured labels"):
        get_trainer("stateless").train(make_window(X[:0], y[:0]), NO_PARENT, context(SGD))
    with pytest.raises(TrainingDataError, match="single class"):
        get_trainer("stateless").train(make_window(X, [1] * 50), NO_PARENT, context(SGD))


def test_report_details_can_record_a_fallback():
    X, y = mixed_frame(200, seed=1)
    report = get_trainer("stateless").train(make_window(X, y), NO_PARENT, context(SGD)).report
    marked = report.with_details(fallback_from="finetune", fallback_reason="HGB")
    assert marked.details["fallback_reason"] == "HGB" and "fallback_from" not in report.details
    assert marked.to_tags()["driftpilot.detail.fallback_from"] == "finetune"
    assert marked.to_dict()["window_fingerprint"] == report.window_fingerprint


@pytest.mark.parametrize("path", ["river.tree.HoeffdingAdaptiveTreeClassifier", "river.forest.ARFClassifier"])
def test_a_river_tree_classifier_splits_on_categories_itself(path):
    """No one-hot in front of a lone tree classifier: it gets 'color' as a string (a nominal split), still predicts
    rows with a missing or never-seen category, and round-trips through dumps/loads."""
    from trainers.river_adapter import RiverModel

    X, y = mixed_frame(600, seed=1)
    model = get_trainer("stateless").train(make_window(X, y), NO_PARENT,
                                           context({"class": path, "params": {"seed": 0}})).model
    assert type(model.learner).__module__.startswith(("river.tree", "river.forest"))  # the learner itself, no union
    assert {x["color"] for x in to_rows(X, MIXED_TYPES) if "color" in x} <= {"red", "green", "blue"}
    majority = max(y.mean(), 1 - y.mean())
    assert (model.predict(X) == y.to_numpy()).mean() > majority + 0.05
    predicted = model.predict(ODD_ROWS)
    assert len(predicted) == 3 and set(predicted.tolist()) <= {0, 1}
    again = RiverModel.loads(model.dumps())
    assert again.predict(ODD_ROWS).tolist() == predicted.tolist()


def test_a_river_tree_regressor_keeps_one_hot():
    """River's tree regressors fit linear models in their leaves, which need numbers: they keep the encoder."""
    X, y = mixed_frame(300, seed=1)
    model = get_trainer("stateless").train(
        make_window(X, y.astype(float)), NO_PARENT,
        context({"class": "river.tree.HoeffdingTreeRegressor"}, task="regression")).model
    assert "OneHotEncoder" in str(model.learner)
    assert np.isfinite(model.predict(ODD_ROWS).astype(float)).all()
