"""`driftpilot adopt`: a scikit-learn model logged with plain MLflow (or saved to a folder) becomes the policy's first
champion with lineage and a reference window; the loop, `predict`, `status` and `report drift` then use it; a model
that does not fit the policy is refused with one line and exit code 2, nothing stored or registered. Real local
MLflow (sqlite) and event stores in tmp."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking._tracking_service import utils as _tracking_utils
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from controller.actions.model_registry import open_registry
from controller.cli.main import main
from controller.clock import SystemClock
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from tests.conftest import T0
from tests.toy import toy_table, write_policy

REQUIREMENTS = ["scikit-learn", "cloudpickle"]  # explicit: MLflow otherwise infers them for seconds


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--log-level", "WARNING", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _lines(out: str) -> list[str]:
    """The command's own lines (MLflow logs its creation of a fresh database on stderr)."""
    return [line for line in out.strip().splitlines() if " INFO mlflow." not in line]


def _pipeline(table: pd.DataFrame, columns: list[str]):
    numeric = [c for c in columns if c != "color"]
    encode = ColumnTransformer([("num", "passthrough", numeric)]
                               + ([("cat", OneHotEncoder(handle_unknown="ignore"), ["color"])]
                                  if "color" in columns else []))
    return make_pipeline(encode, LogisticRegression()).fit(table[columns], table["y"])


def _log(tracking_uri: str, model, example: pd.DataFrame, registered: str | None = "handmade") -> str:
    """The model logged as a user would, with plain MLflow (not driftpilot); returns the run id."""
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI: restore the variable and MLflow's own setting as
    # they were, or every later test in this worker (policies read ${MLFLOW_TRACKING_URI:-...}) would see it.
    saved_env, saved_uri = os.environ.get("MLFLOW_TRACKING_URI"), _tracking_utils._tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    try:
        experiment = mlflow.MlflowClient().create_experiment("my-own-experiment")
        with mlflow.start_run(experiment_id=experiment) as run_:
            mlflow.sklearn.log_model(model, name="model", registered_model_name=registered, input_example=example,
                                     serialization_format="cloudpickle", pip_requirements=REQUIREMENTS)
    finally:
        _tracking_utils._tracking_uri = saved_uri
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
    return run_.info.run_id


@pytest.fixture
def setup(tmp_path: Path):
    policy = write_policy(tmp_path, tmp_path, "adopt-toy")
    policy.write_text(policy.read_text() + "gate: {min_rows: 50}\n")
    config = load_policy(policy, environ={}).config
    reference = tmp_path / "reference.csv"
    toy_table(300, seed=1).to_csv(reference, index=False)
    return policy, config, reference, f"sqlite:///{tmp_path}/mlflow.db"


