"""Bad input is a 422 naming the item, the field and the problem, and stores nothing: the policy's checks
(controller/api/validation.py: feature schema, target, ids, NaN, event times, text the store cannot keep) and the
request-shape and JSON problems worded by controller/api/ingest.py and refusals.py. Every refused request is also
checked through the store: nothing was stored, no label changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.api.service import build_runtimes
from controller.clock import ManualClock
from controller.policy_loader import load_policy
from controller.store import LabelChange
from controller.store.tables import labels as labels_table
from tests.api.api_kit import (
    DECLARED,
    ID_RULE,
    Api,
    big_int_body,
    item,
    open_api,
    problems,
    raw_json,
    write_policy,
)
from tests.conftest import T0

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
