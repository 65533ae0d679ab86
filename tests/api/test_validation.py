"""The ingestion HTTP API, driven in-process (TestClient) over real stores: SQLite files and the real PostgreSQL.

Every refused request is also checked through the store: nothing was stored, no label changed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from controller.api.app import ModelRuntime, create_app
from controller.api.ingest import Ingestor
from controller.api.service import NoRegistry, build_runtimes
from controller.api.serving import ChampionHolder
from controller.clock import ManualClock
from controller.config import load_policy
from controller.errors import ConfigError, StoreUnavailable
from controller.store import EventStore, LabelChange, LabelRecord, PredictionRecord
from controller.store.db import create_store_engine
from controller.store.tables import labels as labels_table
from tests.conftest import T0
from tests.api.api_kit import ServedApi, open_served_api, toy_rows

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
    path = tmp_path / f"{model}.yaml"
    path.write_text(policy_text(model, url, **kwargs))
    return path


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


@pytest.fixture
def api(store_url: str, model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[Api]:
    """The API over one classification model, on SQLite and on PostgreSQL."""
    yield from open_api(tmp_path, store_url, model_name, clock)


@pytest.fixture
def sqlite_api(model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[Api]:
    """The same on SQLite only: for the request-shape checks that never reach the database."""
    yield from open_api(tmp_path, f"sqlite:///{tmp_path / 'events.db'}", model_name, clock)


def problems(response) -> list[dict]:
    return response.json()["problems"]


# ------------------------------------------------------------------------------------------------ happy path


def test_predictions_keep_client_ids_generate_missing_ones_and_default_event_time(api: Api) -> None:
    made = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    response = api.predict(item("p-1", event_time=made.isoformat(), model_version="3"),
                           item(features={"opt": 7}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert body["prediction_ids"][0] == "p-1"
    generated = body["prediction_ids"][1]
    assert len(generated) == 32 and generated != "p-1"
    assert api.stored() == 2

    first = api.store.get_prediction(api.model, "p-1")
    assert first["event_time"] == made
    assert first["received_at"] == T0
    assert first["model_version"] == "3"
    assert first["features"] == {"x": 1.5, "c": "red", "b": True, "z": 0.0}
    second = api.store.get_prediction(api.model, generated)
    assert second["event_time"] == api.clock.now() == T0  # defaulted to the server clock
    assert second["features"]["opt"] == 7


def test_naive_event_time_is_taken_as_utc(sqlite_api: Api) -> None:
    assert sqlite_api.predict(item("p-1", event_time="2025-06-01T12:00:00")).status_code == 200
    assert sqlite_api.store.get_prediction(sqlite_api.model, "p-1")["event_time"] == datetime(
        2025, 6, 1, 12, tzinfo=UTC)


def test_labels_join_their_predictions(api: Api) -> None:
    api.predict(item("p-1"), item("p-2"))
    api.clock.advance(seconds=5)
    response = api.label({"prediction_id": "p-1", "label": "DOWN"})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "inserted": 1, "duplicates": 0, "overwritten": 0, "unmatched": 0}
    window = api.store.labeled_window(api.model, api.clock.now())
    assert list(window.prediction_ids) == ["p-1"]
    assert list(window.labels) == ["DOWN"]
    assert list(window.predictions) == ["UP"]


def test_a_label_before_its_prediction_joins_when_the_prediction_arrives(api: Api) -> None:
    response = api.label({"prediction_id": "late-1", "label": "UP"})
    assert response.json()["unmatched"] == 1
    assert api.window_ids() == []
    api.clock.advance(seconds=1)
    assert api.predict(item("late-1")).status_code == 200
    assert api.window_ids() == ["late-1"]


def test_stats_count_coverage_pending_and_label_delay_percentiles(api: Api) -> None:
    api.predict(*(item(f"p-{i}") for i in range(4)))  # event_time = T0 for all four
    for pid, wait in (("p-0", 10), ("p-1", 20), ("p-2", 30)):
        api.clock.advance(seconds=wait)
        api.label({"prediction_id": pid, "label": "UP"})
    api.label({"prediction_id": "never-predicted", "label": "DOWN"})
    stats = api.client.get(f"/v1/models/{api.model}/stats").json()
    # Delays 10, 30, 60 s; numpy's linear percentiles: p90 = 30 + 0.8 * 30, p99 = 30 + 0.98 * 30.
    assert stats == {
        "model": api.model,
        "as_of": (T0 + timedelta(seconds=60)).isoformat(),
        "predictions": 4,
        "by_source": {"logged": 4},
        "reference_rows": 0,
        "labeled": 3,
        "pending": 1,
        "unmatched_labels": 1,
        "coverage": 0.75,
        "label_delay_seconds": {"p50": 30.0, "p90": pytest.approx(54.0), "p99": pytest.approx(59.4)},
    }


def test_stats_count_bootstrap_reference_rows_apart_from_served_and_logged_predictions(api: Api) -> None:
    """Issue 10 item 8: reference rows are labeled training data, not traffic; counting them made coverage ~100%."""
    api.store.add_predictions(api.model, [
        PredictionRecord(features={"x": 1.0, "c": "red", "b": True}, prediction_id=f"ref-{i}", source="reference")
        for i in range(5)])
    api.store.add_labels(api.model, [LabelRecord(f"ref-{i}", "UP") for i in range(5)])  # labeled at once: delay 0
    api.store.add_predictions(api.model, [
        PredictionRecord(features={"x": 1.0, "c": "red", "b": True}, prediction_id="s-1", source="served",
                         prediction="UP", model_version="1")])
    api.predict(item("p-1"), item("p-2"))
    api.clock.advance(seconds=40)
    api.label({"prediction_id": "p-1", "label": "DOWN"}, {"prediction_id": "not-yet", "label": "UP"})
    stats = api.client.get(f"/v1/models/{api.model}/stats").json()
    assert {k: stats[k] for k in ("predictions", "by_source", "reference_rows", "labeled", "pending",
                                  "unmatched_labels", "coverage")} == {
        "predictions": 3, "by_source": {"logged": 2, "served": 1}, "reference_rows": 5, "labeled": 1, "pending": 2,
        "unmatched_labels": 1, "coverage": pytest.approx(1 / 3)}
    # The delays are those of traffic only (the reference rows' zero delays would drag p50 to 0).
    assert stats["label_delay_seconds"] == {"p50": 40.0, "p90": 40.0, "p99": 40.0}


def test_stats_of_an_empty_model_have_no_coverage_and_no_delays(sqlite_api: Api) -> None:
    stats = sqlite_api.client.get(f"/v1/models/{sqlite_api.model}/stats").json()
    assert (stats["predictions"], stats["coverage"]) == (0, None)
    assert stats["label_delay_seconds"] == {"p50": None, "p90": None, "p99": None}


# ------------------------------------------------------------------------------------------------ bad input -> 422


BAD_ITEMS = {
    "missing required feature": (
        {"features": {"c": "red", "b": True, "z": 0.0}, "prediction": "UP"},
        [(0, "features.x", "required feature is missing (or null)")]),
    "required feature sent as null": (
        item(features={"x": None}),
        [(0, "features.x", "required feature is missing (or null)")]),
    "unknown feature": (
        item(features={"colour": "red"}),
        [(0, "features.colour", f"unknown feature; the policy declares: {DECLARED}")]),
    "numeric given a string": (
        item(features={"x": "1.5"}),
        [(0, "features.x", "expected a number, got a string '1.5'")]),
    "boolean given 1": (
        item(features={"b": 1}),
        [(0, "features.b", "expected true or false, got an integer 1")]),
    "categorical given a number": (
        item(features={"c": 3}),
        [(0, "features.c", "expected a string category, got an integer 3")]),
    "bad prediction id": (
        item("-starts with a symbol"),
        [(0, "prediction_id", f"bad id '-starts with a symbol'; expected {ID_RULE}")]),
    "prediction of an unknown class": (
        item(prediction="SIDEWAYS"),
        [(0, "prediction", "unknown class 'SIDEWAYS'; target.classes is ['UP', 'DOWN']")]),
}


@pytest.mark.parametrize("case", list(BAD_ITEMS))
def test_each_kind_of_bad_prediction_is_refused_with_its_exact_problem(sqlite_api: Api, case: str) -> None:
    bad, expected = BAD_ITEMS[case]
    response = sqlite_api.predict(bad)
    assert response.status_code == 422, response.text
    assert [(p["index"], p["field"], p["problem"]) for p in problems(response)] == expected
    assert sqlite_api.stored() == 0


NAN_PROBLEM = ("is not allowed; set allow_nan: true on the feature to accept NaN/inf, or send null for a missing "
               "optional value")


def raw_json(items: list[dict], literals: dict[str, str]) -> bytes:
    """A batch body where each placeholder string value is replaced by a raw JSON literal such as ``NaN``."""
    text = json.dumps({"items": items})
    for placeholder, literal in literals.items():
        text = text.replace(json.dumps(placeholder), literal)
    return text.encode()


@pytest.mark.parametrize("literal, shown", [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")])
def test_nan_and_infinity_in_a_numeric_feature_are_refused(sqlite_api: Api, literal: str, shown: str) -> None:
    # Python's JSON parser (and so the API) accepts these non-standard literals; the schema must catch them.
    body = raw_json([item("p-0"), item(features={"x": "@X"})], {"@X": literal})
    assert literal.encode() in body
    response = sqlite_api.raw("predictions", body)
    assert response.status_code == 422, response.text
    assert problems(response) == [{"index": 1, "field": "features.x", "problem": f"{shown} {NAN_PROBLEM}"}]
    assert sqlite_api.stored() == 0


def test_nan_and_infinity_are_stored_where_the_feature_allows_it(api: Api) -> None:
    literals = ["NaN", "Infinity", "-Infinity", "2.5"]
    body = raw_json([item(f"p-{i}", features={"z": f"@Z{i}"}) for i in range(4)],
                    {f"@Z{i}": literal for i, literal in enumerate(literals)})
    response = api.raw("predictions", body)
    assert response.status_code == 200, response.text
    assert api.raw("predictions", body).status_code == 200  # an identical resend is still a no-op, not a conflict
    api.label(*({"prediction_id": f"p-{i}", "label": "UP"} for i in range(4)))
    loaded = load_policy(api.policy_path, environ={})
    window = api.store.labeled_window(api.model, api.clock.now(), feature_types=loaded.config.feature_types)
    z = list(window.features["z"])
    assert np.isnan(z[0]) and z[1:] == [np.inf, -np.inf, 2.5]
    assert api.stored() == 4


def test_duplicate_id_in_one_batch_is_refused(sqlite_api: Api) -> None:
    response = sqlite_api.predict(item("p-1"), item("p-2"), item("p-1"))
    assert response.status_code == 422
    assert problems(response) == [
        {"index": 2, "field": "prediction_id", "problem": "'p-1' appears twice in this batch (first at item 0)"}]
    assert sqlite_api.stored() == 0


def test_one_bad_item_among_good_ones_stores_nothing(api: Api) -> None:
    good = [item(f"p-{i}") for i in range(50)]
    good[37] = item("p-37", features={"x": "oops"})
    response = api.predict(*good)
    assert response.status_code == 422
    assert [(p["index"], p["field"]) for p in problems(response)] == [(37, "features.x")]
    assert api.stored() == 0


def test_every_problem_of_a_batch_is_listed_at_once(sqlite_api: Api) -> None:
    response = sqlite_api.predict(item("ok-1"), item(features={"b": "yes"}), item("bad id", prediction=None))
    assert [(p["index"], p["field"]) for p in problems(response)] == [
        (1, "features.b"), (2, "prediction_id"), (2, "prediction")]


def test_labels_of_an_unknown_class_or_bad_id_are_refused(sqlite_api: Api) -> None:
    sqlite_api.predict(item("p-1"))
    response = sqlite_api.label({"prediction_id": "p-1", "label": "UP"}, {"prediction_id": "p-1x", "label": "MAYBE"},
                                {"prediction_id": "no spaces", "label": "UP"})
    assert response.status_code == 422
    assert problems(response) == [
        {"index": 1, "field": "label", "problem": "unknown class 'MAYBE'; target.classes is ['UP', 'DOWN']"},
        {"index": 2, "field": "prediction_id", "problem": f"bad id 'no spaces'; expected {ID_RULE}"},
    ]
    assert sqlite_api.window_ids() == []
    assert sqlite_api.store.label_history(sqlite_api.model, "p-1") == []


def test_regression_label_must_be_a_number(tmp_path: Path, clock: ManualClock) -> None:
    path = write_policy(tmp_path, "house", f"sqlite:///{tmp_path / 'r.db'}", task="regression")
    runtimes = build_runtimes([load_policy(path, environ={})], clock, environ={})
    store = runtimes["house"].store
    client = TestClient(create_app(runtimes, clock))
    try:
        ok = client.post("/v1/models/house/predictions",
                         json={"items": [{"prediction_id": "h-1", "features": {"area": 80}, "prediction": 250000}]})
        assert ok.status_code == 200, ok.text
        for bad in ("expensive", True, None):
            response = client.post("/v1/models/house/labels", json={"items": [{"prediction_id": "h-1", "label": bad}]})
            assert response.status_code == 422, (bad, response.text)
            assert problems(response) == [{"index": 0, "field": "label",
                                           "problem": f"expected a finite number for a regression target, got {bad!r}"}]
        assert store.label_history("house", "h-1") == []
        # An integer label is stored as a float, so a later 3.0 is the same label, not a conflict.
        assert client.post("/v1/models/house/labels", json={"items": [{"prediction_id": "h-1", "label": 3}]}
                           ).status_code == 200
        again = client.post("/v1/models/house/labels", json={"items": [{"prediction_id": "h-1", "label": 3.0}]})
        assert again.json()["duplicates"] == 1
        assert [c.value for c in store.label_history("house", "h-1")] == [3.0]
    finally:
        store.dispose()


def test_malformed_json_is_refused_naming_the_body(sqlite_api: Api) -> None:
    response = sqlite_api.raw("predictions", b'{"items": [}')
    assert response.status_code == 422
    (problem,) = problems(response)
    assert (problem["index"], problem["field"]) == (None, "body")
    assert problem["problem"].startswith("body is not valid JSON: Expecting value")
    assert sqlite_api.stored() == 0


@pytest.mark.parametrize("path, body, expected", [
    ("predictions", {}, [(None, "items", "Field required")]),
    ("labels", {"labels": []}, [(None, "items", "Field required"),
                                (None, "labels", "unknown key; see the request schema at /openapi.json")]),
    ("predictions", {"items": [{"prediction": "UP"}]}, [(0, "features", "Field required")]),
    ("labels", {"items": [{"prediction_id": "p-1", "label": "UP", "overwrite": "perhaps"}]},
     [(0, "overwrite", "expected true or false (a JSON boolean), got 'perhaps'")]),
])
def test_request_shape_errors_name_the_item_and_field(sqlite_api: Api, path: str, body: dict,
                                                      expected: list) -> None:
    response = sqlite_api.raw(path, json.dumps(body).encode())
    assert response.status_code == 422
    assert sorted((p["index"], p["field"], p["problem"]) for p in problems(response)) == sorted(
        expected, key=lambda e: (e[0] is not None, e))
    assert sqlite_api.stored() == 0
    assert sqlite_api.window_ids() == []


# ------------------------------------------------------------------------------------------------ conflicts -> 409


def test_a_different_label_without_overwrite_is_a_conflict_and_changes_nothing(api: Api) -> None:
    api.predict(item("p-1"), item("p-2"))
    api.label({"prediction_id": "p-1", "label": "UP"})
    api.clock.advance(minutes=1)
    response = api.label({"prediction_id": "p-2", "label": "UP"}, {"prediction_id": "p-1", "label": "DOWN"})
    assert response.status_code == 409, response.text
    assert problems(response) == [{
        "index": 1, "field": "label",
        "problem": "prediction 'p-1' already has label 'UP', got 'DOWN'; send overwrite: true to replace it "
                   "(the change is recorded)"}]
    assert api.store.label_history(api.model, "p-1") == [LabelChange("UP", T0, None)]
    assert api.store.label_history(api.model, "p-2") == []  # the good item of the refused batch was not stored


def test_overwrite_is_recorded_with_old_value_new_value_and_time(api: Api) -> None:
    api.predict(item("p-1"))
    api.label({"prediction_id": "p-1", "label": "UP"})
    changed = api.clock.advance(hours=2)
    response = api.label({"prediction_id": "p-1", "label": "DOWN", "overwrite": True})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "inserted": 0, "duplicates": 0, "overwritten": 1, "unmatched": 0}
    assert api.store.label_history(api.model, "p-1") == [LabelChange("UP", T0, changed),
                                                          LabelChange("DOWN", changed, None)]
    # Label maturity: a window as of before the change still sees the old value.
    assert list(api.store.labeled_window(api.model, T0).labels) == ["UP"]
    assert list(api.store.labeled_window(api.model, changed).labels) == ["DOWN"]


def test_the_same_label_twice_is_a_counted_no_op(api: Api) -> None:
    api.predict(item("p-1"))
    api.label({"prediction_id": "p-1", "label": "UP"})
    api.clock.advance(seconds=30)
    response = api.label({"prediction_id": "p-1", "label": "UP"}, {"prediction_id": "p-1", "label": "UP",
                                                                   "overwrite": True})
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "inserted": 0, "duplicates": 2, "overwritten": 0, "unmatched": 0}
    assert api.store.label_history(api.model, "p-1") == [LabelChange("UP", T0, None)]


def test_a_prediction_id_resent_with_other_content_is_a_conflict_and_identical_resend_is_a_no_op(api: Api) -> None:
    assert api.predict(item("p-1")).status_code == 200
    assert api.predict(item("p-1")).json() == {"accepted": 1, "prediction_ids": ["p-1"]}
    response = api.predict(item("p-2"), item("p-1", prediction="DOWN"))
    assert response.status_code == 409
    assert [(p["index"], p["field"]) for p in problems(response)] == [(1, "prediction_id")]
    assert api.stored() == 1
    assert api.store.get_prediction(api.model, "p-1")["prediction"] == "UP"


# ------------------------------------------------------------------------------------------------ limits -> 413


@pytest.fixture
def small_api(model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[Api]:
    yield from open_api(tmp_path, f"sqlite:///{tmp_path / 'small.db'}", model_name, clock,
                        api={"max_batch_items": 3, "max_body_bytes": 2048})


def test_too_many_items_is_413_naming_the_limit(small_api: Api) -> None:
    response = small_api.predict(*(item(f"p-{i}") for i in range(4)))
    assert response.status_code == 413
    assert "batch of 4 items is over the limit of 3 (api.max_batch_items)" in response.json()["error"]
    assert small_api.stored() == 0
    labels = small_api.label(*({"prediction_id": f"p-{i}", "label": "UP"} for i in range(4)))
    assert labels.status_code == 413
    assert small_api.window_ids() == [] and small_api.store.label_history(small_api.model, "p-0") == []
    assert small_api.predict(*(item(f"p-{i}") for i in range(3))).status_code == 200  # at the limit is fine
    metrics = small_api.metrics()
    for kind in ("prediction", "label"):
        key = ("driftpilot_events_rejected_total",
               tuple(sorted({"model": small_api.model, "kind": kind, "reason": "too_large"}.items())))
        assert metrics[key] == 4


def oversize_body() -> bytes:
    body = json.dumps({"items": [item(f"p-{i}", features={"c": "r" * 1000}) for i in range(3)]}).encode()
    assert len(body) > 2048
    return body


def test_oversize_body_with_content_length_is_413_naming_the_limit(small_api: Api) -> None:
    response = small_api.raw("predictions", oversize_body())
    assert response.status_code == 413
    assert "over the limit of 2048 bytes (api.max_body_bytes)" in response.json()["error"]
    assert small_api.stored() == 0


def test_oversize_streamed_body_without_content_length_is_413_naming_the_limit(small_api: Api) -> None:
    body = oversize_body()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start:start + 500]

    response = small_api.client.post(f"/v1/models/{small_api.model}/predictions", content=chunks(),
                                     headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers  # really sent chunked
    assert small_api.stored() == 0
    assert response.status_code == 413, response.text
    assert "over the limit of 2048 bytes (api.max_body_bytes)" in response.json()["error"]


def test_a_streamed_body_under_the_limit_is_accepted(small_api: Api) -> None:
    body = json.dumps({"items": [item("p-1")]}).encode()
    response = small_api.client.post(f"/v1/models/{small_api.model}/predictions",
                                     content=iter([body[:20], body[20:]]), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert small_api.stored() == 1


# ------------------------------------------------------------------------------------------------ routing and auth


def test_unknown_model_is_404_listing_the_known_ones(sqlite_api: Api) -> None:
    for response in (sqlite_api.predict(item("p-1"), model="nope"),
                     sqlite_api.label({"prediction_id": "p-1", "label": "UP"}, model="nope"),
                     sqlite_api.client.get("/v1/models/nope/stats")):
        assert response.status_code == 404
        assert response.json()["error"] == f"unknown model 'nope'; this server has policies for: {sqlite_api.model}"
    assert sqlite_api.stored() == 0


@pytest.fixture
def token_api(model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[Api]:
    yield from open_api(tmp_path, f"sqlite:///{tmp_path / 'auth.db'}", model_name, clock,
                        api={"token_env": "DP_TOKEN"}, environ={"DP_TOKEN": TOKEN})


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": TOKEN}])
def test_write_endpoints_need_the_bearer_token(token_api: Api, headers: dict) -> None:
    for response in (token_api.predict(item("p-1"), headers=headers),
                     token_api.label({"prediction_id": "p-1", "label": "UP"}, headers=headers)):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer <token>" in response.json()["error"]
        assert "$DP_TOKEN" in response.json()["error"]
    assert token_api.stored() == 0
    assert token_api.store.label_history(token_api.model, "p-1") == []


@pytest.mark.parametrize("body", [
    json.dumps({"items": [{"features": {"x": "not a number"}, "prediction": "UP"}]}).encode(),
    json.dumps({"wrong": "shape"}).encode(),
    b'{"items": [',
], ids=["invalid item", "wrong shape", "malformed json"])
def test_the_token_is_checked_before_the_body(token_api: Api, body: bytes) -> None:
    response = token_api.client.post(f"/v1/models/{token_api.model}/predictions", content=body,
                                     headers={"content-type": "application/json"})
    assert response.status_code == 401, response.text
    assert "problems" not in response.json()  # no validation hints to an unauthenticated caller


def test_the_right_token_is_accepted(token_api: Api) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert token_api.predict(item("p-1"), headers=auth).status_code == 200
    assert token_api.label({"prediction_id": "p-1", "label": "UP"}, headers=auth).status_code == 200
    assert token_api.window_ids() == ["p-1"]
    assert token_api.client.get(f"/v1/models/{token_api.model}/stats").status_code == 200  # reads need no token


@pytest.mark.parametrize("environ", [{}, {"DP_TOKEN": ""}], ids=["unset", "empty"])
def test_build_runtimes_refuses_a_missing_token_variable(tmp_path: Path, clock: ManualClock, environ: dict) -> None:
    path = write_policy(tmp_path, "m", f"sqlite:///{tmp_path / 'e.db'}", api={"token_env": "DP_TOKEN"})
    with pytest.raises(ConfigError) as info:
        build_runtimes([load_policy(path, environ={})], clock, environ=environ)
    (problem,) = info.value.problems
    assert "api.token_env names DP_TOKEN" in problem
    assert "export the token, or remove api.token_env" in problem


# ------------------------------------------------------------------------------------------------ store down -> 503


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


def test_an_unreachable_store_gives_503_with_a_clear_message(down_api: Api) -> None:
    for response in (down_api.predict(item("p-1")), down_api.label({"prediction_id": "p-1", "label": "UP"}),
                     down_api.client.get("/v1/models/down/stats")):
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert "event store postgresql+psycopg://postgres@127.0.0.1:1/nowhere is unreachable" in error
        assert "storage.url" in error and "nothing was written" in error
    # The other model's store is untouched and still works.
    assert down_api.store.count_predictions("down") == 0
    assert down_api.predict(item("p-1"), model="up").status_code == 200


def test_readyz_names_the_unreachable_store_and_healthz_stays_up(down_api: Api) -> None:
    ready = down_api.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert list(ready.json()["problems"]) == ["down"]
    assert "127.0.0.1:1" in ready.json()["problems"]["down"]
    assert down_api.client.get("/healthz").json() == {"status": "ok"}


def test_readyz_and_healthz_on_a_good_store(api: Api) -> None:
    assert api.client.get("/healthz").status_code == 200
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": [api.model], "champions": {api.model: None}}


def test_build_runtimes_refuses_an_unreachable_store(tmp_path: Path, clock: ManualClock) -> None:
    path = write_policy(tmp_path, "down", DEAD_POSTGRES)
    with pytest.raises(StoreUnavailable, match="127.0.0.1:1/nowhere is unreachable"):
        build_runtimes([load_policy(path, environ={})], clock, environ={})


def test_a_write_failing_mid_transaction_leaves_nothing_half_written(sqlite_api: Api, tmp_path: Path) -> None:
    """An overwrite first marks the old label superseded, then inserts the new one; fail the insert."""
    sqlite_api.predict(item("p-1"))
    sqlite_api.label({"prediction_id": "p-1", "label": "UP"})
    db = sqlite3.connect(tmp_path / "events.db")
    # A real database fault, not a mock: the trigger's missing table fails every INSERT on labels.
    db.execute("CREATE TRIGGER fail_label_insert BEFORE INSERT ON labels BEGIN INSERT INTO no_such_table "
               "VALUES (1); END")
    db.commit()
    sqlite_api.clock.advance(minutes=5)
    response = sqlite_api.label({"prediction_id": "p-1", "label": "DOWN", "overwrite": True})
    assert response.status_code == 503
    assert "failed during the request: no such table: main.no_such_table" in response.json()["error"]
    assert "rolled back; nothing was written" in response.json()["error"]
    assert sqlite_api.store.label_history(sqlite_api.model, "p-1") == [LabelChange("UP", T0, None)]
    db.execute("DROP TRIGGER fail_label_insert")
    db.commit()
    db.close()
    assert sqlite_api.label({"prediction_id": "p-1", "label": "DOWN", "overwrite": True}).status_code == 200
    assert [c.value for c in sqlite_api.store.label_history(sqlite_api.model, "p-1")] == ["UP", "DOWN"]


# ------------------------------------------------------------------------------------------------ metrics, schema


def test_metrics_count_accepted_and_rejected_events_and_time_requests(token_api: Api) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    m = token_api.model
    token_api.predict(*(item(f"p-{i}") for i in range(5)), headers=auth)                 # 5 accepted
    token_api.predict(item("q-1"), item("q-2", features={"x": "bad"}), headers=auth)     # 2 invalid
    token_api.label(*({"prediction_id": f"p-{i}", "label": "UP"} for i in range(3)), headers=auth)  # 3 accepted
    token_api.label({"prediction_id": "p-0", "label": "DOWN"}, headers=auth)             # 1 conflict
    token_api.predict(item("r-1"))                                                       # 1 unauthorized
    metrics = token_api.metrics()

    def counter(name: str, **labels: str) -> float:
        return metrics.get((f"driftpilot_events_{name}_total", tuple(sorted({"model": m, **labels}.items()))), 0.0)

    assert counter("accepted", kind="prediction") == 5
    assert counter("accepted", kind="label") == 3
    assert counter("rejected", kind="prediction", reason="invalid") == 2
    assert counter("rejected", kind="label", reason="conflict") == 1
    assert counter("rejected", kind="prediction", reason="unauthorized") == 1

    def requests(path: str, status: str) -> float:
        key = ("driftpilot_request_seconds_count",
               tuple(sorted({"route": f"/v1/models/{{model}}/{path}", "method": "POST", "status": status}.items())))
        return metrics.get(key, 0.0)

    assert requests("predictions", "200") == 1
    assert requests("predictions", "422") == 1
    assert requests("predictions", "401") == 1
    assert requests("labels", "200") == 1
    assert requests("labels", "409") == 1
    buckets = [key for key in metrics if key[0] == "driftpilot_request_seconds_bucket"]
    assert any(dict(labels).get("le") == "+Inf" for _, labels in buckets)


def test_openapi_lists_the_endpoints_and_the_request_schemas(sqlite_api: Api) -> None:
    spec = sqlite_api.client.get("/openapi.json").json()
    assert {"/v1/models/{model}/predictions", "/v1/models/{model}/labels", "/v1/models/{model}/stats", "/healthz",
            "/readyz"} <= set(spec["paths"])
    assert "/metrics" not in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert {"PredictionBatch", "PredictionIn", "LabelBatch", "LabelIn"} <= set(schemas)
    assert set(schemas["PredictionIn"]["required"]) == {"features", "prediction"}
    assert set(schemas["LabelIn"]["properties"]) == {"prediction_id", "label", "overwrite"}
    body = spec["paths"]["/v1/models/{model}/predictions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/PredictionBatch"
    assert {"401", "404", "409", "413", "422", "503"} <= set(
        spec["paths"]["/v1/models/{model}/labels"]["post"]["responses"])


# ------------------------------------------------------------------------------------------------ hostile input (issue 9)


def big_int_body(path: str, digits: int = 400) -> bytes:
    """A body whose x is a JSON integer of ``digits`` digits (json.dumps of a Python int that size is refused)."""
    big = "1" + "0" * (digits - 1)
    if path == "predict":
        return f'{{"features": {{"x1": {big}, "x2": 1.0}}}}'.encode()
    return raw_json([item("p-0"), item("p-1", features={"x": "@BIG"})], {"@BIG": big})


def assert_nothing_stored(api: Api) -> None:
    assert api.stored() == 0
    with api.store.connection() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(labels_table)
                            .where(labels_table.c.model == api.model)).scalar_one() == 0


HOSTILE_PREDICTIONS = {
    # Each was a 500 (a traceback) before issue 9, or silently stored something the store or the windows cannot hold.
    "event time before year 1 in UTC": (
        item(event_time="0001-01-01T00:00:00+01:00"), "event_time",
        ("0001-01-01T00:00:00+01:00 is out of range; send a time between 1678-01-01 and 2262-01-01 UTC (the range of "
        "the timestamps driftpilot's windows hold)")),
    "event time after year 9999 in UTC": (
        item(event_time="9999-12-31T23:59:59-01:00"), "event_time",
        ("9999-12-31T23:59:59-01:00 is out of range; send a time between 1678-01-01 and 2262-01-01 UTC (the range of "
        "the timestamps driftpilot's windows hold)")),
    "event time pandas cannot hold": (
        item(event_time="1500-06-01T00:00:00Z"), "event_time",
        ("1500-06-01T00:00:00+00:00 is out of range; send a time between 1678-01-01 and 2262-01-01 UTC (the range of "
        "the timestamps driftpilot's windows hold)")),
    "event time as a number": (
        item(event_time=1767225600), "event_time",
        'expected an RFC 3339 date-time string such as "2026-01-31T12:00:00Z" (no offset = UTC), got 1767225600'),
    "event time as a numeric string": (
        item(event_time="1767225600"), "event_time",
        ("expected an RFC 3339 date-time string such as \"2026-01-31T12:00:00Z\" (no offset = UTC), got "
        "'1767225600'")),
    "event time not on the calendar": (
        item(event_time="2026-02-30T00:00:00Z"), "event_time",
        "'2026-02-30T00:00:00Z' is not a valid date-time: day is out of range for month"),
    "NUL in a category": (
        item(features={"c": "re\u0000d"}), "features.c",
        "text contains a NUL character (\\u0000), which the event store cannot keep; remove it"),
    "NUL in a prediction id": (
        item("p\u00001"), "prediction_id", f"bad id 'p\\x001'; expected {ID_RULE}"),
    "newline at the end of a prediction id": (
        item("p-1\n"), "prediction_id", f"bad id 'p-1\\n'; expected {ID_RULE}"),
    "model version longer than the column": (
        item(model_version="v" * 65), "model_version",
        (f"bad model version '{'v' * 59}... (67 characters); expected a string of 1-64 characters, such as the "
        "registry version \"3\"")),
    "model version with NUL": (
        item(model_version="v\u00001"), "model_version",
        "text contains a NUL character (\\u0000), which the event store cannot keep; remove it"),
    "class label beyond 64-bit integers": (
        item(prediction=2**64), "prediction",
        "integer class label 18446744073709551616 is outside the 64-bit integer range; send it as a string"),
}


@pytest.mark.parametrize("case", list(HOSTILE_PREDICTIONS))
def test_hostile_prediction_values_are_422_naming_index_and_field_and_store_nothing(api: Api, case: str) -> None:
    bad, field, problem = HOSTILE_PREDICTIONS[case]
    response = api.predict(item("ok-0"), bad)
    assert response.status_code == 422, response.text
    assert problems(response) == [{"index": 1, "field": field, "problem": problem}]
    assert_nothing_stored(api)


@pytest.mark.parametrize("where", ["category", "scores key"])
def test_a_lone_surrogate_is_422_and_the_error_body_still_renders(tmp_path: Path, clock: ManualClock, store_url: str,
                                                                 model_name: str, where: str) -> None:
    """Python's JSON parser accepts "\\ud800"; it cannot be encoded as UTF-8, so PostgreSQL (and the error body that
    echoes a field name) would fail on it."""
    for api in open_api(tmp_path, store_url, model_name, clock):
        if where == "category":
            body, field = raw_json([item(features={"c": "@S"})], {"@S": '"a\\ud800b"'}), "features.c"
        else:
            body = raw_json([item(scores={"@K": 0.5}, prediction="UP")], {"@K": '"\\udfff"'})
            field = "scores.\\udfff"  # the field echoes the key: shown escaped, as text the body can carry
        assert b"\\ud" in body
        response = api.raw("predictions", body)
        assert response.status_code == 422, response.text
        (problem,) = problems(response)
        assert problem["field"] == field
        assert "not valid Unicode" in problem["problem"] or "unknown class" in problem["problem"]
        assert_nothing_stored(api)


def test_integers_too_large_for_a_float_are_422(api: Api) -> None:
    response = api.raw("predictions", big_int_body("predictions"))
    assert response.status_code == 422, response.text
    assert problems(response) == [{
        "index": 1, "field": "features.x",
        "problem": "integer <integer of about 400 digits> is too large for a 64-bit float (at most about 1.8e308); "
                   "send a smaller number"}]
    assert_nothing_stored(api)


def test_a_regression_label_too_large_for_a_float_is_422(tmp_path: Path, clock: ManualClock) -> None:
    for api in open_api(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", "house", clock):
        pass
    path = write_policy(tmp_path, "house", f"sqlite:///{tmp_path / 'r.db'}", task="regression")
    runtimes = build_runtimes([load_policy(path, environ={})], clock, environ={})
    client = TestClient(create_app(runtimes, clock))
    try:
        response = client.post("/v1/models/house/labels", content=b'{"items": [{"prediction_id": "h-1", "label": 1'
                               + b"0" * 400 + b"}]}", headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert problems(response)[0]["field"] == "label"
        assert "too large for a 64-bit float" in problems(response)[0]["problem"]
        assert runtimes["house"].store.label_history("house", "h-1") == []
    finally:
        runtimes["house"].store.dispose()


@pytest.mark.parametrize("body, problem", [
    (b'{"items": [{"features": {}, "prediction": "UP"}]}\xff', "body is not valid JSON: it is not UTF-8 text"),
    (b'{"items": [' + b"1" * 5000 + b"]}", "body is not valid JSON: it holds an integer of more than 4300 digits"),
    (b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ("body is not valid JSON: it nests arrays or objects "
                                                               "too deeply")),
], ids=["not utf-8", "5000-digit integer", "nested 100000 deep"])
def test_bodies_the_json_parser_cannot_decode_are_422_not_400(sqlite_api: Api, body: bytes, problem: str) -> None:
    response = sqlite_api.raw("predictions", body)
    assert response.status_code == 422, response.text
    (found,) = problems(response)
    assert (found["index"], found["field"]) == (None, "body")
    assert found["problem"].startswith(problem)
    assert sqlite_api.stored() == 0


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, [True]], ids=repr)
def test_overwrite_must_be_a_json_boolean(api: Api, value: Any) -> None:
    api.predict(item("p-1"))
    api.label({"prediction_id": "p-1", "label": "UP"})
    response = api.label({"prediction_id": "p-1", "label": "DOWN", "overwrite": value})
    assert response.status_code == 422, response.text
    assert problems(response) == [{"index": 0, "field": "overwrite",
                                   "problem": f"expected true or false (a JSON boolean), got {value!r}"}]
    assert api.store.label_history(api.model, "p-1") == [LabelChange("UP", T0, None)]


@pytest.mark.parametrize("body, field", [
    ({"items": [item(prediction_id=7)]}, "prediction_id"),
    ({"items": [item(model_version=3)]}, "model_version"),
    ({"items": [item() | {"features": ["x", 1]}]}, "features"),
    ({"items": {"0": item()}}, "items"),
], ids=["id as number", "version as number", "features as list", "items as object"])
def test_other_fields_take_only_their_json_type(sqlite_api: Api, body: dict, field: str) -> None:
    response = sqlite_api.raw("predictions", json.dumps(body).encode())
    assert response.status_code == 422, response.text
    assert [p["field"] for p in problems(response)] == [field]
    assert sqlite_api.stored() == 0


def test_unknown_model_with_a_malformed_body_is_404_first(sqlite_api: Api) -> None:
    for body in (b'{"items": [', b'{"wrong": "shape"}', b"\xff"):
        response = sqlite_api.client.post("/v1/models/nope/predictions", content=body,
                                          headers={"content-type": "application/json"})
        assert response.status_code == 404, response.text
        assert response.json() == {"error": f"unknown model 'nope'; this server has policies for: {sqlite_api.model}"}


def test_unknown_model_is_404_before_the_token_and_the_token_before_the_body_size(token_api: Api,
                                                                                  tmp_path: Path) -> None:
    huge = b'{"items": [' + b" " * 20_000_000 + b"]}"  # over the default 16 MiB limit
    assert token_api.client.post("/v1/models/nope/labels", content=b"{").status_code == 404
    response = token_api.client.post(f"/v1/models/{token_api.model}/predictions", content=huge,
                                     headers={"content-type": "application/json"})
    assert response.status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    response = token_api.client.post(f"/v1/models/{token_api.model}/predictions", content=huge, headers=auth)
    assert response.status_code == 413
    assert token_api.stored() == 0


def test_routes_and_methods_that_do_not_exist_answer_with_an_error_body(sqlite_api: Api) -> None:
    missing = sqlite_api.client.get(f"/v1/models/{sqlite_api.model}/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"error": f"Not Found: GET /v1/models/{sqlite_api.model}/nothing-here; see /docs for the "
                                       "endpoints"}
    wrong = sqlite_api.client.put(f"/v1/models/{sqlite_api.model}/predictions", json={"items": []})
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error"].startswith("Method Not Allowed: PUT")


# ------------------------------------------------------------------------------------------------ retries and order


def test_a_retried_prediction_without_event_time_is_a_no_op(api: Api) -> None:
    """Issue 9 item 2 (fixed in the store): the server's stamp is not part of what the client sent."""
    first = api.predict(item("p-1"), item("p-2", event_time="2025-12-31T23:00:00Z"))
    assert first.status_code == 200, first.text
    api.clock.advance(minutes=3)
    retry = api.predict(item("p-1"), item("p-2", event_time="2025-12-31T23:00:00Z"))
    assert retry.status_code == 200, retry.text
    assert retry.json() == first.json()
    assert api.stored() == 2
    assert api.store.get_prediction(api.model, "p-1")["event_time"] == T0  # the first stamp stays
    changed = api.predict(item("p-1", features={"x": 2.5}))
    assert changed.status_code == 409  # other content under the same id is still a conflict
    assert api.store.get_prediction(api.model, "p-1")["features"]["x"] == 1.5


