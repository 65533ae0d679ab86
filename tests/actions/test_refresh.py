"""Part 3 end to end: each strategy produces a registered challenger with a correct lineage record, compared with
the champion on the same held-out matured rows. Real store, real MLflow (SQLite), real scikit-learn/River models."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.actions.bootstrap import bootstrap
from controller.actions.datafiles import features_from_table, target_from_table
from controller.actions.model_registry import open_registry
from controller.actions.refresh import Refresher, RefreshError
from controller.actions.training import LAST_SEQ
from controller.clock import ManualClock
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from tests.toy import toy_table, write_policy
from trainers.stateless import StatelessConfig

SGD = ("sklearn.linear_model.SGDClassifier", "{loss: log_loss, random_state: 0}")
HGB = ("sklearn.ensemble.HistGradientBoostingClassifier", "{max_iter: 20, random_state: 0}")


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


def setup_model(tmp_path, mlflow_dir, name, clock, estimator=SGD, *, new_rows=400):
    """Bootstrap on concept "a", then stream `new_rows` predictions of concept "b" whose labels mature later."""
    loaded = load_policy(write_policy(tmp_path, mlflow_dir, name, *estimator), environ={})
    store = EventStore.from_url(loaded.config.storage.url, clock)
    registry = open_registry(loaded.config, clock)
    table = toy_table(400, seed=0)
    bootstrap(loaded, features_from_table(table, loaded.config, "t"), target_from_table(table, loaded.config, "t"),
              store=store, registry=registry, clock=clock)
    drifted = toy_table(new_rows, seed=1, concept="b")
    for start in range(0, new_rows, 100):
        clock.advance(minutes=10)
        part = drifted.iloc[start:start + 100]
        store.add_predictions(name, [
            PredictionRecord({"x1": r.x1, "x2": r.x2, "color": r.color}, clock.now(), prediction=0,
                             prediction_id=f"live-{i}", model_version="1")
            for i, r in zip(part.index, part.itertuples(), strict=True)])
        clock.advance(minutes=30)  # natural labels arrive half an hour later
        store.add_labels(name, [LabelRecord(f"live-{i}", int(y)) for i, y in zip(part.index, part.y, strict=True)])
    return loaded, store, registry


def test_stateless_retrain_registers_a_better_challenger_with_lineage(tmp_path, mlflow_dir, clock: ManualClock,
                                                                     model_name) -> None:
    loaded, store, registry = setup_model(tmp_path, mlflow_dir, model_name, clock)
    # After an abrupt change, "everything" mixes two concepts; the policy's window keeps the newest rows.
    retrain = loaded.config.retrain.model_copy(update={"stateless": StatelessConfig.model_validate(
        {"window": {"kind": "last_rows", "rows": 300}})})
    loaded = loaded._replace(config=loaded.config.model_copy(update={"retrain": retrain}))
    refresher = Refresher(loaded, store, registry, clock)
    outcome = refresher.retrain("stateless")
    assert (outcome.version, outcome.strategy, outcome.parent_version, outcome.chain_depth) == \
        ("2", "stateless", "1", 0)
    assert registry.aliases(model_name) == {"champion": "1", "challenger": "2"}
    # 500 rows matured since the champion's window (its 100-row bootstrap holdout + 400 live): the newest 25% are
    # the holdout; stateless trains on the newest 300 rows before them (all of the new concept).
    assert (outcome.train_rows, outcome.holdout_rows) == (300, 125)
    assert outcome.holdout_metrics["accuracy"] > outcome.champion_metrics["accuracy"] + 0.1
    record = registry.get(model_name, "2").record
    assert (record.parent_version, record.strategy, record.trigger) == ("1", "stateless", "manual")
    assert record.holdout_metrics == outcome.holdout_metrics and record.champion_metrics == outcome.champion_metrics
    assert record.maturity_cut == clock.now() and record.window_rows == 300
    assert record.extra["holdout_rows"] == 125 and record.policy_hash == loaded.sha256


def test_finetune_continues_the_champion_on_new_rows_only(tmp_path, mlflow_dir, clock: ManualClock,
                                                          model_name) -> None:
    loaded, store, registry = setup_model(tmp_path, mlflow_dir, model_name, clock)
    champion = registry.load(model_name)
    before = champion.model.named_steps[list(champion.model.named_steps)[-1]].coef_.copy()
    outcome = Refresher(loaded, store, registry, clock).retrain("finetune")
    assert (outcome.strategy, outcome.parent_version, outcome.chain_depth) == ("finetune", "1", 1)
    assert outcome.train_rows == 375  # only the 500 rows newer than the parent's window, minus the 125 held out
    assert outcome.details["method"] == "partial_fit"
    record = registry.get(model_name, outcome.version).record
    assert record.extra["first_label_seq"] > champion.record.extra[LAST_SEQ]
    assert outcome.holdout_metrics["accuracy"] > outcome.champion_metrics["accuracy"]
    # The registered parent is untouched.
    reloaded = registry.load(model_name, version="1").model
    assert (reloaded.named_steps[list(reloaded.named_steps)[-1]].coef_ == before).all()
    # Once promoted, the next fine-tune continues the chain from it, on the rows it has not seen (its holdout).
    registry.promote(model_name, outcome.version)
    clock.advance(hours=1)
    second = Refresher(loaded, store, registry, clock).retrain("finetune")
    assert (second.parent_version, second.chain_depth) == (outcome.version, 2)
    assert [v.version for v in registry.ancestors(model_name, second.version)] == [outcome.version, "1"]


def test_finetune_of_histgradientboosting_falls_back_to_stateless_and_records_why(
        tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    loaded, store, registry = setup_model(tmp_path, mlflow_dir, model_name, clock, HGB)
    outcome = Refresher(loaded, store, registry, clock).retrain("finetune")
    assert (outcome.requested_strategy, outcome.strategy, outcome.chain_depth) == ("finetune", "stateless", 0)
    assert "HistGradientBoosting" in outcome.fallback_reason
    record = registry.get(model_name, outcome.version).record
    assert record.extra["fallback_reason"] == outcome.fallback_reason
    assert record.extra["requested_strategy"] == "finetune"


def test_too_few_new_labels_is_a_clear_error(tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    loaded, store, registry = setup_model(tmp_path, mlflow_dir, model_name, clock, new_rows=0)
    strict = loaded.config.retrain.model_copy(update={"min_rows": 200})
    loaded = loaded._replace(config=loaded.config.model_copy(update={"retrain": strict}))
    with pytest.raises(RefreshError, match="only 100 labeled rows matured since champion version 1's window"):
        Refresher(loaded, store, registry, clock).retrain("stateless")
    assert registry.aliases(model_name) == {"champion": "1"}


def test_labels_arriving_after_the_cut_are_not_used(tmp_path, mlflow_dir, clock: ManualClock, model_name) -> None:
    loaded, store, registry = setup_model(tmp_path, mlflow_dir, model_name, clock)
    as_of = clock.now()
    clock.advance(minutes=5)
    store.add_predictions(model_name, [PredictionRecord({"x1": 1.0, "x2": 1.0}, clock.now(), prediction=0,
                                                        prediction_id="late")])
    store.add_labels(model_name, [LabelRecord("late", 1)])
    clock.set(clock.now())
    # A refresher whose clock is at the cut sees exactly the rows matured by then.
    frozen = ManualClock(as_of)
    outcome = Refresher(loaded, store, registry, frozen).retrain("stateless")
    assert outcome.train_rows + outcome.holdout_rows == 800
    assert registry.get(model_name, outcome.version).record.maturity_cut == as_of
