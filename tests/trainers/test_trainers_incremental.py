"""Incremental: test-then-train, exactly-once consumption by label seq, state across restarts."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError
from river.datasets import synth

from tests.trainers.trainer_testkit import (
    MIXED_TYPES,
    RIVER_LR,
    SGD,
    context,
    make_window,
    mixed_frame,
    river_frame,
)
from trainers import (
    NO_PARENT,
    IncompatibleEstimatorError,
    ParentModel,
    RiverModel,
    TrainerError,
    get_trainer,
)
from trainers.incremental import CheckpointPolicy, IncrementalConfig, dumps, loads

HAT = {"class": "river.tree.HoeffdingAdaptiveTreeClassifier"}


def chunks(n_first: int = 600, n_second: int = 400):
    X, y = mixed_frame(n_first + n_second, seed=9)
    first = make_window(X[:n_first], y[:n_first], first_seq=1)
    second = make_window(X[n_first:], y[n_first:], first_seq=n_first + 1)
    return first, second, X, y


def as_parent(result, version="1"):
    return ParentModel(result.model, version=version, chain_depth=result.report.chain_depth,
                       last_label_seq=result.report.last_label_seq)


@pytest.mark.parametrize("spec", [RIVER_LR, HAT], ids=["logreg", "hat"])
def test_resuming_from_bytes_equals_never_stopping(spec):
    ctx = context(spec, seed=2)
    trainer = get_trainer("incremental")
    first, second, X, _ = chunks()
    straight = trainer.train(second, as_parent(trainer.train(first, NO_PARENT, ctx)), ctx)

    before_restart = trainer.train(first, NO_PARENT, ctx)
    data = dumps(before_restart.model)
    del before_restart  # the daemon died; only the bytes survive
    restored = loads(data)
    assert restored.n_updates == 600 and restored.last_label_seq == 600
    resumed = trainer.train(second, ParentModel(restored, version="1"), ctx)

    np.testing.assert_array_equal(straight.model.predict_proba(X), resumed.model.predict_proba(X))
    assert straight.prequential.predictions.tolist() == resumed.prequential.predictions.tolist()
    assert (resumed.model.n_updates, resumed.model.last_label_seq) == (1000, 1000)


def test_rows_already_consumed_are_not_learned_twice():
    ctx = context(RIVER_LR)
    trainer = get_trainer("incremental")
    X, y = mixed_frame(1000, seed=9)
    boot = trainer.train(make_window(X[:600], y[:600]), NO_PARENT, ctx)
    # The store returns an overlapping window (seqs 401..1000); the learner knows it saw up to 600.
    overlap = make_window(X[400:], y[400:], first_seq=401)
    result = trainer.train(overlap, ParentModel(boot.model, version="1"), ctx)
    assert (result.report.rows, result.report.window_rows) == (400, 600)
    assert result.report.details["rows_skipped_seen"] == 200
    assert result.model.n_updates == 1000
    assert result.prequential.prediction_ids.tolist() == [f"p{s}" for s in range(601, 1001)]


def test_prequential_predictions_come_before_learning_each_row():
    ctx = context(RIVER_LR)  # no classes known up front
    first, _, _, _ = chunks()
    result = get_trainer("incremental").train(first, NO_PARENT, ctx)
    pre = result.prequential
    assert len(pre) == 600
    assert pre.prediction_ids.tolist() == first.prediction_ids.tolist()
    assert pre.label_seqs.tolist() == first.label_seqs.tolist()
    # Classes come from the window; row 1 was predicted before anything was learned.
    assert list(pre.probabilities.columns) == [0, 1]
    assert pre.probabilities.iloc[0].tolist() == [0.5, 0.5]
    truth = first.labels.to_numpy()
    accuracy = float((np.asarray(pre.predictions.tolist(), dtype=object) == truth).mean())
    assert result.report.fit_metrics["accuracy"] == pytest.approx(accuracy)
    assert result.report.details["metrics_kind"] == "prequential"
    # After learning, the model does better on those rows than it did predicting them blind.
    assert (result.model.predict(first.features) == truth).mean() > accuracy


def test_the_parent_model_is_not_mutated():
    ctx = context(RIVER_LR)
    trainer = get_trainer("incremental")
    first, second, X, _ = chunks()
    boot = trainer.train(first, NO_PARENT, ctx)
    proba_before = boot.model.predict_proba(X)
    child = trainer.train(second, as_parent(boot), ctx)
    np.testing.assert_array_equal(boot.model.predict_proba(X), proba_before)
    assert boot.model.n_updates == 600
    assert child.report.chain_depth == 1 and child.report.parent_version == "1"


def test_no_new_rows_returns_the_same_state():
    ctx = context(RIVER_LR)
    trainer = get_trainer("incremental")
    first, _, X, _ = chunks()
    boot = trainer.train(first, NO_PARENT, ctx)
    again = trainer.train(first, as_parent(boot), ctx)
    assert again.report.rows == 0 and len(again.prequential) == 0
    assert again.report.last_label_seq == 600
    np.testing.assert_array_equal(again.model.predict_proba(X), boot.model.predict_proba(X))


def test_scikit_learn_estimators_are_refused():
    first, _, _, _ = chunks()
    with pytest.raises(IncompatibleEstimatorError) as err:
        get_trainer("incremental").train(first, NO_PARENT, context(SGD))
    assert "needs a River estimator" in str(err.value)
    assert "river.linear_model.LogisticRegression" in str(err.value)


def test_a_scikit_learn_parent_is_refused():
    first, second, _, _ = chunks()
    sk = get_trainer("stateless").train(first, NO_PARENT, context(SGD)).model
    with pytest.raises(IncompatibleEstimatorError, match="is a Pipeline, not a River model"):
        get_trainer("incremental").train(second, ParentModel(sk, version="3"), context(RIVER_LR))


def test_a_parent_with_another_schema_is_refused():
    first, second, _, _ = chunks()
    boot = get_trainer("incremental").train(first, NO_PARENT, context(RIVER_LR))
    other = {**MIXED_TYPES, "extra": "numeric"}
    window = make_window(second.features.assign(extra=1.0), second.labels, first_seq=601)
    with pytest.raises(TrainerError, match=r"unexpected columns: \['extra'\]"):
        get_trainer("incremental").train(window, as_parent(boot),
                                         context(RIVER_LR, feature_types=other))


def test_foreign_bytes_are_refused():
    with pytest.raises(TrainerError, match="not a driftpilot River model state"):
        RiverModel.loads(pickle.dumps({"some": "thing"}))


def test_regression_reports_prequential_errors():
    types = {f"x{i}": "numeric" for i in range(10)}
    X, y = river_frame(synth.Friedman(seed=1), 2000, rename=lambda c: f"x{c}")
    ctx = context({"pipeline": [{"class": "river.preprocessing.StandardScaler"},
                                {"class": "river.linear_model.LinearRegression"}]},
                  feature_types=types, task="regression")
    result = get_trainer("incremental").train(make_window(X, y), NO_PARENT, ctx)
    metrics = result.report.fit_metrics
    assert set(metrics) == {"mae", "rmse", "r2"}
    # Friedman #1 with a linear learner: measured prequential r2 0.56.
    assert metrics["r2"] > 0.45
    assert result.prequential.probabilities.shape == (2000, 0)
    assert result.model.predict(X[:5]).dtype == float


T = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "policy, now, updates, last, due",
    [
        ({"every_updates": 100}, T, 99, T, False),
        ({"every_updates": 100}, T, 100, T, True),
        ({"every_updates": 100, "every_minutes": 5}, T + timedelta(minutes=5), 1, T, True),
        ({"every_updates": 100, "every_minutes": 5}, T + timedelta(minutes=4), 1, T, False),
        ({"every_updates": None, "every_minutes": 5}, T + timedelta(hours=9), 0, T, False),
        ({"every_updates": 100}, T, 1, None, True),  # never checkpointed: save what we have
        ({"every_updates": None, "every_minutes": 5}, T, 10_000, T, False),
    ],
)
def test_checkpoint_due(policy, now, updates, last, due):
    assert CheckpointPolicy.model_validate(policy).due(now, updates, last) is due


def test_checkpoint_needs_a_threshold():
    with pytest.raises(ValidationError, match="needs every_updates, every_minutes or both"):
        CheckpointPolicy(every_updates=None, every_minutes=None)
    config = IncrementalConfig.model_validate({"checkpoint": {"every_updates": 50}})
    assert config.checkpoint.every_updates == 50