def test_one_label_batch_with_the_same_id_twice_applies_in_order(api: Api) -> None:
    """Issue 9 item 1 (fixed in the store): a later item with overwrite replaces the earlier one; the earlier value
    is history that was in force at no instant. Without overwrite the batch is a conflict and nothing is stored."""
    api.predict(item("p-1"))
    refused = api.label({"prediction_id": "p-1", "label": "UP"}, {"prediction_id": "p-1", "label": "DOWN"})
    assert refused.status_code == 409, refused.text
    assert [(p["index"], p["field"]) for p in problems(refused)] == [(1, "label")]
    assert api.store.label_history(api.model, "p-1") == []
    response = api.label({"prediction_id": "p-1", "label": "UP"},
                         {"prediction_id": "p-1", "label": "DOWN", "overwrite": True})
    assert response.status_code == 200, response.text
    assert (response.json()["inserted"], response.json()["overwritten"]) == (1, 1)
    assert [c.value for c in api.store.label_history(api.model, "p-1")] == ["UP", "DOWN"]
    assert list(api.store.labeled_window(api.model, api.clock.now()).labels) == ["DOWN"]


# ------------------------------------------------------------------------------------------------ /predict


@pytest.fixture
def served(store_url: str, model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[ServedApi]:
    """/predict with a real champion (LogisticRegression on toy rows) on SQLite and on PostgreSQL."""
    served = open_served_api(tmp_path, store_url, model_name, clock)
    try:
        yield served
    finally:
        served.store.dispose()


@pytest.mark.parametrize("body, field, problem", [
    ({"items": []}, "items", "List should have at least 1 item after validation, not 0"),
    (None, "features.x1", ("integer <integer of about 400 digits> is too large for a 64-bit float (at most about "
                          "1.8e308); send a smaller number")),
    ({"features": {"x1": 1.0, "x2": 2.0}, "items": [{"features": {"x1": 1.0, "x2": 2.0}}]}, "body",
     'send either {"features": {...}} for one row or {"items": [...]} for a batch'),
], ids=["empty batch", "huge integer", "both shapes"])
def test_predict_refuses_hostile_requests_with_422_and_logs_nothing(served: ServedApi, body: Any, field: str,
                                                                   problem: str) -> None:
    response = served.post("predict", big_int_body("predict") if body is None else body)
    assert response.status_code == 422, response.text
    (found,) = problems(response)
    assert (found["field"], found["problem"].removeprefix("Value error, ")) == (field, problem)
    assert served.store.count_predictions(served.model) == 0


def test_predict_refuses_rows_the_champion_scores_as_nan(served: ServedApi) -> None:
    """1e308 and -1e308 are valid numbers, but a linear model's score of that row is inf - inf = NaN."""
    rows = [{"features": {"x1": 1.0, "x2": 0.5}}, {"features": {"x1": 1e308, "x2": -1e308}}]
    response = served.post("predict", {"items": rows})
    assert response.status_code == 422, response.text
    assert problems(response) == [{
        "index": 1, "field": "features",
        "problem": "the champion (version 1) gives no finite prediction for this row (its values are beyond what the "
                   "model can score); send values in the range of the training data"}]
    assert served.store.count_predictions(served.model) == 0
    assert served.post("predict", {"items": rows[:1]}).status_code == 200


def frame_model(columns: list[str]) -> Any:
    """A plain scikit-learn pipeline (not driftpilot's, so it is served through DataFrames) using ``columns``."""
    rows, labels = toy_rows(100)
    frame = pd.DataFrame(rows)
    return make_pipeline(make_column_transformer((SimpleImputer(), columns)), LogisticRegression()).fit(frame, labels)


def test_predict_names_the_rows_a_model_refuses_to_score(tmp_path: Path, clock: ManualClock, model_name: str) -> None:
    """scikit-learn refuses an infinity the policy allows (z: allow_nan); the request is a 422 naming that row."""
    served = open_served_api(tmp_path, f"sqlite:///{tmp_path / 'inf.db'}", model_name, clock,
                             champion=frame_model(["x1", "x2", "z"]))
    try:
        assert type(served.runtime.champion.current.predictor).__name__ == "FramePredictor"
        body = raw_json([{"features": {"x1": 1.0, "x2": 2.0}}, {"features": {"x1": 1.0, "x2": 2.0, "z": "@Z"}}],
                        {"@Z": "Infinity"})
        response = served.post("predict", body)
        assert response.status_code == 422, response.text
        (problem,) = problems(response)
        assert (problem["index"], problem["field"]) == (1, "features")
        assert problem["problem"].startswith("the champion (version 1) cannot score this row: Input X contains "
                                             "infinity")
        assert served.store.count_predictions(model_name) == 0
        assert served.post("predict", {"features": {"x1": 1.0, "x2": 2.0, "z": 3.0}}).status_code == 200
    finally:
        served.store.dispose()


def test_a_champion_that_cannot_score_any_row_is_a_server_error_not_the_clients(tmp_path: Path, clock: ManualClock,
                                                                                 model_name: str) -> None:
    """A model fitted on other columns fails on every row: that is not the request's fault, so no 422 blames it."""
    rows, labels = toy_rows(100)
    broken = make_pipeline(SimpleImputer(), LogisticRegression()).fit(pd.DataFrame(rows)[["x1", "x2"]], labels)
    served = open_served_api(tmp_path, f"sqlite:///{tmp_path / 'broken.db'}", model_name, clock, champion=broken)
    try:
        with pytest.raises(ValueError, match="feature names should match"):
            served.post("predict", {"features": {"x1": 1.0, "x2": 2.0}})
        assert served.store.count_predictions(model_name) == 0
    finally:
        served.store.dispose()


def test_a_retried_predict_with_the_same_ids_is_a_no_op(served: ServedApi) -> None:
    body = {"items": [{"features": {"x1": 1.0, "x2": 0.5}, "prediction_id": "q-1"},
                      {"features": {"x1": -1.0, "x2": 0.5}, "prediction_id": "q-2"}]}
    first = served.post("predict", body)
    assert first.status_code == 200, first.text
    served.clock.advance(seconds=30)
    again = served.post("predict", body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert served.store.count_predictions(served.model) == 2


def test_predict_with_a_stored_id_of_other_content_is_a_declared_409(served: ServedApi) -> None:
    assert served.post("predict", {"features": {"x1": 1.0, "x2": 0.5}, "prediction_id": "q-1"}).status_code == 200
    response = served.post("predict", {"features": {"x1": -3.0, "x2": 0.5}, "prediction_id": "q-1"})
    assert response.status_code == 409, response.text
    assert [(p["index"], p["field"]) for p in problems(response)] == [(0, "prediction_id")]
    spec = served.client.get("/openapi.json").json()
    assert "409" in spec["paths"]["/v1/models/{model}/predict"]["post"]["responses"]


# ------------------------------------------------------------------------------------------------ the OpenAPI document


def test_every_status_is_declared_per_operation_with_its_body_schema(sqlite_api: Api) -> None:
    spec = sqlite_api.client.get("/openapi.json").json()
    error, batch_error = "#/components/schemas/ErrorBody", "#/components/schemas/BatchErrorBody"
    expected = {
        ("/v1/models/{model}/predictions", "post"): ("PredictionsAccepted", {401, 404, 409, 413, 422, 503}),
        ("/v1/models/{model}/labels", "post"): ("LabelsAccepted", {401, 404, 409, 413, 422, 503}),
        ("/v1/models/{model}/predict", "post"): ("PredictResponse", {401, 404, 409, 413, 422, 503}),
        ("/v1/models/{model}/stats", "get"): ("StatsBody", {404, 503}),
        ("/healthz", "get"): ("HealthBody", set()),
        ("/readyz", "get"): ("ReadyBody", {503}),
    }
    for (path, method), (ok, errors) in expected.items():
        responses = spec["paths"][path][method]["responses"]
        assert set(responses) == {"200", *map(str, errors)}, (path, set(responses))
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"] == f"#/components/schemas/{ok}"
        for status in errors:
            ref = responses[str(status)]["content"]["application/json"]["schema"]["$ref"]
            if path == "/readyz":
                assert ref == "#/components/schemas/NotReadyBody"
            else:
                assert ref == (batch_error if status in (409, 422) else error), (path, status)
            assert responses[str(status)]["description"]
    assert spec["components"]["schemas"]["BatchErrorBody"]["required"] == ["error", "problems"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's default 422 body is never sent
