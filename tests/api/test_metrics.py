"""The API's Prometheus metrics (controller/api/metrics.py): accepted and rejected events by kind and reason, and the
request latency histogram by route, method and status.
"""

from __future__ import annotations

from tests.api.api_kit import TOKEN, Api, item


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
