"""The client's own logic against an injected ``httpx.MockTransport``: retry decisions and backoff (a recording
sleep, a seeded jitter), batching to the server's limit, the typed errors, and that importing it stays light."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from controller.client import (
    SERVER_MAX_BATCH_ITEMS,
    Conflict,
    DriftpilotClient,
    NotFound,
    PayloadTooLarge,
    Problem,
    RetryPolicy,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    retryable,
)
from controller.config import ApiConfig
from tests.conftest import REPO

URL = "http://driftpilot.test"


class FakeServer:
    """Answers like the API's write routes (``items`` echoed back as accepted), with scripted failures first:
    each entry of ``script`` is an exception to raise or a status (with the API's error body) to answer."""

    def __init__(self, script: list[Exception | int | httpx.Response] | None = None, limit: int | None = None,
                 body_limit: int | None = None) -> None:
        self.script = list(script or [])
        self.limit = limit
        self.body_limit = body_limit
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            if isinstance(step, httpx.Response):
                return step
            return httpx.Response(step, json={"error": f"scripted {step}"})
        items = json.loads(request.content)["items"] if request.content else []
        if self.body_limit is not None and len(request.content) > self.body_limit:
            return httpx.Response(413, json={"error": f"request body is over the limit of {self.body_limit} bytes "
                                                      "(api.max_body_bytes); send smaller batches; nothing was stored"})
        if self.limit is not None and len(items) > self.limit:
            return httpx.Response(413, json={"error": f"batch of {len(items)} items is over the limit of {self.limit} "
                                                      "(api.max_batch_items); split it into smaller batches; nothing "
                                                      "was stored"})
        if request.url.path.endswith("/labels"):
            return httpx.Response(200, json={"accepted": len(items), "inserted": len(items), "duplicates": 0,
                                             "overwritten": 0, "unmatched": 0})
        if request.url.path.endswith("/predict"):
            return httpx.Response(200, json={"model_version": "3", "predictions": [
                {"prediction_id": item["prediction_id"], "prediction": 1, "scores": {"0": 0.2, "1": 0.8}}
                for item in items]})
        return httpx.Response(200, json={"accepted": len(items), "prediction_ids": [i["prediction_id"] for i in items]})

    def sizes(self) -> list[int]:
        return [len(json.loads(r.content)["items"]) for r in self.requests]


def client_for(server: Callable[[httpx.Request], httpx.Response], sleeps: list[float] | None = None,
               **kwargs) -> DriftpilotClient:
    counter = iter(range(1_000_000))
    return DriftpilotClient(URL, transport=httpx.MockTransport(server),
                            sleep=(sleeps.append if sleeps is not None else _no_sleep),
                            jitter=random.Random(0).random, new_id=lambda: f"gen-{next(counter)}", **kwargs)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"the client slept {seconds} s where no retry was expected")


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"features": {"x1": float(i)}, "prediction": i % 2} for i in range(start, start + n)]


# ---------------------------------------------------------------------------------------------------- retries


def test_backoff_doubles_with_half_of_each_step_jittered_and_is_capped() -> None:
    policy = RetryPolicy(retries=6, backoff=0.5, max_backoff=4.0)
    assert [policy.delay(n, jitter=0.0) for n in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert [policy.delay(n, jitter=0.999) for n in range(6)] == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0, 4.0],
                                                                               abs=0.01)
    # A server's Retry-After is a floor, capped like the rest.
    assert policy.delay(0, jitter=0.0, retry_after=3.0) == 3.0
    assert policy.delay(0, jitter=0.0, retry_after=600) == 4.0
    with pytest.raises(ValueError, match="must be >= 0"):
        RetryPolicy(retries=-1)


@pytest.mark.parametrize("status, retried", [(429, True), (500, True), (502, True), (503, True), (504, True),
                                             (400, False), (401, False), (404, False), (409, False), (413, False),
                                             (422, False)])
def test_which_statuses_are_retried(status: int, retried: bool) -> None:
    assert retryable(status) is retried


def test_connection_errors_and_5xx_are_retried_with_the_same_bytes_and_seeded_backoff() -> None:
    server = FakeServer([httpx.ConnectError("refused"), httpx.ReadError("reset"),
                         httpx.RemoteProtocolError("Server disconnected without sending a response."),
                         httpx.ReadTimeout("slow"), 503])
    sleeps: list[float] = []
    with client_for(server, sleeps, retries=5, backoff=0.5) as client:
        ids = client.log_predictions("m", rows(3))
    assert ids == ["gen-0", "gen-1", "gen-2"]
    assert len(server.requests) == 6
    # The ids are fixed before the first attempt: every retry re-sends the very same body, so a stored one is a no-op.
    assert len({r.content for r in server.requests}) == 1
    jitter = random.Random(0)
    assert sleeps == [RetryPolicy(5, 0.5).delay(n, jitter.random()) for n in range(5)]
    assert sleeps == pytest.approx([0.461, 0.879, 1.421, 2.518, 6.045], abs=0.001)


