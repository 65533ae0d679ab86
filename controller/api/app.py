"""The HTTP API (FastAPI): ingest predictions and natural labels, report label statistics, health and metrics.

Build it with :func:`create_app` from already-opened :class:`ModelRuntime` objects; tests drive it in-process with
``fastapi.testclient.TestClient`` (no server, no port). ``driftpilot serve`` runs it under uvicorn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from controller.api.admission import Admission
from controller.api.metrics import ApiMetrics, RequestLatency, ServedStateMetrics
from controller.api.refusals import install_handlers
from controller.api.routes import ROUTES
from controller.api.runtime import ApiContext, ModelRuntime
from controller.clock import Clock

__all__ = ["ApiMetrics", "ModelRuntime", "create_app"]


def create_app(runtimes: Mapping[str, ModelRuntime], clock: Clock, metrics: ApiMetrics | None = None) -> FastAPI:
    """The API over ``runtimes``. Checks run cheapest first: unknown model (404), token (401), body size (413) in
    :class:`Admission` before a byte of the body is parsed, then the request shape and the items (422), then the
    store (409, 503). Every status an operation can return is declared in ``/openapi.json`` with its body."""
    metrics = metrics or ApiMetrics()
    app = FastAPI(
        title="driftpilot",
        summary="Predictions, natural labels and label statistics for the models driftpilot keeps fresh.",
        version="0.1.0",
    )
    app.state.api = api = ApiContext.open(runtimes, clock, metrics)
    metrics.registry.register(ServedStateMetrics(runtimes, clock))
    app.add_middleware(Admission, api=api, routes=ROUTES)
    app.add_middleware(RequestLatency, histogram=metrics.latency)
    install_handlers(app)
    for route in ROUTES:
        app.add_api_route(route.path, route.endpoint, methods=[route.method], tags=list(route.tags),
                          responses=dict(route.responses or {}), include_in_schema=route.include_in_schema)
    _trim_openapi(app)
    return app


def _trim_openapi(app: FastAPI) -> None:
    """FastAPI's document without its default 422 (``HTTPValidationError``): this API never sends that body, and an
    operation without a body (stats) cannot fail validation at all."""
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate_openapi()
            for operations in spec["paths"].values():
                for operation in operations.values():
                    schema = operation["responses"].get("422", {}).get("content", {}).get("application/json", {})
                    if schema.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                        del operation["responses"]["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                spec.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
