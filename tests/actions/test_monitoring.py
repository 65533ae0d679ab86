"""Part 4 from the store: each monitor produces its signal on real data, detector state persists, the data-drift
reference follows the champion. Real store, real MLflow (SQLite), real Evidently and River."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.actions.bootstrap import bootstrap
from controller.actions.datafiles import features_from_table, target_from_table
from controller.actions.model_registry import open_registry
from controller.actions.monitoring import DETECTOR_KEY, MonitorCycle
from controller.actions.refresh import Refresher
from controller.clock import ManualClock
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from tests.toy import toy_table, write_policy
from trainers.stateless import StatelessConfig

MONITORS = """
monitors:
  data_drift: {current: {last_rows: 300}, sample_cap: 2000}
  concept_drift: {detector: adwin}
  performance: {window_rows: 300, min_labels: 100, max_drop: 0.1}
"""


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def model(tmp_path, mlflow_dir, clock: ManualClock, model_name):
    path = write_policy(tmp_path, mlflow_dir, model_name)
    path.write_text(path.read_text() + MONITORS)
    loaded = load_policy(path, environ={})
    store = EventStore.from_url(loaded.config.storage.url, clock)
    registry = open_registry(loaded.config, clock)
    table = toy_table(800, seed=0)
    bootstrap(loaded, features_from_table(table, loaded.config, "t"), target_from_table(table, loaded.config, "t"),
              store=store, registry=registry, clock=clock)
    return loaded, store, registry


def serve(loaded, store, registry, clock, *, rows, seed, concept="a", shift=0.0, prefix="s"):
    """Predict with the real champion, log the predictions, and let their natural labels arrive 30 minutes later."""
    table = toy_table(rows, seed=seed, concept=concept)
    table["x1"] = table["x1"] + shift
    champion = registry.load(loaded.config.model)
    predicted = champion.model.predict(features_from_table(table, loaded.config, "t"))
    clock.advance(minutes=5)
    store.add_predictions(loaded.config.model, [
        PredictionRecord({"x1": r.x1, "x2": r.x2, "color": r.color}, clock.now(), prediction=int(p),
                         prediction_id=f"{prefix}{seed}-{i}", model_version=champion.version)
        for i, (r, p) in enumerate(zip(table.itertuples(), predicted, strict=True))])
    clock.advance(minutes=30)
    store.add_labels(loaded.config.model, [LabelRecord(f"{prefix}{seed}-{i}", int(y)) for i, y in enumerate(table.y)])


def test_stationary_traffic_raises_no_signal(model, clock: ManualClock, tmp_path) -> None:
    loaded, store, registry = model
    for seed in (1, 2, 3):
        serve(loaded, store, registry, clock, rows=150, seed=seed)
    result = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path).run()
    assert result.reference_rows == 600 and result.current_rows == 300  # training rows vs newest logged traffic
    assert result.data_drift.verdict == "ok" and result.data_drift.drifted_features == ()
    assert result.concept_drift.drift is False
    assert result.performance.verdict == "ok"
    assert result.html_report is None
    # On demand (`driftpilot report drift`), the report is saved and logged even without drift.
    on_demand = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path).run(html=True)
    assert Path(on_demand.html_report).is_file()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri)
    experiment = client.get_experiment_by_name(loaded.config.experiment + "/decisions")  # apart from training runs
    runs = client.search_runs([experiment.experiment_id], "tags.`driftpilot.signal` = 'data_drift_report'")
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id)] == [Path(on_demand.html_report).name]


def test_shifted_feature_is_flagged_with_its_html_report_logged(model, clock: ManualClock, tmp_path) -> None:
    loaded, store, registry = model
    serve(loaded, store, registry, clock, rows=300, seed=1, shift=2.0)
    result = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path).run()
    assert result.data_drift.drifted_features == ("x1",)
    assert Path(result.html_report).read_text().strip().lower().startswith("<!doctype html>")
    # The evidence is logged to MLflow as a decision run with the report attached (checked with MLflow's client).
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri)
    experiment = client.get_experiment_by_name(loaded.config.experiment + "/decisions")  # apart from training runs
    runs = client.search_runs([experiment.experiment_id], "tags.`driftpilot.signal` = 'data_drift'")
    assert len(runs) == 1 and runs[0].data.tags["driftpilot.drifted_features"] == "x1"
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id)] == [Path(result.html_report).name]


def test_concept_change_is_detected_after_it_and_performance_degrades(model, clock: ManualClock, tmp_path) -> None:
    loaded, store, registry = model
    cycle = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path)
    for seed in range(1, 5):  # stationary: no drift, cycle after cycle
        serve(loaded, store, registry, clock, rows=100, seed=seed)
        assert cycle.run().concept_drift.drift is False
    fired_at = None
    for seed in range(5, 12):  # the concept changes abruptly
        serve(loaded, store, registry, clock, rows=100, seed=seed, concept="b")
        # A new MonitorCycle each time: the detector state must come from the store, as after a restart.
        result = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path).run()
        if result.concept_drift.drift and fired_at is None:
            fired_at = seed
    assert fired_at is not None and fired_at <= 7  # within 300 rows of the change
    assert result.performance.verdict == "degraded"


def test_detector_state_survives_restart_and_resets_on_a_new_champion(model, clock: ManualClock, tmp_path) -> None:
    loaded, store, registry = model
    serve(loaded, store, registry, clock, rows=200, seed=1)
    first = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path).run()
    assert first.concept_drift.rows_seen == 200
    serve(loaded, store, registry, clock, rows=100, seed=2)
    again = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path).run()
    assert again.concept_drift.rows_seen == 300  # continued, not restarted
    stored = store.get_state(loaded.config.model, DETECTOR_KEY)
    assert stored is not None and len(stored) > 0


def test_reference_switches_to_the_new_champions_window(model, clock: ManualClock, tmp_path) -> None:
    loaded, store, registry = model
    for seed in range(1, 4):
        serve(loaded, store, registry, clock, rows=200, seed=seed, shift=2.0)
    cycle = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path)
    assert cycle.run().data_drift.drifted_features == ("x1",)
    # Retrain on the shifted traffic only and promote it: the reference becomes its (shifted) training window.
    retrain = loaded.config.retrain.model_copy(update={"stateless": StatelessConfig.model_validate(
        {"window": {"kind": "last_rows", "rows": 400}})})
    loaded = loaded._replace(config=loaded.config.model_copy(update={"retrain": retrain}))
    outcome = Refresher(loaded, store, registry, clock).retrain("stateless")
    registry.promote(loaded.config.model, outcome.version)
    after = MonitorCycle(loaded, store, registry, clock, report_dir=tmp_path).run()
    assert after.champion_version == outcome.version
    assert after.reference_rows == 400
    assert "x1" not in after.data_drift.drifted_features
    reference = MonitorCycle(loaded, store, registry, clock).reference_features(registry.get(loaded.config.model,
                                                                                               outcome.version))
    assert np.isclose(reference["x1"].mean(), 2.0, atol=0.3)
