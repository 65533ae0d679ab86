"""The lifecycle against a real `mlflow server`, read back through the MLflow REST API the UI itself uses (issue 10).

bootstrap -> traffic of a new concept -> retrain (gate promotes) -> report drift -> rollback -> promote --version,
all through the CLI; then what a person sees in the MLflow UI: the aliases, a handful of short version tags, the
comparison run with both versions' metrics under the same keys on one holdout fingerprint, the alias history, the
experiments' kind, and the full lineage record as an artifact that round-trips exactly.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.actions.model_registry import open_registry
from controller.cli.main import main
from controller.clock import SystemClock
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from lineage import LineageRecord
from tests.conftest import T0
from tests.toy import toy_table

pytestmark = [pytest.mark.mlflow_server, pytest.mark.slow]

POLICY = """\
model: {name}
task: classification
target: {{name: y, classes: [0, 1]}}
features:
  x1: numeric
  x2: numeric
  color: {{type: categorical, required: false}}
storage: {{url: "sqlite:///{tmp}/events.db"}}
mlflow: {{tracking_uri: "{url}"}}
estimator:
  class: sklearn.linear_model.SGDClassifier
  params: {{loss: log_loss, random_state: 0}}
bootstrap: {{holdout_fraction: 0.25}}
retrain: {{holdout_fraction: 0.25, min_rows: 40}}
gate: {{min_rows: 50}}
"""
SUMMARY_TAGS = {"schema", "strategy", "trigger", "window", "window_rows", "chain_depth", "decision_id",
                "parent_version", "flavor"}


class Rest:
    """The MLflow REST API, as the UI calls it (no MlflowClient in between)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **query: str) -> dict:
        with urllib.request.urlopen(f"{self.url}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}",
                                    timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def runs(self, experiment_id: str, filter_string: str) -> list[dict]:
        body = {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 200,
                "order_by": ["attributes.start_time ASC"]}
        return self.post("runs/search", body).get("runs", [])

    def artifact(self, run_id: str, path: str) -> bytes:
        query = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
        with urllib.request.urlopen(f"{self.url}/get-artifact?{query}", timeout=10) as response:
            return response.read()


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--log-level", "WARNING", *args])
    return result.exit_code, result.output


def _kv(items: list[dict] | None) -> dict[str, str]:
    return {item["key"]: item["value"] for item in items or []}


def _metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def test_the_lifecycle_as_the_mlflow_ui_shows_it(mlflow_server_url: str, tmp_path: Path, model_name: str) -> None:
    server = mlflow_server_url  # tests/conftest.py: a lean real `mlflow server`, proxied artifacts
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(name=model_name, tmp=tmp_path, url=server))
    data = tmp_path / "train.csv"
    toy_table(400).to_csv(data, index=False)

    code, out = _run("bootstrap", "--config", str(policy), "--data", str(data), "--holdback", "0.25",
                     "--time-start", "2025-01-01", "--time-step", "1h")
    assert code == 0 and "held back the newest 100 rows" in out, out
    config = load_policy(policy, environ={}).config
    store = EventStore.from_url(config.storage.url, SystemClock())
    drifted = toy_table(300, seed=3, concept="b")
    store.add_predictions(config.model, [PredictionRecord({"x1": r.x1, "x2": r.x2}, T0, prediction=0,
                                                          prediction_id=f"n{i}", model_version="1")
                                         for i, r in enumerate(drifted.itertuples())])
    store.add_labels(config.model, [LabelRecord(f"n{i}", int(y)) for i, y in enumerate(drifted.y)])
    code, out = _run("retrain", "--config", str(policy), "--strategy", "finetune")
    assert code == 0 and "v2 is champion (previous v1)" in out, out
    code, out = _run("report", "drift", "--config", str(policy), "--output", str(tmp_path / "drift.html"))
    assert code == 0 and "Traceback" not in out, out
    code, out = _run("rollback", "--config", str(policy))
    assert code == 0, out
    code, out = _run("promote", "--config", str(policy), "--version", "2")
    assert code == 0, out

    rest = Rest(server)
    name = config.registered_model
    # Aliases, as on the registered model's page.
    aliases = {a["alias"]: a["version"] for a in rest.get("registered-models/get", name=name)
               ["registered_model"].get("aliases", [])}
    assert aliases == {"champion": "2", "previous": "1"}

    # A handful of short, filterable tags per version; no JSON, nothing truncated.
    v2 = rest.get("model-versions/get", name=name, version="2")["model_version"]
    tags = {k.removeprefix("driftpilot."): v for k, v in _kv(v2.get("tags")).items() if k.startswith("driftpilot.")}
    assert set(tags) == SUMMARY_TAGS
    assert all(len(v) <= 40 and not v.startswith(("{", "[")) for v in tags.values()), tags
    assert (tags["strategy"], tags["parent_version"], tags["chain_depth"]) == ("finetune", "1", "1")
    v1_tags = _kv(rest.get("model-versions/get", name=name, version="1")["model_version"].get("tags"))
    assert v1_tags["driftpilot.window"] == "2025-01-01 00:00 → 2025-01-10 08:00"  # event time: 225 hourly rows
    assert "champion v1 at the time" in v2["description"]

    # The full record is an artifact of the training run, and reads back exactly.
    registry = open_registry(config, SystemClock())
    record = LineageRecord.from_json(rest.artifact(v2["run_id"], "driftpilot-lineage.json").decode())
    assert record == registry.get(name, "2").record and record.strategy == "finetune"

    # Every experiment opens as a machine-learning experiment; training, comparisons and decisions apart.
    experiments = {}
    for suffix in ("", "/comparisons", "/decisions"):
        experiment = rest.get("experiments/get-by-name", experiment_name=config.experiment + suffix)["experiment"]
        assert _kv(experiment.get("tags"))["mlflow.experimentKind"] == "custom_model_development"
        experiments[suffix] = experiment["experiment_id"]
    training = rest.runs(experiments[""], f"tags.`driftpilot.registered_model` = '{name}'")
    assert [r["info"]["run_name"] for r in training] == ["v1-bootstrap", "v2-finetune"]
    # Each version's own holdout, named so: these rows differ between versions (the fair pair is a comparison).
    assert all(set(_metrics(r)) == {"holdout.accuracy", "holdout.f1", "holdout.roc_auc", "holdout.log_loss"}
               for r in training)
    assert all({"strategy", "estimator", "estimator.alpha"} <= set(_kv(r["data"].get("params"))) for r in training)

    # The comparison: both versions under the same metric keys, on one holdout fingerprint, linked from v2.
    comparisons = rest.runs(experiments["/comparisons"],
                            f"tags.`driftpilot.kind` = 'comparison' and tags.`driftpilot.registered_model` = '{name}'")
    gate = [c for c in comparisons if _kv(c["data"]["params"]).get("verdict") == "promote"
            and _kv(c["data"]["params"])["challenger_version"] == "2"]
    assert len(gate) == 2  # the retrain's gate verdict, and the gate again for `promote --version 2`
    parent = gate[0]
    params, metrics = _kv(parent["data"]["params"]), _metrics(parent)
    assert params["champion_version"] == "1" and int(params["holdout_rows"]) >= 50
    assert metrics["delta.accuracy"] == pytest.approx(metrics["challenger.accuracy"] - metrics["champion.accuracy"])
    assert metrics["challenger.accuracy"] > metrics["champion.accuracy"]
    children = rest.runs(experiments["/comparisons"], f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'")
    by_version = {_kv(c["data"]["params"])["version"]: c for c in children}
    assert set(by_version) == {"1", "2"}
    assert {_kv(c["data"]["params"])["holdout_fingerprint"] for c in children} == {params["holdout_fingerprint"]}
    assert set(_metrics(by_version["1"])) == set(_metrics(by_version["2"])) >= {"accuracy"}
    assert _metrics(by_version["1"])["accuracy"] == metrics["champion.accuracy"]
    assert _metrics(by_version["2"])["accuracy"] == metrics["challenger.accuracy"]
    assert f"/runs/{parent['info']['run_id']}?workflowType=machine_learning)" in v2["description"]

    # The alias history: one decision run per promote / rollback, oldest first; it matches `driftpilot lineage`.
    events = rest.runs(experiments["/decisions"],
                       f"tags.`driftpilot.kind` = 'alias_change' and tags.`driftpilot.registered_model` = '{name}'")
    moves = [(_kv(e["data"]["params"])["action"], _kv(e["data"]["params"])["version"],
              _kv(e["data"]["params"])["after"]) for e in events]
    assert moves == [("promote", "1", "champion=v1"), ("promote", "2", "champion=v2, previous=v1"),
                     ("rollback", "1", "champion=v1"), ("promote", "2", "champion=v2, previous=v1")]
    code, out = _run("lineage", "--config", str(policy), "--json")
    history = json.loads(out)["alias_history"]
    assert [(h["action"], h["version"]) for h in history] == [(a, v) for a, v, _ in moves]
    assert all(h["decision_id"] for h in history)

    # The drift check: a finished decision run with the champion it judged.
    [check] = rest.runs(experiments["/decisions"],
                        f"tags.`driftpilot.kind` = 'decision' and tags.`driftpilot.registered_model` = '{name}'")
    assert check["info"]["status"] == "FINISHED" and _kv(check["data"]["tags"])["driftpilot.champion"] == "2"
    assert {"drift.x1", "drift.x2", "drift_share"} <= set(_metrics(check))  # color: no current values, untested