def test_retry_after_of_a_429_is_honoured() -> None:
    server = FakeServer([httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "slow down"})])
    sleeps: list[float] = []
    with client_for(server, sleeps, max_backoff=30) as client:
        client.log_labels("m", {"p1": 0})
    assert sleeps == [7.0]


def test_retries_exhausted_is_unavailable_naming_the_last_failure_and_what_was_stored() -> None:
    stored = FakeServer()

    def server(request: httpx.Request) -> httpx.Response:
        if not stored.requests:  # the first batch is stored; after it, the server is gone
            return stored(request)
        raise httpx.ConnectError("[Errno 111] Connection refused")

    sleeps: list[float] = []
    with client_for(server, sleeps, retries=2, batch_size=2) as client, pytest.raises(Unavailable) as caught:
        client.log_predictions("m", rows(5))
    exc = caught.value
    assert exc.attempts == 3 and len(sleeps) == 2
    assert exc.stored == 2  # items 0-1 were stored; from item 2 on, not known
    assert exc.prediction_ids == ["gen-0", "gen-1", "gen-2", "gen-3", "gen-4"]
    assert "failed 3 time(s); the last: ConnectError: [Errno 111] Connection refused" in str(exc)
    assert "Re-sending the same items is safe" in str(exc)


def test_a_4xx_is_not_retried() -> None:
    server = FakeServer([httpx.Response(422, json={"error": "invalid batch; nothing was stored", "problems": [
        {"index": 1, "field": "features.x1", "problem": "expected a number, got a string 'a'"}]})])
    with client_for(server) as client, pytest.raises(ValidationFailed):
        client.log_predictions("m", rows(3))
    assert len(server.requests) == 1


# ---------------------------------------------------------------------------------------------------- batching


def test_batches_follow_batch_size_and_keep_the_order_and_the_given_ids() -> None:
    server = FakeServer()
    items = rows(2500)
    items[7]["prediction_id"] = "mine-7"
    with client_for(server, batch_size=1000) as client:
        ids = client.log_predictions("m", items)
    assert server.sizes() == [1000, 1000, 500]
    assert ids[7] == "mine-7" and ids[:2] == ["gen-0", "gen-1"] and len(set(ids)) == 2500
    sent = [item["prediction_id"] for r in server.requests for item in json.loads(r.content)["items"]]
    assert sent == ids
    assert "prediction_id" not in items[0]  # the caller's items are not modified


def test_a_413_naming_the_item_limit_splits_to_it_and_is_remembered_per_model() -> None:
    server = FakeServer(limit=300)
    with client_for(server) as client:
        receipt = client.log_labels("m", [{"prediction_id": f"p{i}", "label": 1} for i in range(700)])
        assert server.sizes() == [700, 300, 300, 100]
        assert receipt.accepted == receipt.inserted == 700
        server.requests.clear()
        client.log_predictions("m", rows(400))
        assert server.sizes() == [300, 100]  # no second 413 for this model
        server.requests.clear()
        client.log_predictions("other", rows(400))
        assert server.sizes() == [400, 300, 100]


def test_a_body_over_the_byte_limit_is_halved_until_it_fits_and_one_oversize_item_is_payload_too_large() -> None:
    server = FakeServer(body_limit=2000)
    with client_for(server) as client:
        client.log_predictions("m", rows(100))
        assert server.sizes() == [100, 50, 25, 25, 25, 25]  # 413, 413, then 25 items fit in 2,000 bytes
        huge = rows(3)
        huge[2]["features"] = {"x1": 1.0, "text": "x" * 5000}
        with pytest.raises(PayloadTooLarge) as caught:
            client.log_predictions("m2", huge)
    assert caught.value.stored == 2
    assert "item 2 alone is too large for the server" in str(caught.value)
    assert "api.max_body_bytes" in str(caught.value)


