"""Part 2 end to end on a real (SQLite-backed) MLflow registry: bootstrap, lineage, /predict with hot swap, batch
prediction. No mocks: real store, real registry, real scikit-learn models."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from controller.actions.bootstrap import BootstrapError, bootstrap
from controller.actions.datafiles import features_from_table, target_from_table
from controller.actions.model_registry import RegistryChampionSource, open_registry
from controller.api.app import create_app
from controller.api.service import build_runtimes
from controller.cli.main import main
from controller.clock import ManualClock
from controller.policy_loader import load_policy
from controller.store import EventStore
from lineage import LineageRecord
from tests.toy import toy_table, write_policy
from trainers import NO_PARENT, TrainingContext, get_trainer


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for the module (creating one costs seconds); each test registers its own model name."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def env(tmp_path: Path, clock: ManualClock, mlflow_dir: Path, model_name: str):
    policy_path = write_policy(tmp_path, mlflow_dir, model_name)
    loaded = load_policy(policy_path, environ={})
    store = EventStore.from_url(loaded.config.storage.url, clock)
    registry = open_registry(loaded.config, clock)
    yield loaded, store, registry, tmp_path
    store.dispose()


def do_bootstrap(loaded, store, registry, clock, table):
    return bootstrap(loaded, features_from_table(table, loaded.config, "toy"),
                     target_from_table(table, loaded.config, "toy"), store=store, registry=registry, clock=clock)


def register_flipped(loaded, store, registry, clock) -> str:
    """A second version trained on inverted labels: its predictions are the opposite of v1's, so a response that
    mixed versions would be visible."""
    name = loaded.config.model
    window = store.labeled_window(name, clock.now(), feature_types=loaded.config.feature_types)
    flipped = window.__class__(**{**window.__dict__, "labels": 1 - window.labels})
    context = TrainingContext(estimator=loaded.config.estimator, feature_types=loaded.config.feature_types,
                              task="classification", classes=(0, 1))
    result = get_trainer("stateless").train(flipped, NO_PARENT, context)
    record = LineageRecord(parent_version="1", strategy="stateless", trigger="manual",
                           window_start=window.start, window_end=window.end, window_rows=window.rows,
                           window_fingerprint=window.fingerprint, maturity_cut=window.as_of,
                           holdout_metrics={"accuracy": 0.0}, champion_metrics={"accuracy": 1.0}, chain_depth=0,
                           policy_hash=loaded.sha256, decision_id="test-flip")
    return registry.register(name, result.model, record).version


def test_bootstrap_registers_a_champion_with_lineage_and_stores_the_reference_window(env, clock) -> None:
    loaded, store, registry, _ = env
    name = loaded.config.model
    result = do_bootstrap(loaded, store, registry, clock, toy_table())
    assert (result.version, result.rows_stored, result.train_rows, result.holdout_rows) == ("1", 400, 300, 100)
    assert result.holdout_metrics["accuracy"] > 0.9
    assert registry.aliases(name) == {"champion": "1"}
    info = registry.get(name, "1")
    record = info.record
    assert (record.strategy, record.trigger, record.parent_version, record.chain_depth) == \
        ("bootstrap", "bootstrap", None, 0)
    assert record.window_rows == 300 and record.window_fingerprint == result.window_fingerprint
    assert record.policy_hash == loaded.sha256
    assert record.holdout_metrics == result.holdout_metrics
    window = store.labeled_window(name, clock.now())
    assert window.rows == 400 and window.prediction_ids.str.startswith("ref-").all()
    # Training went through the accessor: the first 300 rows of the stored window are the training window.
    assert window.slice(0, 300).fingerprint == record.window_fingerprint


def test_bootstrap_twice_is_refused_and_stores_nothing_twice(env, clock) -> None:
    loaded, store, registry, _ = env
    name = loaded.config.model
    do_bootstrap(loaded, store, registry, clock, toy_table())
    with pytest.raises(BootstrapError, match="already has a champion \\(version 1\\).*--force"):
        do_bootstrap(loaded, store, registry, clock, toy_table())
    clock.advance(minutes=1)
    again = bootstrap(loaded, features_from_table(toy_table(), loaded.config, "t"),
                      target_from_table(toy_table(), loaded.config, "t"), store=store, registry=registry,
                      clock=clock, force=True)
    assert again.version == "2" and store.count_predictions(name) == 400  # same file: same ids, no duplicates


def test_predict_serves_the_champion_and_logs_every_prediction(env, clock) -> None:
    loaded, store, registry, _ = env
    name = loaded.config.model
    do_bootstrap(loaded, store, registry, clock, toy_table())
    runtimes = build_runtimes([loaded], clock, environ={},
                              champion_sources=lambda _: RegistryChampionSource(registry))
    client = TestClient(create_app(runtimes, clock))
    assert client.post(f"/v1/models/{name}/predict", json={"features": {"x1": 1.0, "x2": 1.0}}).status_code == 503
    runtimes[name].champion.refresh()
    one = client.post(f"/v1/models/{name}/predict", json={"features": {"x1": 2.0, "x2": 1.0}, "prediction_id": "q1"})
    assert one.status_code == 200, one.text
    assert one.json()["model_version"] == "1"
    assert one.json()["predictions"][0]["prediction"] == 1 and one.json()["predictions"][0]["prediction_id"] == "q1"
    batch = client.post(f"/v1/models/{name}/predict",
                        json={"items": [{"features": {"x1": -2.0, "x2": -1.0, "color": "red"}}] * 3})
    assert [p["prediction"] for p in batch.json()["predictions"]] == [0, 0, 0]
    served = runtimes[name].champion.current
    assert type(served.predictor).__name__ == "CompiledPredictor"  # the numpy path, checked against the pipeline
    frame = features_from_table(pd.DataFrame({"x1": [2.0], "x2": [1.0]}), loaded.config, "row")
    assert one.json()["predictions"][0]["scores"]["1"] == pytest.approx(served.model.predict_proba(frame)[0][1])
    stored = store.get_prediction(name, "q1")
    assert (stored["source"], stored["model_version"], stored["prediction"]) == ("served", "1", 1)
    assert stored["scores"]["1"] > 0.5
    assert store.count_predictions(name) == 400 + 4
    bad = client.post(f"/v1/models/{name}/predict", json={"features": {"x1": "a"}})
    assert bad.status_code == 422 and store.count_predictions(name) == 404


def test_hot_swap_under_concurrent_requests_never_fails_or_mixes_versions(env, clock) -> None:
    loaded, store, registry, _ = env
    name = loaded.config.model
    do_bootstrap(loaded, store, registry, clock, toy_table())
    v2 = register_flipped(loaded, store, registry, clock)
    runtimes = build_runtimes([loaded], clock, environ={},
                              champion_sources=lambda _: RegistryChampionSource(registry))
    holder = runtimes[name].champion
    holder.refresh()
    client = TestClient(create_app(runtimes, clock))
    rows = [{"features": {"x1": 2.0, "x2": 1.0}}, {"features": {"x1": -2.0, "x2": -1.0}}] * 5
    expected = {"1": [1, 0] * 5, v2: [0, 1] * 5}
    seen, failures, stop = [], [], threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            response = client.post(f"/v1/models/{name}/predict", json={"items": rows})
            if response.status_code != 200:
                failures.append(response.text)
                continue
            body = response.json()
            seen.append(body["model_version"])
            if [p["prediction"] for p in body["predictions"]] != expected[body["model_version"]]:
                failures.append(f"mixed: {body}")

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for target in [v2, "1", v2, "1"]:
            registry.promote(name, target) if target == v2 else registry.rollback(name)
            assert holder.refresh() is True
            deadline = time.monotonic() + 60  # a bound, so a swap that never lands fails instead of hanging
            while seen.count(target) < 3 and not failures:  # let requests land on this version
                if time.monotonic() > deadline:
                    pytest.fail(f"after the swap to version {target}, 60 s passed without 3 requests answered by it; "
                                f"versions answered so far: {seen[-20:]}")
                threading.Event().wait(0.001)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert set(seen) == {"1", v2}


def test_cli_bootstrap_lineage_and_batch_predict(tmp_path: Path, mlflow_dir: Path) -> None:
    policy_path = write_policy(tmp_path, mlflow_dir, "toy")
    data = tmp_path / "train.csv"
    toy_table().to_csv(data, index=False)
    runner = CliRunner()
    result = runner.invoke(main, ["--log-level", "WARNING", "bootstrap", "--config", str(policy_path),
                                  "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "toy version 1 is champion: trained on 300 rows, holdout 100 rows" in result.output

    tree = runner.invoke(main, ["lineage", "--config", str(policy_path)])
    assert tree.exit_code == 0 and tree.output.startswith("v1 [champion]  bootstrap (bootstrap)  rows=300")
    rows = json.loads(runner.invoke(main, ["lineage", "--config", str(policy_path), "--json"]).output)["versions"]
    assert [(r["version"], r["parent"], r["aliases"]) for r in rows] == [("1", None, ["champion"])]

    to_score = tmp_path / "score.csv"
    toy_table(50, seed=1).drop(columns=["y"]).to_csv(to_score, index=False)
    out = tmp_path / "scored.parquet"
    scored = runner.invoke(main, ["predict", "--config", str(policy_path), "--input", str(to_score),
                                  "--output", str(out), "--log", "--batch-size", "20"])
    assert scored.exit_code == 0, scored.output
    frame = pd.read_parquet(out)
    assert len(frame) == 50 and set(frame["model_version"]) == {"1"}
    truth = (frame["x1"] + 0.5 * frame["x2"] > 0).astype(int)
    assert (frame["prediction"] == truth).mean() > 0.9
    assert {"score_0", "score_1"} <= set(frame.columns)
    store = EventStore.from_url(f"sqlite:///{tmp_path}/events.db")
    logged = store.get_prediction("toy", frame["prediction_id"].iloc[0])
    assert logged["source"] == "batch" and store.count_predictions("toy") == 450

    missing = runner.invoke(main, ["bootstrap", "--config", str(policy_path), "--data", str(tmp_path / "no.csv")])
    assert missing.exit_code == 2 and "no such file" in missing.output  # a data file problem: exit code 2


def test_readyz_can_wait_for_a_champion(env, clock) -> None:
    loaded, store, registry, _ = env
    strict = loaded.config.serving.model_copy(update={"require_champion": True})
    loaded = loaded._replace(config=loaded.config.model_copy(update={"serving": strict}))
    runtimes = build_runtimes([loaded], clock, environ={},
                              champion_sources=lambda _: RegistryChampionSource(registry))
    client = TestClient(create_app(runtimes, clock))
    name = loaded.config.model
    waiting = client.get("/readyz")
    assert waiting.status_code == 503 and "no champion loaded yet" in waiting.json()["problems"][name]
    do_bootstrap(loaded, store, registry, clock, toy_table())
    runtimes[name].champion.refresh()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["champions"] == {name: "1"}
