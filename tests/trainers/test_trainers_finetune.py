"""Fine-tune methods per estimator family, and the refusals that make the caller fall back."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainers.trainer_testkit import MIXED_TYPES, SGD, context, make_window, mixed_frame
from trainers import (
    NO_PARENT,
    FeatureSchemaError,
    NotFineTunableError,
    ParentModel,
    TrainingDataError,
    get_trainer,
)
from trainers.finetune import FinetuneConfig, FinetuneTrainer, fine_tune_method

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def bootstrap(spec: dict, rows: int = 800, feature_types=MIXED_TYPES):
    ctx = context(spec, feature_types=feature_types)
    X, y = mixed_frame(rows, seed=1)
    fitted = get_trainer("stateless").train(make_window(X, y), NO_PARENT, ctx)
    return ctx, ParentModel(fitted.model, version="4", chain_depth=1, last_label_seq=rows)


def new_rows(n: int = 400, first_seq: int = 801, seed: int = 2):
    X, y = mixed_frame(n, seed=seed)
    return make_window(X, y, first_seq=first_seq)


def test_histgradientboosting_is_refused_with_its_reason():
    ctx, parent = bootstrap({"class": "sklearn.ensemble.HistGradientBoostingClassifier"})
    with pytest.raises(NotFineTunableError) as err:
        get_trainer("finetune").train(new_rows(), parent, ctx)
    reason = err.value.reason
    assert "re-bins" in reason and "corrupted residuals" in reason
    assert "'stateless'" in reason


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ({"class": "sklearn.neural_network.MLPClassifier", "params": {"solver": "lbfgs", "max_iter": 50}},
         "solver='lbfgs'"),
        ({"class": "sklearn.linear_model.LogisticRegression"}, "re-solve"),
        ({"class": "sklearn.tree.DecisionTreeClassifier"}, "no partial_fit"),
    ],
)
def test_other_non_fine_tunable_estimators_say_why(spec, fragment):
    _, parent = bootstrap(spec)
    with pytest.raises(NotFineTunableError) as err:
        fine_tune_method(parent.model)
    assert fragment in err.value.reason
    assert "stateless" in err.value.reason


def test_gradient_boosting_warm_start_adds_exactly_n_trees_and_keeps_the_old_ones():
    ctx, parent = bootstrap({"class": "sklearn.ensemble.GradientBoostingClassifier",
                             "params": {"n_estimators": 20, "max_depth": 2}})
    trainer = FinetuneTrainer(FinetuneConfig(n_more_estimators=7))
    child = trainer.train(new_rows(), parent, ctx)
    old, new = parent.model[-1], child.model[-1]
    assert len(old.estimators_) == 20
    assert len(new.estimators_) == 27
    assert child.report.details == {"method": "warm_start", "trees_before": 20, "trees_added": 7,
                                    "rows_skipped_seen": 0}
    for before, after in zip(old.estimators_[:, 0], new.estimators_[:20, 0]):
        np.testing.assert_array_equal(before.tree_.threshold, after.tree_.threshold)
    assert old.n_estimators == 20  # the parent's hyper-parameters are untouched too


def test_random_forest_warm_start_adds_trees_trained_on_new_rows():
    ctx, parent = bootstrap({"class": "sklearn.ensemble.RandomForestClassifier",
                             "params": {"n_estimators": 10, "max_depth": 4}})
    child = FinetuneTrainer(FinetuneConfig(n_more_estimators=5)).train(new_rows(), parent, ctx)
    assert len(child.model[-1].estimators_) == 15
    assert child.report.details["trees_added"] == 5


def test_mlp_adam_fine_tunes_with_partial_fit():
    ctx, parent = bootstrap({"class": "sklearn.neural_network.MLPClassifier",
                             "params": {"hidden_layer_sizes": [8], "max_iter": 30}})
    child = get_trainer("finetune").train(new_rows(), parent, ctx)
    assert child.report.details["method"] == "partial_fit"
    assert not np.array_equal(child.model[-1].coefs_[0], parent.model[-1].coefs_[0])


def test_river_parent_fine_tunes_with_learn_one():
    ctx = context({"class": "river.linear_model.LogisticRegression"}, classes=(0, 1))
    X, y = mixed_frame(500, seed=1)
    boot = get_trainer("stateless").train(make_window(X, y), NO_PARENT, ctx).model
    parent = ParentModel(boot, version="2", last_label_seq=500)
    child = get_trainer("finetune").train(new_rows(first_seq=501), parent, ctx)
    assert child.report.details["method"] == "learn_one"
    assert (boot.n_updates, child.model.n_updates) == (500, 900)
    assert child.model.last_label_seq == 900


def test_rows_the_parent_already_learned_are_skipped():
    ctx, parent = bootstrap(SGD)
    window = new_rows(n=500, first_seq=701)  # seqs 701..1200 overlap the parent's 1..800
    report = get_trainer("finetune").train(window, parent, ctx).report
    assert (report.rows, report.window_rows) == (400, 500)
    assert report.details["rows_skipped_seen"] == 100
    assert report.last_label_seq == 1200


def test_nothing_new_is_refused():
    ctx, parent = bootstrap(SGD)
    with pytest.raises(TrainingDataError, match="no rows newer than parent version 4"):
        get_trainer("finetune").train(new_rows(n=50, first_seq=100), parent, ctx)


def test_no_parent_is_refused_so_the_caller_bootstraps():
    ctx = context(SGD)
    with pytest.raises(NotFineTunableError, match="needs a parent"):
        get_trainer("finetune").train(new_rows(), NO_PARENT, ctx)


def test_a_class_the_parent_never_saw_is_refused():
    ctx, parent = bootstrap(SGD)
    window = new_rows()
    labels = window.labels.copy()
    labels.iloc[:5] = 2
    with pytest.raises(NotFineTunableError, match=r"classes \[2\] the parent never saw"):
        get_trainer("finetune").train(make_window(window.features, labels, first_seq=801),
                                      parent, ctx)


def test_a_new_class_for_a_binary_river_parent_is_not_fine_tunable_so_the_caller_can_fall_back():
    ctx = context({"class": "river.linear_model.LogisticRegression"}, classes=(0, 1))
    X, y = mixed_frame(300, seed=1)
    parent = ParentModel(get_trainer("stateless").train(make_window(X, y), NO_PARENT, ctx).model, version="2",
                         last_label_seq=300)
    window = new_rows(first_seq=301)
    labels = window.labels.copy()
    labels.iloc[:3] = 2
    with pytest.raises(NotFineTunableError, match=r"classes \[2\] that the parent's binary River learner"):
        get_trainer("finetune").train(make_window(window.features, labels, first_seq=301), parent, ctx)
    assert parent.model.n_updates == 300  # untouched


def test_parent_schema_mismatch_names_the_columns():
    _, parent = bootstrap(SGD)
    types = {k: v for k, v in MIXED_TYPES.items() if k != "flag"} | {"size": "numeric"}
    ctx = context(SGD, feature_types=types)
    window = new_rows()
    features = window.features.drop(columns="flag").assign(size=1.0)
    with pytest.raises(FeatureSchemaError) as err:
        get_trainer("finetune").train(make_window(features, window.labels, first_seq=801),
                                      parent, ctx)
    assert "parent version 4" in str(err.value)
    assert "missing columns: ['flag']" in str(err.value)
    assert "unexpected columns: ['size']" in str(err.value)


def test_parent_feature_kind_change_is_refused():
    _, parent = bootstrap(SGD)
    ctx = context(SGD, feature_types={**MIXED_TYPES, "flag": "categorical"})
    with pytest.raises(FeatureSchemaError, match=r"'flag': \('boolean', 'categorical'\)"):
        get_trainer("finetune").train(new_rows(), parent, ctx)


def test_regression_stateless_then_finetune():
    X, _ = mixed_frame(1200, seed=1)
    target = 2.0 * X["num_a"] + np.where(X["flag"].eq(True), 1.0, 0.0)
    spec = {"pipeline": [{"class": "sklearn.preprocessing.StandardScaler"},
                         {"class": "sklearn.linear_model.SGDRegressor"}]}
    ctx = context(spec, task="regression")
    boot = get_trainer("stateless").train(make_window(X[:800], target[:800]), NO_PARENT, ctx)
    assert set(boot.report.fit_metrics) == {"mae", "rmse", "r2"}
    assert boot.report.fit_metrics["r2"] > 0.9  # a noiseless linear target: measured 1.000
    parent = ParentModel(boot.model, version="1", last_label_seq=800)
    child = get_trainer("finetune").train(make_window(X[800:], target[800:], first_seq=801),
                                          parent, ctx)
    assert child.report.details["method"] == "partial_fit"
    assert child.report.fit_metrics["r2"] > 0.9
    assert child.model.predict(X[:3]).dtype == float
