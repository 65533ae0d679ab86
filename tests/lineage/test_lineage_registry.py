"""ModelRegistry against real MLflow stores: sqlite, and a real `mlflow server` (marker mlflow_server).

Aliases, lineage tags, descriptions, runs, ancestry and error messages are checked on both backends.
"""

from __future__ import annotations

import itertools

import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from lineage import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    LineageError,
    LineageNotFound,
    ModelRegistry,
)
from tests.lineage.lineage_helpers import make_data, make_record

X, Y = make_data()
MODEL = LogisticRegression().fit(X, Y)


def _register(registry: ModelRegistry, name: str, **record_overrides):
    return registry.register(name, MODEL, make_record(**record_overrides))


def _child(parent: str, depth: int = 1, strategy: str = "finetune", **more):
    return {
        "parent_version": parent,
        "strategy": strategy,
        "trigger": "data_drift",
        "chain_depth": depth if strategy in ("finetune", "incremental") else 0,
        **more,
    }


def test_alias_lifecycle_keeps_a_champion_at_every_instant(
    registry: ModelRegistry, model_name: str
):
    name = model_name
    assert (
        registry.aliases(name) == {} and registry.champion_version(name) is None
    )  # nothing registered yet

    v1 = _register(registry, name)
    assert v1.version == "1" and v1.aliases == ()
    change = registry.promote(name, v1.version)  # bootstrap: promoted explicitly, no challenger
    assert (change.before, change.after) == ({}, {CHAMPION: "1"})

    _register(registry, name, **_child("1"))
    change = registry.set_challenger(name, "2")
    assert change.after == {CHAMPION: "1", CHALLENGER: "2"}
    change = registry.promote(name)  # default: the challenger
    assert change.version == "2"
    assert change.before == {CHAMPION: "1", CHALLENGER: "2"}
    assert change.after == {CHAMPION: "2", PREVIOUS: "1"}

    _register(registry, name, **_child("2", depth=2))
    registry.set_challenger(name, 3)
    change = registry.promote(name)
    assert change.after == {CHAMPION: "3", PREVIOUS: "2"}
    assert registry.champion_version(name) == "3"

    change = registry.rollback(name)
    assert change.version == "2"
    assert change.before == {CHAMPION: "3", PREVIOUS: "2"}
    assert change.after == {CHAMPION: "2"}
    assert registry.get(name, 2).aliases == (CHAMPION,)

    # Every state MLflow held after each single alias call, in order: champion never missing once set.
    states = registry._gateway.client.alias_states
    assert states == [
        {CHAMPION: "1"},
        {CHAMPION: "1", CHALLENGER: "2"},
        {CHAMPION: "1", CHALLENGER: "2", PREVIOUS: "1"},
        {CHAMPION: "2", CHALLENGER: "2", PREVIOUS: "1"},
        {CHAMPION: "2", PREVIOUS: "1"},
        {CHAMPION: "2", PREVIOUS: "1", CHALLENGER: "3"},
        {CHAMPION: "2", PREVIOUS: "2", CHALLENGER: "3"},
        {CHAMPION: "3", PREVIOUS: "2", CHALLENGER: "3"},
        {CHAMPION: "3", PREVIOUS: "2"},
        {CHAMPION: "2", PREVIOUS: "2"},
        {CHAMPION: "2"},
    ]
    assert all(CHAMPION in s for s in states)

    with pytest.raises(
        LineageError, match="no 'previous' version .*champion=v2.*promote\\(name, version=...\\)"
    ):
        registry.rollback(name)
    with pytest.raises(LineageError, match="no challenger to promote"):
        registry.promote(name)


def test_promoting_the_champion_again_changes_nothing(registry: ModelRegistry, model_name: str):
    _register(registry, model_name)
    registry.promote(model_name, 1)
    change = registry.promote(model_name, 1)
    assert change.before == change.after == {CHAMPION: "1"}


def test_challenger_cannot_be_the_champion(registry: ModelRegistry, model_name: str):
    _register(registry, model_name)
    registry.promote(model_name, 1)
    with pytest.raises(LineageError, match="version 1 of .* is the champion"):
        registry.set_challenger(model_name, 1)


