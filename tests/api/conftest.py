"""Fixtures of the API tests: the app in-process (TestClient) over one model's policy on real stores (SQLite and
the real PostgreSQL), with a small request limit, with a bearer token, next to an unreachable store, and serving a
real champion on /predict.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from controller.api.app import ModelRuntime, create_app
from controller.api.ingest import Ingestor
from controller.api.service import NoRegistry, build_runtimes
from controller.api.serving import ChampionHolder
from controller.clock import ManualClock
from controller.policy_loader import load_policy
from controller.store import EventStore
from controller.store.db import create_store_engine
from tests.api.api_kit import DEAD_POSTGRES, TOKEN, Api, ServedApi, open_api, open_served_api, write_policy


@pytest.fixture
def api(store_url: str, model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[Api]:
    """The API over one classification model, on SQLite and on PostgreSQL."""
    yield from open_api(tmp_path, store_url, model_name, clock)


@pytest.fixture
def sqlite_api(model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[Api]:
    """The same on SQLite only: for the request-shape checks that never reach the database."""
    yield from open_api(tmp_path, f"sqlite:///{tmp_path / 'events.db'}", model_name, clock)


@pytest.fixture
def small_api(model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[Api]:
    yield from open_api(tmp_path, f"sqlite:///{tmp_path / 'small.db'}", model_name, clock,
                        api={"max_batch_items": 3, "max_body_bytes": 2048})


@pytest.fixture
def token_api(model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[Api]:
    yield from open_api(tmp_path, f"sqlite:///{tmp_path / 'auth.db'}", model_name, clock,
                        api={"token_env": "DP_TOKEN"}, environ={"DP_TOKEN": TOKEN})


@pytest.fixture
def down_api(tmp_path: Path, clock: ManualClock) -> Iterator[Api]:
    """Two models: ``up`` on a good SQLite store, ``down`` on a PostgreSQL URL where nothing listens."""
    good_path = write_policy(tmp_path, "up", f"sqlite:///{tmp_path / 'good.db'}")
    runtimes = build_runtimes([load_policy(good_path, environ={})], clock, environ={})
    bad = load_policy(write_policy(tmp_path, "down", DEAD_POSTGRES), environ={})
    # Not from_url: that would migrate, i.e. connect, and fail before the API exists.
    dead_store = EventStore(create_store_engine(DEAD_POSTGRES), clock)
    runtimes["down"] = ModelRuntime(policy=bad, store=dead_store, ingestor=Ingestor(bad.config, dead_store, clock),
                                    champion=ChampionHolder("down", NoRegistry(), {}))
    try:
        yield Api(TestClient(create_app(runtimes, clock)), runtimes["up"].store, clock, "down", {})
    finally:
        runtimes["up"].store.dispose()
        dead_store.dispose()


@pytest.fixture
def served(store_url: str, model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[ServedApi]:
    """/predict with a real champion (LogisticRegression on toy rows) on SQLite and on PostgreSQL."""
    served = open_served_api(tmp_path, store_url, model_name, clock)
    try:
        yield served
    finally:
        served.store.dispose()
