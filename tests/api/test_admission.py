"""The admission middleware (controller/api/admission.py), in order before a byte of the body is parsed: an unknown
model is a 404 whatever the body, a write without the bearer token a 401 with no hint about the body, a body over
api.max_body_bytes a 413 (declared or streamed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.api_kit import TOKEN, Api, item


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


def test_unknown_model_is_404_listing_the_known_ones(sqlite_api: Api) -> None:
    for response in (sqlite_api.predict(item("p-1"), model="nope"),
                     sqlite_api.label({"prediction_id": "p-1", "label": "UP"}, model="nope"),
                     sqlite_api.client.get("/v1/models/nope/stats")):
        assert response.status_code == 404
        assert response.json()["error"] == f"unknown model 'nope'; this server has policies for: {sqlite_api.model}"
    assert sqlite_api.stored() == 0


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