def test_a_model_logged_with_plain_mlflow_is_adopted_served_and_retrained(setup, tmp_path: Path) -> None:
    policy, config, reference, tracking = setup
    train = toy_table(400, seed=0)
    columns = ["x1", "x2", "color"]
    run_id = _log(tracking, _pipeline(train, columns), train[columns].head(3))

    code, out = run("adopt", "--config", str(policy), "--model-uri", "models:/handmade/1", "--reference",
                    str(reference))
    assert code == 0, out
    assert "adopt-toy version 1 is champion: adopted models:/handmade/1 (sklearn); scored on 300 reference rows" \
        in out

    registry = open_registry(config, SystemClock())
    assert registry.champion_version("adopt-toy") == "1"
    info = registry.get("adopt-toy", "1")
    record = info.record
    assert (record.strategy, record.trigger, record.parent_version, record.window_rows) == \
        ("adopted", "manual", None, 300)
    assert record.extra["source_uri"] == "models:/handmade/1" and record.extra["source_run_id"] == run_id
    assert record.extra["reference_file"] == str(reference) and "adopted_at" in record.extra
    assert record.holdout_metrics["accuracy"] > 0.9  # the reference metric the performance monitor compares with
    [event] = registry.alias_history("adopt-toy")
    assert event.decision_id.startswith("adopt-") and event.reason == "adopted models:/handmade/1"
    assert json.loads(run("stats", "--config", str(policy))[1])["reference_rows"] == 300

    # Again: refused (a champion exists); --if-missing: nothing to do.
    code, out = run("adopt", "--config", str(policy), "--model-uri", "models:/handmade/1", "--reference",
                    str(reference))
    assert code == 1 and "already has a champion (version 1)" in out and "--force" in out
    code, out = run("adopt", "--config", str(policy), "--model-uri", "models:/handmade/1", "--reference",
                    str(reference), "--if-missing")
    assert code == 0 and "nothing to do" in out

    # Served: offline batch scoring with the champion, logged so labels can join.
    to_score = tmp_path / "new.csv"
    toy_table(20, seed=5).drop(columns=["y"]).to_csv(to_score, index=False)
    code, out = run("predict", "--config", str(policy), "--input", str(to_score), "--output",
                    str(tmp_path / "scored.parquet"), "--log")
    assert code == 0 and "with adopt-toy version 1" in out, out
    assert pd.read_parquet(tmp_path / "scored.parquet")["model_version"].eq("1").all()

    # The loop runs on the adopted champion: new-concept traffic, a manual retrain judged by the gate.
    store = EventStore.from_url(config.storage.url, SystemClock())
    drifted = toy_table(300, seed=3, concept="b")
    store.add_predictions(config.model, [PredictionRecord({"x1": r.x1, "x2": r.x2, "color": r.color}, T0,
                                                          prediction=0, prediction_id=f"n{i}", model_version="1")
                                         for i, r in enumerate(drifted.itertuples())])
    store.add_labels(config.model, [LabelRecord(f"n{i}", int(y)) for i, y in enumerate(drifted.y)])
    code, out = run("status", "--config", str(policy))
    assert code == 0 and out.startswith("model adopt-toy: champion v1"), out
    code, out = run("report", "drift", "--config", str(policy))
    signals = json.loads(out.split("\nnote:")[0])
    assert signals["champion_version"] == "1"
    assert signals["signals"]["performance"]["reference"] == pytest.approx(record.holdout_metrics["accuracy"])
    code, out = run("retrain", "--config", str(policy), "--strategy", "stateless")
    assert code == 0 and "gate promotes v2" in out, out
    assert registry.get("adopt-toy", "2").record.parent_version == "1"


def test_runs_uri_and_a_local_folder_without_signature(setup, tmp_path: Path) -> None:
    policy, config, reference, tracking = setup
    train = toy_table(400, seed=0)
    columns = ["x1", "x2", "color"]
    run_id = _log(tracking, _pipeline(train, columns), train[columns].head(3), registered=None)
    code, out = run("adopt", "--config", str(policy), "--model-uri", f"runs:/{run_id}/model", "--reference",
                    str(reference))
    assert code == 0 and "version 1 is champion" in out, out

    folder = tmp_path / "saved-model"  # no signature: feature_names_in_ is checked
    mlflow.sklearn.save_model(_pipeline(train, columns), str(folder), serialization_format="cloudpickle",
                              pip_requirements=REQUIREMENTS)
    code, out = run("adopt", "--config", str(policy), "--model-uri", str(folder), "--reference", str(reference),
                    "--force")
    assert code == 0 and "version 2 is champion" in out, out
    registry = open_registry(config, SystemClock())
    assert registry.get("adopt-toy", "2").record.extra["source_uri"] == str(folder.resolve())
    assert [e.action for e in registry.alias_history("adopt-toy")] == ["promote", "promote"]


