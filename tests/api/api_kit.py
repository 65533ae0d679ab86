"""An API app serving a real champion without MLflow: for the tests of /predict under hostile input and the fuzz suite.

The champion is a real scikit-learn model trained by the stateless trainer on a window read through the store's own
accessor; only the registry is replaced, by an injected :class:`FixedChampion` (the ``ChampionSource`` seam).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from controller.actions.training import training_context
from controller.api.app import ModelRuntime, create_app
from controller.api.service import build_runtimes
from controller.clock import ManualClock
from controller.config import LoadedPolicy, load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from trainers import NO_PARENT, get_trainer

SERVED_POLICY = """\
model: {model}
task: classification
target: {{name: y, classes: [0, 1]}}
features:
  x1: numeric
  x2: numeric
  z: {{type: numeric, required: false, allow_nan: true}}
  color: {{type: categorical, required: false}}
storage: {{url: {url}}}
estimator: {{class: sklearn.linear_model.LogisticRegression}}
"""


class FixedChampion:
    """A ChampionSource holding one model as version "1" (what the MLflow registry would hand out)."""

    def __init__(self, model: Any, version: str = "1") -> None:
        self.model = model
        self.version = version

    def champion_version(self, name: str) -> str | None:
        return self.version

    def load_version(self, name: str, version: str) -> Any:
        return self.model


def toy_rows(n: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[int]]:
    """Seeded rows of the served policy; y = [x1 + 0.5 x2 > 0]."""
    rng = np.random.default_rng(seed)
    x1, x2, z = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    colors = rng.choice(["red", "blue"], size=n)
    rows = [{"x1": float(a), "x2": float(b), "z": float(c), "color": str(d)}
            for a, b, c, d in zip(x1, x2, z, colors, strict=True)]
    return rows, [int(v) for v in (x1 + 0.5 * x2 > 0)]


def train_champion(loaded: LoadedPolicy, store: EventStore, clock: ManualClock) -> Any:
    """Fit the policy's estimator on 200 toy rows stored under a model name of their own (so they never count as
    the served model's events), read back through ``labeled_window`` as every training does."""
    name = f"{loaded.config.model}-training"
    rows, labels = toy_rows(200)
    store.add_predictions(name, [PredictionRecord(features=row, prediction=0, prediction_id=f"t-{i}",
                                                  source="reference") for i, row in enumerate(rows)])
    store.add_labels(name, [LabelRecord(f"t-{i}", y) for i, y in enumerate(labels)])
    window = store.labeled_window(name, clock.now(), feature_types=loaded.config.feature_types)
    return get_trainer("stateless").train(window, NO_PARENT, training_context(loaded.config, "api_kit")).model


@dataclass
class ServedApi:
    client: TestClient
    runtime: ModelRuntime
    clock: ManualClock
    model: str

    @property
    def store(self) -> EventStore:
        return self.runtime.store

    def post(self, path: str, body: Any, **headers: str):
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(f"/v1/models/{self.model}/{path}", content=content,
                                headers={"content-type": "application/json", **headers})


def open_served_api(tmp_path: Path, url: str, model: str, clock: ManualClock, *, champion: Any = None,
                    api: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> ServedApi:
    """The app over one model of the served policy, its champion loaded (trained here unless ``champion`` is given).
    The caller disposes ``.store``."""
    path = tmp_path / f"{model}.yaml"
    text = SERVED_POLICY.format(model=model, url=json.dumps(url))
    if api:
        text += f"api: {json.dumps(dict(api))}\n"
    path.write_text(text)
    loaded = load_policy(path, environ={})
    holder: dict[str, FixedChampion] = {}
    runtimes = build_runtimes([loaded], clock, environ=dict(environ or {}),
                              champion_sources=lambda _: holder.setdefault("source", FixedChampion(None)))
    runtime = runtimes[model]
    holder["source"].model = champion if champion is not None else train_champion(loaded, runtime.store, clock)
    runtime.champion.refresh()
    return ServedApi(TestClient(create_app(runtimes, clock)), runtime, clock, model)
