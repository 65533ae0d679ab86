"""What a drift check records in MLflow (issue 10, items 1 and 7): the evidence of every monitor, the judged
champion, FAILED on failure, and a note instead of an error when there is too little current traffic.
Real store, real MLflow (SQLite), real Evidently and River; the one fake is an injected performance monitor."""

from __future__ import annotations

from dataclasses import replace as dc_replace

import pytest
from mlflow import MlflowClient

from controller.actions.bootstrap import bootstrap
from controller.actions.datafiles import features_from_table, target_from_table
from controller.actions.model_registry import open_registry
from controller.actions.monitoring import MonitorCycle
from controller.policy_loader import load_policy
from controller.store import EventStore
from lineage import LineageError
from monitors import build_monitors
from tests.actions.test_monitoring import MONITORS, serve
from tests.toy import toy_table, write_policy


@pytest.fixture
def model(tmp_path, clock, model_name):
    """A bootstrapped champion (the toy model of the monitoring tests) with its own MLflow store."""
    path = write_policy(tmp_path, tmp_path / "mlflow", model_name)
    path.write_text(path.read_text() + MONITORS)
    loaded = load_policy(path, environ={})
    store = EventStore.from_url(loaded.config.storage.url, clock)
    registry = open_registry(loaded.config, clock)
    table = toy_table(800, seed=0)
    bootstrap(loaded, features_from_table(table, loaded.config, "t"), target_from_table(table, loaded.config, "t"),
              store=store, registry=registry, clock=clock)
    return loaded, store, registry


def _decision_runs(registry, loaded) -> list:
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    experiment = client.get_experiment_by_name(loaded.config.experiment + "/decisions")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"tags.`driftpilot.registered_model` = "
                              f"'{loaded.config.registered_model}' and tags.`driftpilot.kind` = 'decision'")


def test_a_drift_run_logs_every_feature_score_each_verdict_and_the_judged_champion(model, clock, tmp_path):
    loaded, store, registry = model
    serve(loaded, store, registry, clock, rows=300, seed=1, shift=2.0)
    result = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path / 'reports').run()
    [run] = _decision_runs(registry, loaded)
    assert result.mlflow_run_id == run.info.run_id and run.info.status == "FINISHED"
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    assert set(metrics) >= {"drift.x1", "drift.x2", "drift.color", "drift_share", "concept_drift.detected",
                            "performance.accuracy", "performance.drop"}
    assert metrics["drift.x1"] == result.data_drift.features[0].score and metrics["drifted_features"] == 1
    assert params["method.x1"].startswith("wasserstein") and params["champion_version"] == "1"
    assert tags["driftpilot.data_drift"] == result.data_drift.verdict
    assert tags["driftpilot.concept_drift"] in ("none", "warning", "drift")
    assert tags["driftpilot.performance"] == result.performance.verdict
    assert tags["driftpilot.champion"] == "1" and tags["driftpilot.drifted_features"] == "x1"
    name = loaded.config.registered_model
    assert f"[version 1](#/models/{name}/versions/1?workflowType=machine_learning)" in tags["mlflow.note.content"]
    # The judged champion is the run's model input: the run page links its logged model.
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    model_id = client.get_model_version(name, "1").source.removeprefix("models:/")
    assert [m.model_id for m in client.get_run(run.info.run_id).inputs.model_inputs] == [model_id]


def test_on_demand_with_too_little_traffic_says_so_and_finishes_its_run(model, clock, tmp_path):
    loaded, store, registry = model
    serve(loaded, store, registry, clock, rows=1, seed=1)  # `make run` and one logged prediction
    result = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path / 'reports').run(html=True)
    assert result.html_report is None and result.data_drift.verdict == "insufficient_rows"
    assert any(note.startswith("too little current traffic for a data-drift report: 1 logged prediction(s)")
               and "monitors.data_drift.min_rows=30" in note for note in result.notes)
    [run] = _decision_runs(registry, loaded)
    assert run.info.status == "FINISHED" and run.data.tags["driftpilot.data_drift"] == "insufficient_rows"
    assert not (tmp_path / 'reports').exists() or not list((tmp_path / 'reports').iterdir())  # no report file


class _BrokenPerformance:
    """An injected monitor that fails, as a bug or a bad window would."""

    kind = "performance"
    enabled = True

    def evaluate(self, *args, **kwargs):
        raise LineageError("the performance monitor failed on purpose")


def test_an_on_demand_check_that_fails_leaves_a_failed_run_with_the_error(model, clock, tmp_path):
    loaded, store, registry = model
    serve(loaded, store, registry, clock, rows=300, seed=1)
    policy = loaded.config
    real = build_monitors(policy.monitors, task=policy.task, feature_types=policy.feature_types,
                          classes=policy.target.classes)
    cycle = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path / 'reports',
                         monitors=dc_replace(real, performance=_BrokenPerformance()))
    with pytest.raises(LineageError, match="failed on purpose"):
        cycle.run(html=True)
    [run] = _decision_runs(registry, loaded)
    assert run.info.status == "FAILED"
    assert run.data.tags["driftpilot.error"] == "LineageError: the performance monitor failed on purpose"
    assert not (tmp_path / 'reports').exists()  # no report was written before the failure
