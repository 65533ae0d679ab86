"""Comparisons as evaluation runs, the append-only alias history and the experiments runs go to (real MLflow stores)."""

from __future__ import annotations

import itertools
import math

import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from lineage import CHAMPION, PREVIOUS, Comparison, LineageError, ModelRegistry
from tests.lineage.lineage_helpers import make_data, make_record

X, Y = make_data()
MODEL = LogisticRegression().fit(X, Y)
FINGERPRINT = "c0ffee" * 10


def _two_versions(registry: ModelRegistry, name: str) -> None:
    registry.register(name, MODEL, make_record())
    registry.promote(name, 1)
    registry.register(
        name, MODEL, make_record(parent_version="1", strategy="stateless", trigger="manual")
    )


def _compare(registry: ModelRegistry, name: str, comparison_id: str = "cmp-1", **overrides) -> str:
    arguments = {
        "comparison_id": comparison_id,
        "champion_version": "1",
        "challenger_version": "2",
        "champion_metrics": {"accuracy": 0.644, "log_loss": 0.61},
        "challenger_metrics": {"accuracy": 0.814, "log_loss": 0.42},
        "holdout_rows": 1080,
        "holdout_fingerprint": FINGERPRINT,
        "verdict": "promote",
        "p_value": 0.0012,
        "test": "mcnemar_exact",
        "params": {"decision_id": "dec-7", "metric": "accuracy"},
        "tags": {"driftpilot.trigger": "manual"},
    }
    arguments.update(overrides)
    return registry.log_comparison(Comparison(name=name, **arguments))


def test_a_comparison_is_one_evaluation_run_with_both_models_under_the_same_keys(
    registry: ModelRegistry, model_name: str
):
    name = model_name
    _two_versions(registry, name)
    run_id = _compare(registry, name)

    client = MlflowClient(registry.tracking_uri)
    parent = client.get_run(run_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    main = client.get_experiment(registry.experiment_id)
    assert experiment.name == main.name + "/comparisons"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "v2 vs champion v1"
    metrics = parent.data.metrics
    assert metrics["champion.accuracy"] == 0.644 and metrics["challenger.accuracy"] == 0.814
    assert math.isclose(metrics["delta.accuracy"], 0.814 - 0.644)
    assert math.isclose(metrics["delta.log_loss"], 0.42 - 0.61) and metrics["p_value"] == 0.0012
    assert {k: parent.data.params[k] for k in ("champion_version", "challenger_version", "holdout_rows",
                                                "holdout_fingerprint", "verdict", "test", "decision_id")} == {
        "champion_version": "1", "challenger_version": "2", "holdout_rows": "1080",
        "holdout_fingerprint": FINGERPRINT, "verdict": "promote", "test": "mcnemar_exact", "decision_id": "dec-7",
    }
    assert parent.data.tags["driftpilot.kind"] == "comparison"
    assert parent.data.tags["driftpilot.trigger"] == "manual"
    assert "| accuracy | 0.6440 | 0.8140 | +0.1700 |" in parent.data.tags["mlflow.note.content"]

    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'", order_by=["attributes.run_name"]
    )
    assert [c.info.run_name for c in children] == ["v1 (champion)", "v2 (challenger)"]
    # The same metric keys on both children: MLflow's compare view puts them in one row.
    assert [c.data.metrics for c in children] == [
        {"accuracy": 0.644, "log_loss": 0.61},
        {"accuracy": 0.814, "log_loss": 0.42},
    ]
    assert {c.data.params["holdout_fingerprint"] for c in children} == {FINGERPRINT}
    assert [c.data.params["version"] for c in children] == ["1", "2"]
    for child, version in zip(children, ("1", "2"), strict=True):
        [dataset] = child.inputs.dataset_inputs
        assert dataset.dataset.name == "holdout-" + FINGERPRINT[:12]
        model_id = client.get_model_version(name, version).source.removeprefix("models:/")
        assert [m.model_id for m in client.get_run(child.info.run_id).inputs.model_inputs] == [model_id]

    # Both versions link the run; the challenger's says which champion it was compared with at the time.
    link = f"(#/experiments/{experiment.experiment_id}/runs/{run_id}?workflowType=machine_learning)"
    v1, v2 = registry.get(name, 1).description, registry.get(name, 2).description
    assert f"[as champion vs challenger v2]{link}: accuracy 0.6440 vs 0.8140" in v1
    assert f"[as challenger vs champion v1 at the time]{link}: accuracy 0.8140 vs 0.6440, log_loss 0.4200 vs 0.6100 on 1,080 rows" in v2
    assert registry.get(name, 2).record == make_record(parent_version="1", strategy="stateless", trigger="manual")


