"""Where a policy's MLflow artifacts go: a relative folder is a local store's, never a tracking server's."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.actions.model_registry import registry_settings
from controller.policy_loader import load_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example-classification.yaml"


def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tracking: str, artifacts: str | None = None):
    monkeypatch.chdir(tmp_path)  # the relative artifact folder is made (and resolved) here
    loaded = load_policy(EXAMPLE, environ={"MLFLOW_TRACKING_URI": tracking})
    policy = loaded.config
    if artifacts is not None:  # the policy is frozen: a copy with the folder replaced
        policy = policy.model_copy(update={"mlflow": policy.mlflow.model_copy(
            update={"artifact_location": artifacts})})
    return registry_settings(policy)


def test_a_local_store_keeps_the_relative_folder_made_absolute(monkeypatch, tmp_path) -> None:
    made = settings(monkeypatch, tmp_path, f"sqlite:///{tmp_path}/mlflow.db")
    assert made.artifact_location == str(tmp_path / ".driftpilot" / "mlartifacts")


def test_a_tracking_server_ignores_a_relative_folder(monkeypatch, tmp_path, caplog) -> None:
    caplog.set_level("INFO", logger="driftpilot")
    made = settings(monkeypatch, tmp_path, "http://127.0.0.1:5000")
    assert made.artifact_location is None  # the server's artifact store (mlflow-artifacts:/<id>)
    assert "relative folder" in caplog.text  # said at INFO: the rule is documented, a policy may rely on it
    assert not (tmp_path / ".driftpilot").exists()


def test_a_tracking_server_keeps_an_absolute_path_or_a_uri(monkeypatch, tmp_path) -> None:
    assert settings(monkeypatch, tmp_path, "http://127.0.0.1:5000", "s3://bucket/ml").artifact_location == \
        "s3://bucket/ml"
    shared = tmp_path / "nfs" / "artifacts"
    assert settings(monkeypatch, tmp_path, "https://mlflow.example", str(shared)).artifact_location == str(shared)
