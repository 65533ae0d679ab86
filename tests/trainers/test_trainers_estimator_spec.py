"""The policy's `estimator:` section: load-time validation and what build() returns."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from sklearn.pipeline import Pipeline

from tests.trainers.trainer_testkit import MIXED_TYPES, mixed_frame
from trainers import EstimatorSpec, EstimatorSpecError, RiverModel


def load(text: str) -> EstimatorSpec:
    return EstimatorSpec.model_validate(yaml.safe_load(text)["estimator"])


def error_of(section: dict) -> str:
    with pytest.raises(ValidationError) as err:
        EstimatorSpec.model_validate(section)
    return str(err.value)


def test_both_yaml_shapes_load():
    single = load("""
estimator:
  class: sklearn.linear_model.SGDClassifier
  params: {loss: log_loss, random_state: 0}
""")
    assert single.family == "sklearn"
    assert single.describe() == "sklearn.linear_model.SGDClassifier"
    piped = load("""
estimator:
  pipeline:
    - class: river.preprocessing.StandardScaler
    - class: river.linear_model.LogisticRegression
      params: {l2: 0.0}
  allow_packages: [lightgbm]
""")
    assert piped.family == "river"
    assert len(piped.steps) == 2
    assert piped.model_dump(by_alias=True)["pipeline"][1]["class"] == (
        "river.linear_model.LogisticRegression"
    )


def test_unknown_class_suggests_the_close_match():
    message = error_of({"class": "sklearn.linear_model.SGDClasifier"})
    assert "sklearn.linear_model has no class 'SGDClasifier'" in message
    assert "Did you mean sklearn.linear_model.SGDClassifier" in message


def test_unknown_module_suggests_the_close_match():
    message = error_of({"class": "river.linear_modle.LogisticRegression"})
    assert "Did you mean river.linear_model?" in message


def test_bad_parameter_lists_the_valid_ones():
    message = error_of({"class": "sklearn.linear_model.SGDClassifier", "params": {"lr": 0.1}})
    assert "SGDClassifier has no parameter(s) ['lr']" in message
    assert "Valid parameters: loss, penalty, alpha" in message


def test_river_bad_parameter_lists_the_signature_names():
    message = error_of({"class": "river.linear_model.LogisticRegression", "params": {"intercept_ini": 1}})
    assert "Valid parameters: optimizer, loss, l2, l1" in message
    assert "did you mean 'intercept_init'?" in message


def test_bad_parameter_value_is_caught_at_load():
    message = error_of({"class": "sklearn.linear_model.SGDClassifier",
                        "params": {"loss": "log_los"}})
    assert "The 'loss' parameter of SGDClassifier must be a str among" in message


def test_disallowed_package_says_how_to_allow_it():
    message = error_of({"class": "lightgbm.LGBMClassifier"})
    assert "package 'lightgbm' is not allowed" in message
    assert "allow_packages: [lightgbm]" in message
    # Not even imported: os.system is refused by the allow-list before any import.
    assert "package 'os' is not allowed" in error_of({"class": "os.system"})


def test_allowed_but_missing_package_says_to_install_it():
    message = error_of({"class": "lightgbm.LGBMClassifier", "allow_packages": ["lightgbm"]})
    assert "'lightgbm' is not installed" in message


def test_mixed_pipeline_is_refused():
    message = error_of({"pipeline": [
        {"class": "sklearn.preprocessing.StandardScaler"},
        {"class": "river.linear_model.LogisticRegression"},
    ]})
    assert "must not mix scikit-learn and River steps" in message
    assert "sklearn.preprocessing.StandardScaler (sklearn)" in message


@pytest.mark.parametrize(
    "section, fragment",
    [
        ({}, "exactly one of `class`"),
        ({"class": "sklearn.linear_model.SGDClassifier",
          "pipeline": [{"class": "sklearn.linear_model.SGDClassifier"}]}, "Got both"),
        ({"pipeline": [{"class": "river.linear_model.LogisticRegression"}], "params": {"l2": 1}},
         "put each step's params under that step"),
        ({"pipeline": [{"class": "sklearn.linear_model.SGDClassifier"},
                       {"class": "sklearn.linear_model.SGDClassifier"}]}, "is not a transformer"),
        ({"class": "sklearn.preprocessing.StandardScaler"}, "must be a classifier or regressor"),
        ({"class": "SGDClassifier"}, "not a full class path"),
        ({"class": "sklearn.linear_model.SGDClassifier", "paramz": {}}, "Extra inputs"),
    ],
)
def test_shape_errors(section, fragment):
    assert fragment in error_of(section)


def test_nested_spec_parameter_is_built():
    spec = EstimatorSpec.model_validate({
        "class": "river.linear_model.LogisticRegression",
        "params": {"optimizer": {"class": "river.optim.SGD", "params": {"lr": 0.2}}},
    })
    learner = spec.instantiate()[0]
    assert learner.optimizer.learning_rate == 0.2


def test_nested_spec_parameter_obeys_the_allow_list():
    message = error_of({"class": "sklearn.ensemble.BaggingClassifier",
                        "params": {"estimator": {"class": "lightgbm.LGBMClassifier"}}})
    assert "class.params.estimator: package 'lightgbm' is not allowed" in message


def test_build_sklearn_wraps_the_spec_in_schema_preprocessing():
    spec = EstimatorSpec.model_validate({"class": "sklearn.linear_model.SGDClassifier"})
    model = spec.build(MIXED_TYPES, "classification", seed=11)
    assert isinstance(model, Pipeline)
    assert [name for name, _ in model.steps] == ["features", "sgdclassifier"]
    assert model[-1].random_state == 11  # the seed fills random_state when not pinned
    X, y = mixed_frame(300, seed=1)
    model.fit(X, y)
    assert model.predict(X).shape == (300,)


def test_a_pinned_random_state_wins_over_the_training_seed():
    spec = EstimatorSpec.model_validate({"class": "sklearn.linear_model.SGDClassifier",
                                         "params": {"random_state": 3}})
    assert spec.build(MIXED_TYPES, "classification", seed=11)[-1].random_state == 3


def test_build_river_gives_a_river_model_with_a_seed():
    spec = EstimatorSpec.model_validate({"class": "river.tree.HoeffdingAdaptiveTreeClassifier"})
    model = spec.build(MIXED_TYPES, "classification", seed=4, classes=(0, 1))
    assert isinstance(model, RiverModel)
    assert model.learner.seed == 4  # a lone tree classifier takes the row as it is (no encoder in front)
    assert model.classes_.tolist() == [0, 1]


def test_build_refuses_an_estimator_of_the_wrong_task():
    spec = EstimatorSpec.model_validate({"class": "sklearn.linear_model.SGDRegressor"})
    with pytest.raises(EstimatorSpecError, match="is not a classification estimator"):
        spec.build(MIXED_TYPES, "classification")
    regressor = spec.build({"x": "numeric"}, "regression")
    assert np.isfinite(regressor[-1].alpha)
