"""`driftpilot run` end to end through the HTTP API: a drifting stream of champion predictions (/predict) and their
late labels (/labels) -> the daemon detects the concept drift, retrains, the gate promotes -> aliases, the lineage
record, the decision log as `driftpilot decisions --json` shows it, and /predict serving the new champion.
A real daemon subprocess, a real MLflow registry on SQLite, real models."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.loop.daemon_kit import DRIFTPILOT, Daemon, make_toy, shared_mlflow_dir
from tests.toy import toy_table


@pytest.mark.slow
def test_a_drifting_stream_through_the_api_is_detected_retrained_gated_and_promoted(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, model_name: str) -> None:
    # v1 learned concept "a"; the rule: concept drift -> strategy auto
    toy = make_toy(tmp_path, model_name, mlflow_dir=shared_mlflow_dir(tmp_path_factory))
    daemon = Daemon(tmp_path, [toy.path], api=True)
    try:
        daemon.wait_http("/readyz")
        client = httpx.Client(base_url=daemon.url, timeout=30)

        def predict(batch: pd.DataFrame) -> list[tuple[str, int]]:
            rows = [{"features": {"x1": r.x1, "x2": r.x2, "color": r.color}} for r in batch.itertuples()]
            response = client.post(f"/v1/models/{model_name}/predict", json={"items": rows})
            assert response.status_code == 200, response.text
            ids = [p["prediction_id"] for p in response.json()["predictions"]]
            return list(zip(ids, batch.y.astype(int).tolist(), strict=True))

        def label(pairs: list[tuple[str, int]]) -> None:
            response = client.post(f"/v1/models/{model_name}/labels",
                                   json={"items": [{"prediction_id": pid, "label": y} for pid, y in pairs]})
            assert response.status_code == 200 and response.json()["inserted"] == len(pairs), response.text

        # The champion serves concept "a", then the world changes abruptly (concept "b"); each batch's labels
        # arrive after the next batch was served.
        stream = pd.concat([toy_table(300, seed=5), toy_table(600, seed=6, concept="b")], ignore_index=True)
        late: list[tuple[str, int]] = []
        for start in range(0, len(stream), 100):
            pairs = predict(stream.iloc[start:start + 100])
            label(late)
            late = pairs
        label(late)

        decision = daemon.wait_until(lambda: [d for d in toy.decisions(("retrain",)) if not d.in_flight],
                                     "the retrain decision to end", 120)[0]
        assert (decision.status, decision.verdict, decision.trigger, decision.rule, decision.strategy) == \
            ("done", "promote", "concept_drift", "drift", "stateless"), decision.error
        assert decision.evidence["strategy_choice"]["window"]["kind"] == "since_drift"
        new = decision.challenger_version
        verdict = decision.evidence["gate"]["verdicts"][new]
        assert verdict["verdict"] == "promote" and verdict["p_value"] < 0.05
        assert verdict["challenger_value"] > verdict["champion_value"] + 0.2
        assert daemon.owns(decision.owner)

        assert toy.aliases() == {"champion": new, "previous": "1"}
        record = toy.registry.get(toy.loaded.config.registered_model, new).record
        assert (record.parent_version, record.strategy, record.trigger, record.decision_id) == \
            ("1", "stateless", "concept_drift", decision.decision_id)

        # /predict notices the alias move and serves the new champion.
        def serves_new() -> bool:
            response = client.post(f"/v1/models/{model_name}/predict",
                                   json={"features": {"x1": 1.0, "x2": 2.0, "color": "red"}})
            return response.status_code == 200 and response.json()["model_version"] == new

        daemon.wait_until(serves_new, f"/predict serving v{new}", 30)

        # The decision as a person reads it (while the daemon runs).
        shown = subprocess.run([str(DRIFTPILOT), "decisions", "--config", str(toy.path), "--json"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60, check=False)
        assert shown.returncode == 0, shown.stderr
        lines = [json.loads(line) for line in shown.stdout.splitlines()]
        mine = next(line for line in lines if line["decision_id"] == decision.decision_id)
        assert {k: mine[k] for k in ("action", "status", "verdict", "trigger", "champion_version",
                                     "challenger_version")} == \
            {"action": "retrain", "status": "done", "verdict": "promote", "trigger": "concept_drift",
             "champion_version": "1", "challenger_version": new}
        assert mine["evidence"]["gate"]["verdicts"][new]["p_value"] == verdict["p_value"]
        assert not [line for line in lines if line["status"] == "failed"]

        code, _ = daemon.terminate()
        assert code == 0, daemon.output()
    finally:
        daemon.cleanup()
