"""The OpenAPI document (controller/api/responses.py): the endpoints and request schemas, and every status declared per
operation with its body schema.
"""

from __future__ import annotations

from tests.api.api_kit import Api


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