def test_logging_the_same_comparison_again_returns_the_first_run(registry: ModelRegistry, model_name: str):
    _two_versions(registry, model_name)
    first = _compare(registry, model_name)
    assert _compare(registry, model_name) == first
    assert registry.get(model_name, 2).description.count("[as challenger") == 1
    other = _compare(registry, model_name, comparison_id="cmp-2", verdict=None, p_value=None, test=None)
    assert other != first and registry.get(model_name, 2).description.count("[as challenger") == 2


def test_a_version_lists_its_newest_comparisons_and_counts_the_older_ones(
    sqlite_registry: ModelRegistry, model_name: str
):
    _two_versions(sqlite_registry, model_name)
    for i in range(11):
        _compare(sqlite_registry, model_name, comparison_id=f"cmp-{i}", holdout_rows=100 + i)
    description = sqlite_registry.get(model_name, 2).description
    assert description.count("[as challenger") == 10
    assert "(1 older comparison: see the comparisons experiment)" in description
    assert "on 110 rows" in description and "on 100 rows" not in description
    assert description.startswith("**stateless** from parent")


def test_a_comparison_refuses_unknown_versions_and_bad_numbers(sqlite_registry: ModelRegistry, model_name: str):
    _two_versions(sqlite_registry, model_name)
    with pytest.raises(LineageError, match="has no version 9; its versions are: 1, 2"):
        _compare(sqlite_registry, model_name, challenger_version="9")
    with pytest.raises(LineageError, match=r"challenger_metrics\['accuracy'\] must be a finite number"):
        _compare(sqlite_registry, model_name, challenger_metrics={"accuracy": math.inf})
    with pytest.raises(LineageError, match="both version 1"):
        _compare(sqlite_registry, model_name, challenger_version="1")


def test_every_promotion_and_rollback_is_an_event_of_the_alias_history(registry: ModelRegistry, model_name: str):
    name = model_name
    _two_versions(registry, name)
    registry.set_challenger(name, 2)
    registry.promote(name, decision_id="dec-9", reason="gate verdict promote")
    registry.rollback(name, decision_id="dec-10", reason="probation: worse than v1")
    registry.promote(name, 2, reason="operator override")
    registry.promote(name, 2)  # a retry: nothing moves, and the call is still recorded

    history = registry.alias_history(name)
    assert [(e.action, e.version, e.decision_id, e.reason) for e in history] == [
        ("promote", "1", None, None),
        ("promote", "2", "dec-9", "gate verdict promote"),
        ("rollback", "1", "dec-10", "probation: worse than v1"),
        ("promote", "2", None, "operator override"),
        ("promote", "2", None, None),
    ]
    assert [dict(e.after) for e in history] == [
        {CHAMPION: "1"},
        {CHAMPION: "2", PREVIOUS: "1"},
        {CHAMPION: "1"},
        {CHAMPION: "2", PREVIOUS: "1"},
        {CHAMPION: "2", PREVIOUS: "1"},
    ]
    assert dict(history[1].before) == {CHAMPION: "1", "challenger": "2"}
    assert [e.changed for e in history] == [True, True, True, True, False]
    assert all(a.at < b.at for a, b in itertools.pairwise(history))

    # No alias state is kept in version tags, so nothing can go stale when a version is promoted again.
    for version in ("1", "2"):
        tags = registry.get(name, version).tags
        assert not [k for k in tags if "promoted" in k or "rolled_back" in k]
    client = MlflowClient(registry.tracking_uri)
    run = client.get_run(history[2].run_id)
    assert run.info.run_name == "rollback-v1"
    assert client.get_experiment(run.info.experiment_id).name.endswith("/decisions")
    assert run.data.params["before"] == "champion=v2, previous=v1" and run.data.params["after"] == "champion=v1"


def test_stale_alias_tags_of_the_old_layout_are_removed_by_the_next_move(
    sqlite_registry: ModelRegistry, model_name: str
):
    name = model_name
    _two_versions(sqlite_registry, name)
    client = MlflowClient(sqlite_registry.tracking_uri)
    client.set_model_version_tag(name, "2", "driftpilot.rolled_back_at", "2026-01-01T00:00:00+00:00")
    client.set_model_version_tag(name, "2", "driftpilot.rolled_back_to", "1")
    sqlite_registry.promote(name, 2)
    assert "driftpilot.rolled_back_at" not in sqlite_registry.get(name, 2).tags
    assert "driftpilot.rolled_back_to" not in sqlite_registry.get(name, 2).tags


def test_alias_history_of_a_model_never_promoted_is_empty(sqlite_registry: ModelRegistry, model_name: str):
    assert sqlite_registry.alias_history(model_name) == []
