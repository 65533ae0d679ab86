"""The API's route table: every URL with its view, in one list.

``create_app`` registers these routes (in this order, which is the order of ``/openapi.json``), and the admission
middleware matches requests against the same list (unknown model, token, body size), so a URL, the kind of events it
writes and the token it needs are declared once, here. The views live in one module per surface (the OpenAPI tags).
"""

from __future__ import annotations

from typing import Any

from controller.api.responses import (
    ErrorBody,
    EventsAccepted,
    HealthBody,
    LabelsAccepted,
    NotReadyBody,
    PredictionsAccepted,
    PredictResponse,
    ReadyBody,
    StatsBody,
    declared,
)
from controller.api.routes import features, ingest, monitoring, operations, serving
from controller.api.routing import EVENT, LABEL, MODEL_PATH, PREDICTION, Guard, Route

WRITE_ERRORS = (401, 404, 409, 413, 422, 503)


def _events_responses() -> dict[int | str, dict[str, Any]]:
    responses = declared(EventsAccepted, 401, 404, 413, 422, 503)
    responses[404] = {"model": ErrorBody, "description": "No loaded policy has a stream view (nothing consumes raw "
                                                         "events)."}
    responses[503] = {"model": ErrorBody, "description": "The raw-event stream (Redis) is unreachable; nothing was "
                                                         "appended."}
    return responses


ROUTES: tuple[Route, ...] = (
    Route(f"{MODEL_PATH}/predictions", ingest.add_predictions, "POST", kind=PREDICTION, guard=Guard.MODEL,
          tags=("ingest",), responses=declared(PredictionsAccepted, *WRITE_ERRORS)),
    Route(f"{MODEL_PATH}/labels", ingest.add_labels, "POST", kind=LABEL, guard=Guard.MODEL,
          tags=("ingest",), responses=declared(LabelsAccepted, *WRITE_ERRORS)),
    Route(f"{MODEL_PATH}/predict", serving.predict, "POST", kind=PREDICTION, guard=Guard.MODEL,
          tags=("serving",), responses=declared(PredictResponse, *WRITE_ERRORS)),
    Route("/v1/events", features.add_events, "POST", kind=EVENT, guard=Guard.EVENT_CONSUMER,
          tags=("features",), responses=_events_responses()),
    Route(f"{MODEL_PATH}/stats", monitoring.stats, "GET",
          tags=("monitoring",), responses=declared(StatsBody, 404, 503)),
    Route("/healthz", operations.healthz, "GET",
          tags=("operations",), responses={200: {"model": HealthBody, "description": "Up."}}),
    Route("/readyz", operations.readyz, "GET",
          tags=("operations",), responses={200: {"model": ReadyBody, "description": "Ready."},
                                           503: {"model": NotReadyBody,
                                                 "description": "A store is unreachable or a required champion is not "
                                                                "loaded; `problems` names each model."}}),
    Route("/metrics", operations.prometheus, "GET", tags=("operations",), include_in_schema=False),
)
