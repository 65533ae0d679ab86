"""Incremental learning end to end: a River champion keeps learning matured labels, survives restarts, and is
checkpointed as registered versions with lineage."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from controller.actions.bootstrap import bootstrap
from controller.actions.datafiles import features_from_table, target_from_table
from controller.actions.incremental import STATE_KEY, IncrementalError, IncrementalRunner
from controller.actions.model_registry import open_registry
from controller.clock import ManualClock
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from tests.toy import toy_table, write_policy
from trainers import RiverModel

RIVER = "river.linear_model.LogisticRegression"


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


def river_model(tmp_path, mlflow_dir, name, clock):
    path = write_policy(tmp_path, mlflow_dir, name, RIVER, "{}")
    path.write_text(path.read_text().replace(
        "retrain: {holdout_fraction: 0.25, min_rows: 40}",
        "retrain: {holdout_fraction: 0.25, min_rows: 40, "
        "incremental: {checkpoint: {every_updates: 150, every_minutes: null}}}"))
    loaded = load_policy(path, environ={})
    store = EventStore.from_url(loaded.config.storage.url, clock)
    registry = open_registry(loaded.config, clock)
    table = toy_table(200, seed=0)
    bootstrap(loaded, features_from_table(table, loaded.config, "t"), target_from_table(table, loaded.config, "t"),
              store=store, registry=registry, clock=clock)
    return loaded, store, registry


def stream(store, clock, name, rows, start, champion_prediction=0):
    table = toy_table(rows, seed=start, concept="b")
    clock.advance(minutes=5)
    store.add_predictions(name, [
        PredictionRecord({"x1": r.x1, "x2": r.x2}, clock.now(), prediction=champion_prediction,
                         prediction_id=f"s{start}-{i}", model_version="1")
        for i, r in enumerate(table.itertuples())])
    clock.advance(minutes=30)
    store.add_labels(name, [LabelRecord(f"s{start}-{i}", int(y)) for i, y in enumerate(table.y)])


def test_learner_follows_new_labels_survives_restart_and_checkpoints(tmp_path, mlflow_dir, clock: ManualClock,
                                                                     model_name) -> None:
    loaded, store, registry = river_model(tmp_path, mlflow_dir, model_name, clock)
    runner = IncrementalRunner(loaded, store, registry, clock)
    first = runner.step()
    # It starts from the champion, which learned the 150 bootstrap training rows; the 50 held-out rows are new to it.
    assert first.learned == 50 and first.checkpoint_version is None
    assert runner.step().learned == 0  # nothing new matured

    stream(store, clock, model_name, 120, start=1)
    restarted = IncrementalRunner(loaded, store, registry, clock)  # a new process: state comes from the store
    second = restarted.step()
    assert second.learned == 120 and second.checkpoint_version == "2"  # 50 + 120 >= 150 updates
    assert second.paired_rows == 120 and second.champion_paired_accuracy is not None
    record = registry.get(model_name, "2").record
    assert (record.strategy, record.parent_version, record.chain_depth, record.window_rows) == \
        ("incremental", "1", 1, 170)
    assert registry.aliases(model_name) == {"champion": "1", "challenger": "2"}

    stream(store, clock, model_name, 160, start=2)
    third = IncrementalRunner(loaded, store, registry, clock).step()
    assert third.learned == 160 and third.checkpoint_version == "3"
    assert registry.get(model_name, "3").record.parent_version == "2"
    assert registry.get(model_name, "3").record.chain_depth == 2
    # The registered learner is the live one: it continues exactly where the stored state stopped.
    state = pickle.loads(store.get_state(model_name, STATE_KEY))
    assert registry.load(model_name, version="3").model.last_label_seq == RiverModel.loads(state.model).last_label_seq


def test_prequential_learning_beats_the_frozen_champion_after_a_change(tmp_path, mlflow_dir, clock: ManualClock,
                                                                       model_name) -> None:
    loaded, store, registry = river_model(tmp_path, mlflow_dir, model_name, clock)
    runner = IncrementalRunner(loaded, store, registry, clock)
    runner.step()
    champion = registry.load(model_name).model
    for batch in range(1, 6):
        table = toy_table(100, seed=10 + batch, concept="b")
        frame = features_from_table(table, loaded.config, "t")
        predicted = champion.predict(frame)  # the frozen champion's real predictions are what gets logged
        clock.advance(minutes=5)
        store.add_predictions(model_name, [
            PredictionRecord({"x1": r.x1, "x2": r.x2}, clock.now(), prediction=int(p),
                             prediction_id=f"b{batch}-{i}", model_version="1")
            for i, (r, p) in enumerate(zip(table.itertuples(), predicted, strict=True))])
        clock.advance(minutes=30)
        store.add_labels(model_name, [LabelRecord(f"b{batch}-{i}", int(y)) for i, y in enumerate(table.y)])
        step = runner.step()
    # After four batches of the new concept, the learner is well ahead of the frozen champion on the same rows.
    assert step.paired_rows == 100
    assert step.learner_paired_accuracy > step.champion_paired_accuracy + 0.2


def test_a_scikit_learn_champion_is_refused(tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    path = write_policy(tmp_path, mlflow_dir, model_name)
    loaded = load_policy(path, environ={})
    store = EventStore.from_url(loaded.config.storage.url, clock)
    registry = open_registry(loaded.config, clock)
    table = toy_table(100)
    bootstrap(loaded, features_from_table(table, loaded.config, "t"), target_from_table(table, loaded.config, "t"),
              store=store, registry=registry, clock=clock)
    with pytest.raises(IncrementalError, match="incremental learning continues a River model"):
        IncrementalRunner(loaded, store, registry, clock).step()