def test_lineage_tags_round_trip_and_the_description_links_the_parent(
    registry: ModelRegistry, model_name: str
):
    name = model_name
    _register(registry, name)
    record = make_record(
        **_child("1", champion_metrics={"accuracy": 0.75}, extra={"method": "warm_start"})
    )
    info = registry.register(
        name, MODEL, record, params={"C": 1.0, "max_iter": 100}, training_data=(X, Y)
    )

    assert info.version == "2" and info.flavor == "sklearn"
    fetched = registry.get(name, "2")
    assert fetched.record == record  # exact round trip through the store (the JSON artifact)
    # A handful of short, filterable tags on the version; the full record is the artifact.
    assert {k: v for k, v in fetched.tags.items() if k.startswith("driftpilot.")} == {
        **record.summary_tags(),
        "driftpilot.flavor": "sklearn",
    }
    assert fetched.tags["driftpilot.parent_version"] == "1"
    assert fetched.tags["driftpilot.chain_depth"] == "1"
    assert f"[version 1](#/models/{name}/versions/1?workflowType=machine_learning)" in fetched.description
    assert f"#/experiments/{registry.experiment_id}/runs/{info.run_id}" in fetched.description
    assert "Holdout: accuracy 0.8125, log_loss 0.3000 · champion v1 at the time, on the same rows: accuracy 0.7500" in (
        fetched.description
    )
    assert "300 rows · event times not recorded · labels arrived 2026-02-22 12:00 → 2026-03-01 10:59 (7.0 days)" in (
        fetched.description
    )
    assert registry.get(name, "1").record.parent_version is None


def test_versions_of_the_old_tag_layout_are_still_read(sqlite_registry: ModelRegistry, model_name: str, tmp_path):
    old = make_record(extra={"method": "full_refit", "first_label_seq": 1})
    client = MlflowClient(sqlite_registry.tracking_uri)
    client.create_registered_model(model_name)
    client.create_model_version(model_name, source=str(tmp_path), tags=old.to_tags())  # schema-1 tags
    assert sqlite_registry.get(model_name, 1).record == old
    assert sqlite_registry.tree(model_name)[0].record == old


