"""The operations views (controller/api/routes/operations.py): /healthz stays up, /readyz names the store that does
not answer.
"""

from __future__ import annotations

from tests.api.api_kit import Api


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