def test_predict_one_row_gives_one_prediction_and_a_batch_a_list() -> None:
    server = FakeServer(limit=2)
    with client_for(server) as client:
        one = client.predict("m", {"x1": 1.0}, ids="row-1")
        assert one.prediction_id == "row-1" and one.prediction == 1 and one.model_version == "3"
        assert one.scores == {"0": 0.2, "1": 0.8}
        assert json.loads(server.requests[0].content) == {"items": [{"features": {"x1": 1.0},
                                                                     "prediction_id": "row-1"}]}
        many = client.predict("m", [{"x1": float(i)} for i in range(5)], entities=[{"user": "u"}] * 5)
        assert [p.prediction_id for p in many] == [f"gen-{i}" for i in range(5)]
        assert json.loads(server.requests[-1].content)["items"][0]["entities"] == {"user": "u"}
        assert client.predict("m", []) == []
        with pytest.raises(ValueError, match="one id 'a'; pass ids=\\[...\\]"):
            client.predict("m", [{"x1": 1.0}], ids="a")
        with pytest.raises(ValueError, match="2 rows, 1 ids"):
            client.predict("m", [{"x1": 1.0}, {"x1": 2.0}], ids=["a"])


def test_datetimes_and_numpy_values_are_sent_as_json() -> None:
    server = FakeServer()
    with client_for(server) as client:
        client.log_predictions("m", [{"features": {"x1": np.float32(1.5), "n": np.int64(3)},
                                      "prediction": np.int64(1), "event_time": datetime(2026, 1, 2, 3, tzinfo=UTC)}])
        item = json.loads(server.requests[0].content)["items"][0]
        assert item["features"] == {"x1": 1.5, "n": 3} and item["prediction"] == 1
        assert item["event_time"] == "2026-01-02T03:00:00+00:00"
        with pytest.raises(TypeError, match="cannot send object"):
            client.log_predictions("m", [{"features": {"x1": object()}, "prediction": 1}])


# ---------------------------------------------------------------------------------------------------- errors


def test_validation_problems_are_indexed_in_the_callers_items_and_say_what_was_stored() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["items"]
        if items[0]["prediction_id"] == "gen-0":
            return httpx.Response(200, json={"accepted": len(items), "prediction_ids": []})
        return httpx.Response(422, json={"error": "invalid batch; nothing was stored", "problems": [
            {"index": 1, "field": "features.x1", "problem": "expected a number, got a string 'a'"},
            {"index": None, "field": "body", "problem": "whole request"}]})

    with client_for(server, batch_size=4) as client, pytest.raises(ValidationFailed) as caught:
        client.log_predictions("m", rows(10))
    exc = caught.value
    assert exc.status == 422 and exc.stored == 4
    assert exc.problems == [Problem(5, "features.x1", "expected a number, got a string 'a'"),
                            Problem(None, "body", "whole request")]
    assert exc.prediction_ids == [f"gen-{i}" for i in range(10)]
    message = str(exc)
    assert "items 4-7 of 10 were refused, as a whole; items 0-3 were stored before." in message
    assert "item 5: features.x1: expected a number" in message and "request: body: whole request" in message


@pytest.mark.parametrize("status, error_type, hint", [
    (401, Unauthorized, "token=..."),
    (404, NotFound, "server http://driftpilot.test"),
    (409, Conflict, "overwrite"),
])
def test_statuses_map_to_typed_errors_with_the_servers_message(status: int, error_type: type, hint: str) -> None:
    server = FakeServer([httpx.Response(status, json={"error": "what the server said", "problems": []})])
    with client_for(server) as client, pytest.raises(error_type) as caught:
        client.log_labels("m", {"p": 1})
    assert "what the server said" in str(caught.value) and hint in str(caught.value)
    assert caught.value.status == status and caught.value.error == "what the server said"


def test_a_non_json_error_page_still_gives_a_typed_error() -> None:
    server = FakeServer([httpx.Response(404, text="<html>nginx: not found</html>")])
    with client_for(server) as client, pytest.raises(NotFound, match="nginx: not found"):
        client.stats("m")


def test_the_token_is_sent_as_a_bearer_header_and_the_model_name_is_quoted() -> None:
    server = FakeServer()
    with client_for(server, token="s3cret") as client:
        client.log_labels("a/b c", {"p": 1})
    assert server.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert server.requests[0].url.raw_path == b"/v1/models/a%2Fb%20c/labels"


def test_the_default_batch_limit_mirrors_the_servers_default() -> None:
    assert ApiConfig.model_fields["max_batch_items"].default == SERVER_MAX_BATCH_ITEMS


def test_importing_the_client_pulls_in_no_heavy_module() -> None:
    """An application logging predictions must not import River, MLflow, Evidently or the API's own stack."""
    heavy = ["river", "mlflow", "evidently", "sklearn", "pandas", "numpy", "scipy", "fastapi", "starlette",
             "sqlalchemy", "pydantic", "controller.api", "controller.config", "controller.store", "trainers",
             "monitors", "lineage"]
    code = ("import sys, controller.client\n"
            f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing controller.client imported: {done.stdout.strip()}"
    assert re.search(r"\bhttpx\b", (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0])