@pytest.mark.parametrize("columns, signature, expected", [
    (["x1", "color"], True, "the policy's features ['x2'] are not inputs of the model"),
    (["x1", "x2", "color"], "renamed", "the model's signature needs ['x3'], which the policy does not declare"),
    (["x2", "x1", "color"], False, "list the policy's features in the model's order"),
    (["x1", "x2"], "numpy", "the model was fitted on 2 features (no signature, no feature names), the policy "
                           "declares 3"),
])
def test_a_model_that_does_not_fit_the_policy_is_refused(setup, tmp_path: Path, columns, signature,
                                                         expected) -> None:
    policy, config, reference, tracking = setup
    train = toy_table(400, seed=0)
    if signature == "renamed":
        train = train.rename(columns={"x2": "x3"})
        columns = ["x1", "x3", "color"]
    if signature == "numpy":
        model = LogisticRegression().fit(train[columns].to_numpy(), train["y"])
    else:
        model = _pipeline(train, columns)
    if signature in (True, "renamed"):
        _log(tracking, model, train[columns].head(3))
        uri = "models:/handmade/1"
    else:
        uri = str(tmp_path / "folder")
        mlflow.sklearn.save_model(model, uri, serialization_format="cloudpickle", pip_requirements=REQUIREMENTS)
    code, out = run("adopt", "--config", str(policy), "--model-uri", uri, "--reference", str(reference))
    assert code == 2, out
    assert expected in out and len(_lines(out)) == 1, out
    registry = open_registry(config, SystemClock())
    assert registry.champion_version("adopt-toy") is None
    assert json.loads(run("stats", "--config", str(policy))[1])["reference_rows"] == 0


def test_a_regressor_for_a_classification_policy_and_no_reference_are_refused(setup, tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    policy, config, reference, tracking = setup
    train = toy_table(100)
    folder = tmp_path / "regressor"
    mlflow.sklearn.save_model(LinearRegression().fit(train[["x1", "x2"]], train["y"]), str(folder),
                              serialization_format="cloudpickle", pip_requirements=REQUIREMENTS)
    policy.write_text(policy.read_text().replace("  color: {type: categorical, required: false}\n", ""))
    reference_2 = tmp_path / "reference2.csv"
    toy_table(300, seed=1).drop(columns=["color"]).to_csv(reference_2, index=False)
    code, out = run("adopt", "--config", str(policy), "--model-uri", str(folder), "--reference", str(reference_2))
    assert code == 2 and "is a regressor, the policy's task is classification" in out, out
    code, out = run("adopt", "--config", str(policy), "--model-uri", str(folder))
    assert code == 2 and "adopt needs --reference FILE" in out, out
    code, out = run("adopt", "--config", str(policy), "--model-uri", "models:/nothing/1", "--reference",
                    str(reference_2))
    assert code == 1 and "nothing" in out and len(_lines(out)) == 1, out


class _RiverPyfunc(mlflow.pyfunc.PythonModel):
    """How a River model is usually logged by hand: a pyfunc holding the estimator in `.model`."""

    def __init__(self, model) -> None:
        self.model = model

    def predict(self, context, model_input, params=None):
        return [self.model.predict_proba_one(r).get(True, 0.0) for r in model_input.to_dict(orient="records")]


def test_a_river_model_logged_as_a_pyfunc_is_adopted_and_served(setup, tmp_path: Path) -> None:
    import mlflow.pyfunc
    from river import linear_model

    policy, config, reference, tracking = setup
    policy.write_text(policy.read_text().replace("  color: {type: categorical, required: false}\n", ""))
    reference_2 = tmp_path / "reference2.csv"
    toy_table(300, seed=1).drop(columns=["color"]).to_csv(reference_2, index=False)
    learner = linear_model.LogisticRegression()
    for row in toy_table(400).itertuples():
        learner.learn_one({"x1": row.x1, "x2": row.x2}, bool(row.y))
    folder = tmp_path / "river-model"
    mlflow.pyfunc.save_model(str(folder), python_model=_RiverPyfunc(learner), pip_requirements=["river"])
    code, out = run("adopt", "--config", str(policy), "--model-uri", str(folder), "--reference", str(reference_2))
    assert code == 0 and "adopted" in out and "(river)" in out, out
    loaded = open_registry(config, SystemClock()).load("adopt-toy")
    assert loaded.flavor == "river" and loaded.record.holdout_metrics["accuracy"] > 0.9
    to_score = tmp_path / "new.csv"
    toy_table(20, seed=5).drop(columns=["y", "color"]).to_csv(to_score, index=False)
    code, out = run("predict", "--config", str(policy), "--input", str(to_score), "--output",
                    str(tmp_path / "scored.parquet"))
    assert code == 0, out
    assert set(pd.read_parquet(tmp_path / "scored.parquet")["prediction"]) <= {0, 1}
