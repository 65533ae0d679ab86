"""The controller's view of the MLflow registry: open it from a policy, and serve its champion."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from controller.clock import Clock
from controller.config import PolicyConfig
from lineage import ModelRegistry, RegistrySettings

log = logging.getLogger("driftpilot")


def registry_settings(policy: PolicyConfig) -> RegistrySettings:
    """RegistrySettings from the policy's ``mlflow:`` section; relative paths are made absolute (MLflow needs it)."""
    config = policy.mlflow
    tracking_uri = _absolute_sqlite(config.tracking_uri)
    artifacts = config.artifact_location
    if artifacts is not None and _is_server(tracking_uri) and "://" not in artifacts and not Path(artifacts).is_absolute():
        # A relative folder is a different folder on every host: with a tracking server the first host to create the
        # experiment would record its own local path and no other host could load the models. The server chooses.
        log.info("mlflow.artifact_location %r is a relative folder and MLflow is a tracking server (%s): ignored, "
                    "the server's artifact store is used (set an absolute shared path or a URI to choose one)",
                    artifacts, tracking_uri)
        artifacts = None
    if artifacts is not None and "://" not in artifacts:
        path = Path(artifacts).resolve()
        path.mkdir(parents=True, exist_ok=True)
        artifacts = str(path)
    return RegistrySettings(
        tracking_uri=tracking_uri,
        registry_uri=_absolute_sqlite(config.registry_uri) if config.registry_uri else None,
        experiment=policy.experiment,
        artifact_location=artifacts,
    )


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def open_registry(policy: PolicyConfig, clock: Clock) -> ModelRegistry:
    return ModelRegistry.connect(registry_settings(policy), clock=clock)


class RegistryChampionSource:
    """Adapts :class:`lineage.ModelRegistry` to the serving layer's ``ChampionSource``."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def champion_version(self, name: str) -> str | None:
        return self.registry.champion_version(name)

    def load_version(self, name: str, version: str) -> Any:
        return self.registry.load(name, version=version).model


def _absolute_sqlite(uri: str) -> str:
    if not uri.startswith("sqlite:"):
        return uri
    url = make_url(uri)
    if not url.database or url.database == ":memory:":
        return uri
    path = Path(url.database).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"
