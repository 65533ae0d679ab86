"""Fixtures of the feature-serving tests: the real Redis on 127.0.0.1:6379 under a key prefix per test (removed after
the test), policies with batch and stream views, and an API serving a real champion over them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from controller.api.app import ModelRuntime, create_app
from controller.api.service import build_runtimes
from controller.clock import ManualClock
from controller.config import LoadedPolicy
from controller.features.redis_adapter import RedisEventStream
from controller.features.serving import open_event_stream
from controller.policy_loader import load_policy
from tests.api.api_kit import FixedChampion
from tests.policy_kit import write_policy_file

REDIS_URL = "redis://127.0.0.1:6379/0"

POLICY = """\
model: {model}
task: classification
target: {{name: y, classes: [0, 1]}}
features:
  amount: numeric
  avg_amount_30d: numeric
  segment: categorical
  txn_count_10m: numeric
  amount_sum_1h: numeric
storage: {{url: "sqlite:///{tmp}/events.db"}}
estimator: {{class: sklearn.linear_model.LogisticRegression}}
feature_views:
  online_store: {{url: "{store_url}", prefix: "{prefix}"}}
  events: {{url: "{redis}", stream: "{prefix}events", batch_size: {batch_size}, checkpoint_every: {checkpoint_every},
            block_ms: 50}}
  views:
    - name: user_profile
      kind: batch
      entity: user_id
      features: [avg_amount_30d, segment]
      source: {{path: "{tmp}/profile.csv", timestamp_column: computed_at}}
      refresh: {{every: 1h}}
      max_age: 1d
      on_missing: {batch_missing}
      on_stale: {batch_stale}
      defaults: {{avg_amount_30d: 50.0, segment: unknown}}
    - name: user_activity
      kind: stream
      entity: user_id
      aggregates:
        - {{name: txn_count_10m, agg: count, window: 10m}}
        - {{name: amount_sum_1h, agg: sum, of: amount, window: 1h}}
      max_age: 5m
      on_stale: {stream_stale}
      defaults: {{txn_count_10m: 0, amount_sum_1h: 0.0}}
"""


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test; every key under it is deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis at 127.0.0.1:6379 is not reachable ({exc}); the feature tests need it. Start it with: "
                    "redis-server --daemonize yes")
    name = f"dptest:{uuid.uuid4().hex[:10]}:"
    yield name
    keys = list(client.scan_iter(match=name + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def write_policy(tmp_path: Path, prefix: str, *, model: str = "fraud", store_url: str | None = None,
                 batch_missing: str = "reject", batch_stale: str = "reject", stream_stale: str = "reject",
                 batch_size: int = 1000, checkpoint_every: int = 50_000) -> Path:
    return write_policy_file(tmp_path, model, POLICY.format(
        model=model, tmp=tmp_path, prefix=prefix, redis=REDIS_URL, store_url=store_url or REDIS_URL,
        batch_missing=batch_missing, batch_stale=batch_stale, stream_stale=stream_stale, batch_size=batch_size,
        checkpoint_every=checkpoint_every))


def write_profile(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "profile.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def train_model(seed: int = 0) -> Any:
    """A real LogisticRegression pipeline on the five features (trained through the trainers on a typed frame)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(seed)
    n = 300
    frame = pd.DataFrame({"amount": rng.gamma(2, 30, n), "avg_amount_30d": rng.gamma(2, 30, n),
                          "segment": rng.choice(["gold", "basic"], n), "txn_count_10m": rng.integers(0, 8, n),
                          "amount_sum_1h": rng.gamma(2, 100, n)})
    y = (frame["amount"] > frame["avg_amount_30d"] * 1.5).astype(int) | (frame["txn_count_10m"] > 5).astype(int)
    numeric = ["amount", "avg_amount_30d", "txn_count_10m", "amount_sum_1h"]
    pre = ColumnTransformer([("num", "passthrough", numeric),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["segment"])])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)


@dataclass
class FeatureApi:
    client: TestClient
    runtime: ModelRuntime
    clock: ManualClock
    loaded: LoadedPolicy

    def predict(self, body: Any):
        return self.client.post(f"/v1/models/{self.loaded.config.model}/predict", json=body)

    def events(self, items: list[dict[str, Any]]):
        return self.client.post("/v1/events", content=json.dumps({"items": items}).encode(),
                                headers={"content-type": "application/json"})


def open_api(policy_path: Path, clock: ManualClock, champion: Any) -> FeatureApi:
    loaded = load_policy(policy_path, environ={})
    runtimes = build_runtimes([loaded], clock, environ={}, champion_sources=lambda _: FixedChampion(champion))
    runtime = runtimes[loaded.config.model]
    runtime.champion.refresh()
    return FeatureApi(TestClient(create_app(runtimes, clock)), runtime, clock, loaded)


def event_stream(loaded: LoadedPolicy) -> RedisEventStream:
    return open_event_stream(loaded.config)


@pytest.fixture(scope="session")
def champion() -> Any:
    return train_model()
