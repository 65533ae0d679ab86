"""The API in-process (TestClient), shared by the tests of tests/api/ and the feature-serving tests.

:class:`Api` and :func:`open_api`: the ingestion API over a classification policy of five features (UP/DOWN) on a real
store, with the helpers its tests write requests with (:func:`item`, :func:`raw_json`, :func:`problems`).

:class:`ServedApi` and :func:`open_served_api`: an app serving a real champion without MLflow, for the tests of
/predict under hostile input and the fuzz suite. The champion is a real scikit-learn model trained by the stateless
trainer on a window read through the store's own accessor; only the registry is replaced, by an injected
:class:`FixedChampion` (the ``ChampionSource`` seam).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from controller.actions.training import training_context
from controller.api.app import ModelRuntime, create_app
from controller.api.service import build_runtimes
from controller.clock import ManualClock
from controller.config import LoadedPolicy
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from tests.policy_kit import write_policy_file
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
    text = SERVED_POLICY.format(model=model, url=json.dumps(url))
    if api:
        text += f"api: {json.dumps(dict(api))}\n"
    path = write_policy_file(tmp_path, model, text)
    loaded = load_policy(path, environ={})
    holder: dict[str, FixedChampion] = {}
    runtimes = build_runtimes([loaded], clock, environ=dict(environ or {}),
                              champion_sources=lambda _: holder.setdefault("source", FixedChampion(None)))
    runtime = runtimes[model]
    holder["source"].model = champion if champion is not None else train_champion(loaded, runtime.store, clock)
    runtime.champion.refresh()
    return ServedApi(TestClient(create_app(runtimes, clock)), runtime, clock, model)


# ------------------------------------------------------------------------------ the ingestion API (tests/api/)


FEATURES = ["x", "c", "b", "opt", "z"]
DECLARED = ", ".join(FEATURES)
ID_RULE = "1-128 characters: letters, digits and . _ : - (not starting with a symbol)"
TOKEN = "s3cret-token"
# Nothing listens on port 1 of the loopback: connecting is refused at once, no timeout to wait for.
DEAD_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def policy_text(model: str, url: str, *, task: str = "classification", api: dict | None = None) -> str:
    if task == "classification":
        head = f"model: {model}\ntask: classification\ntarget: {{name: y, classes: [UP, DOWN]}}\n"
        features = ("features:\n  x: numeric\n  c: categorical\n  b: boolean\n"
                    "  opt: {type: numeric, required: false}\n  z: {type: numeric, allow_nan: true}\n")
    else:
        head = f"model: {model}\ntask: regression\ntarget: price\n"
        features = "features:\n  area: numeric\n"
    text = head + features + f"storage: {{url: {json.dumps(url)}}}\n"
    if api:
        text += f"api: {json.dumps(api)}\n"
    return text


def write_policy(tmp_path: Path, model: str, url: str, **kwargs: Any) -> Path:
    return write_policy_file(tmp_path, model, policy_text(model, url, **kwargs))


def item(pid: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid prediction item; ``overrides`` replace top-level keys, ``features`` entries merge."""
    features = {"x": 1.5, "c": "red", "b": True, "z": 0.0}
    features.update(overrides.pop("features", {}))
    out: dict[str, Any] = {"features": features, "prediction": "UP"}
    if pid is not None:
        out["prediction_id"] = pid
    out.update(overrides)
    return out


@dataclass
class Api:
    client: TestClient
    store: EventStore
    clock: ManualClock
    model: str
    headers: dict[str, str]
    policy_path: Path | None = None

    def predict(self, *items: dict, model: str | None = None, **kwargs: Any):
        return self.client.post(f"/v1/models/{model or self.model}/predictions", json={"items": list(items)},
                                headers=kwargs.pop("headers", self.headers), **kwargs)

    def label(self, *items: dict, model: str | None = None, **kwargs: Any):
        return self.client.post(f"/v1/models/{model or self.model}/labels", json={"items": list(items)},
                                headers=kwargs.pop("headers", self.headers), **kwargs)

    def raw(self, path: str, body: bytes | Any, **headers: str):
        return self.client.post(f"/v1/models/{self.model}/{path}", content=body,
                                headers={"content-type": "application/json", **self.headers, **headers})

    def stored(self) -> int:
        return self.store.count_predictions(self.model)

    def window_ids(self) -> list[str]:
        return list(self.store.labeled_window(self.model, self.clock.now()).prediction_ids)

    def metrics(self) -> dict[tuple, float]:
        text = self.client.get("/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


def open_api(tmp_path: Path, url: str, model: str, clock: ManualClock, *, api: dict | None = None,
             environ: dict | None = None, headers: dict | None = None) -> Iterator[Api]:
    path = write_policy(tmp_path, model, url, api=api)
    runtimes = build_runtimes([load_policy(path, environ={})], clock, environ=environ or {})
    store = runtimes[model].store
    try:
        yield Api(TestClient(create_app(runtimes, clock)), store, clock, model, headers or {}, path)
    finally:
        store.dispose()


def problems(response) -> list[dict]:
    return response.json()["problems"]


def raw_json(items: list[dict], literals: dict[str, str]) -> bytes:
    """A batch body where each placeholder string value is replaced by a raw JSON literal such as ``NaN``."""
    text = json.dumps({"items": items})
    for placeholder, literal in literals.items():
        text = text.replace(json.dumps(placeholder), literal)
    return text.encode()


def big_int_body(path: str, digits: int = 400) -> bytes:
    """A body whose x is a JSON integer of ``digits`` digits (json.dumps of a Python int that size is refused)."""
    big = "1" + "0" * (digits - 1)
    if path == "predict":
        return f'{{"features": {{"x1": {big}, "x2": 1.0}}}}'.encode()
    return raw_json([item("p-0"), item("p-1", features={"x": "@BIG"})], {"@BIG": big})
