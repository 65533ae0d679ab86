"""Fixtures for the lineage tests: a real sqlite MLflow store, a real `mlflow server` (``mlflow_server_url`` of
tests/conftest.py), a stepping clock.

No mocks: the registry talks to real MLflow stores. The only extra is :class:`AliasWatchingClient`, a real
MlflowClient that re-reads the aliases after every alias call so tests can see every intermediate state.
"""

from __future__ import annotations

import itertools
import re

import pytest

from lineage import ModelRegistry, RegistrySettings
from tests.lineage.lineage_helpers import AliasWatchingClient, StepClock

# ------------------------------------------------------------------------------------------------ backends


@pytest.fixture(scope="session")
def sqlite_settings(tmp_path_factory) -> RegistrySettings:
    root = tmp_path_factory.mktemp("mlflow-sqlite")
    return RegistrySettings(
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        experiment="lineage-tests",
        artifact_location=str(root / "artifacts"),
    )


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.mlflow_server)])
def backend_settings(request, sqlite_settings) -> RegistrySettings:
    if request.param == "sqlite":
        return sqlite_settings
    url = request.getfixturevalue("mlflow_server_url")
    return RegistrySettings(tracking_uri=url, experiment="lineage-tests")


@pytest.fixture
def registry(backend_settings) -> ModelRegistry:
    """A registry on each backend, with a stepping clock and an alias-watching client."""
    return ModelRegistry.connect(
        backend_settings, clock=StepClock(), client_class=AliasWatchingClient
    )


@pytest.fixture
def sqlite_registry(sqlite_settings) -> ModelRegistry:
    return ModelRegistry.connect(
        sqlite_settings, clock=StepClock(), client_class=AliasWatchingClient
    )


_names = itertools.count(1)


@pytest.fixture
def model_name(request) -> str:
    """A registered-model name unique to the test (all tests share one store per backend)."""
    return f"{re.sub(r'[^A-Za-z0-9]+', '-', request.node.name).strip('-')[:60]}-{next(_names)}"