def test_the_training_run_holds_params_metrics_tags_and_the_data_window(
    registry: ModelRegistry, model_name: str
):
    record = make_record(champion_metrics={"accuracy": 0.5})
    info = registry.register(model_name, MODEL, record, params={"C": 1.0}, training_data=(X, Y))
    run = MlflowClient(registry.tracking_uri).get_run(info.run_id)

    assert run.info.run_name == "v1-bootstrap"
    assert run.info.status == "FINISHED"
    assert run.data.params == {"C": "1.0", "strategy": "bootstrap", "trigger": "bootstrap"}
    # The version's own holdout, named so: training runs of different versions are not a comparison.
    assert run.data.metrics == {"holdout.accuracy": 0.8125, "holdout.log_loss": 0.1 + 0.2}
    assert run.data.tags["driftpilot.version"] == "1"
    assert run.data.tags["driftpilot.registered_model"] == model_name
    assert {k: v for k, v in run.data.tags.items() if k in record.summary_tags()} == record.summary_tags()
    artifacts = {a.path for a in MlflowClient(registry.tracking_uri).list_artifacts(info.run_id)}
    assert "driftpilot-lineage.json" in artifacts
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "window-" + record.window_fingerprint[:12]
    assert '"num_rows": 300' in dataset_input.dataset.profile
    tags = {t.key: t.value for t in dataset_input.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["window_start"] == record.window_start.isoformat()


def test_ancestors_walk_parent_tags_and_tree_lists_every_version(
    registry: ModelRegistry, model_name: str
):
    name = model_name
    _register(registry, name)
    _register(registry, name, **_child("1", depth=1))
    _register(registry, name, **_child("2", depth=2))
    _register(registry, name, **_child("3", strategy="stateless"))
    registry.promote(name, 3)

    assert [v.version for v in registry.ancestors(name, 3)] == ["2", "1"]
    assert [v.version for v in registry.ancestors(name, 4)] == ["3", "2", "1"]
    assert registry.ancestors(name, 1) == []

    tree = registry.tree(name)
    assert [v.version for v in tree] == ["1", "2", "3", "4"]
    assert [v.parent_version for v in tree] == [None, "1", "2", "3"]
    assert [v.record.chain_depth for v in tree] == [0, 1, 2, 0]
    assert [v.aliases for v in tree] == [(), (), (CHAMPION,), ()]
    assert len({v.run_id for v in tree}) == 4
    assert all(a.created_at <= b.created_at for a, b in itertools.pairwise(tree))


def test_register_refuses_a_broken_lineage_without_creating_a_version(
    registry: ModelRegistry, model_name: str
):
    name = model_name
    _register(registry, name)
    with pytest.raises(LineageNotFound, match="has no parent version 9; its versions are: 1"):
        _register(registry, name, **_child("9"))
    _register(registry, name, **_child("1", depth=1))
    with pytest.raises(
        LineageError, match="chain_depth 1 does not continue parent version 2 .*chain_depth 2"
    ):
        _register(registry, name, **_child("2", depth=1))
    assert [v.version for v in registry.tree(name)] == ["1", "2"]


def test_unknown_model_alias_and_version_errors_name_what_exists(
    registry: ModelRegistry, model_name: str
):
    _register(registry, model_name)
    with pytest.raises(
        LineageNotFound, match="has no 'champion' alias; its aliases are: \\(none\\)"
    ):
        registry.load(model_name)
    registry.set_challenger(model_name, 1)
    with pytest.raises(
        LineageNotFound, match="has no 'champion' alias; its aliases are: challenger=v1"
    ):
        registry.load(model_name)
    with pytest.raises(LineageNotFound, match="has no version 5; its versions are: 1"):
        registry.get(model_name, 5)
    with pytest.raises(
        LineageNotFound,
        match=f"no registered model 'no-such-model'.*registered models: .*{model_name}",
    ):
        registry.load("no-such-model")
    with pytest.raises(LineageError, match="positive integer like 3"):
        registry.get(model_name, "latest")


def test_load_by_alias_and_by_version_returns_the_native_model_and_its_record(
    registry: ModelRegistry, model_name: str
):
    _register(registry, model_name)
    registry.promote(model_name, 1)
    loaded = registry.load(model_name)
    assert isinstance(loaded.model, LogisticRegression)
    assert (loaded.model.predict_proba(X) == MODEL.predict_proba(X)).all()
    assert (loaded.version, loaded.flavor, loaded.record) == ("1", "sklearn", make_record())
    assert registry.load(model_name, version=1).version == "1"


def test_log_decision_and_log_artifact_attach_to_runs(
    registry: ModelRegistry, model_name: str, tmp_path
):
    report = tmp_path / "drift.html"
    report.write_text("<html>drift</html>")
    run_id = registry.log_decision(
        model_name,
        decision_id="dec-42",
        metrics={"share_drifted": 0.25},
        tags={"driftpilot.verdict": "hold"},
        params={"trigger": "data_drift"},
        artifacts=[report],
    )
    client = MlflowClient(registry.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "decision-dec-42"
    assert run.data.metrics == {"share_drifted": 0.25}
    assert run.data.tags["driftpilot.kind"] == "decision"
    assert run.data.tags["driftpilot.verdict"] == "hold"
    assert run.data.params == {"trigger": "data_drift"}

    registry.log_artifact(run_id, report, artifact_path="evidence")
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["drift.html", "evidence"]
    with pytest.raises(LineageError, match="no such file"):
        registry.log_artifact(run_id, tmp_path / "missing.html")


def test_a_refused_register_marks_its_run_failed_and_creates_no_version(
    registry: ModelRegistry, model_name: str
):
    with pytest.raises(LineageError, match="refused to register a new version of"):
        registry.register(model_name, MODEL, make_record(), params={"bad key!": 1})
    assert registry.aliases(model_name) == {}
    with pytest.raises(LineageNotFound, match="has no version 1; its versions are: \\(none\\)"):
        registry.get(model_name, 1)
    runs = MlflowClient(registry.tracking_uri).search_runs(
        [registry.experiment_id], f"tags.`driftpilot.registered_model` = '{model_name}'"
    )
    assert [r.info.status for r in runs] == ["FAILED"]
