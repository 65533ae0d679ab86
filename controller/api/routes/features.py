"""The features view: raw events for the stream views (near-real-time features)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from controller.api.ingest import EventBatch
from controller.api.refusals import admit_batch, error_response
from controller.api.routing import EVENT
from controller.api.runtime import context
from controller.errors import InvalidBatch


def add_events(batch: EventBatch, request: Request) -> Any:
    """Append raw events for the stream views (near-real-time features) to their Redis Stream, in order (atomic
    check: all appended, or none). ``driftpilot stream`` folds them into per-entity rolling aggregates."""
    api = context(request)
    if api.ingress is None:
        return error_response(404, "no loaded policy has a stream view, so nothing consumes raw events; add a "
                                   "view of kind stream to feature_views, or send predictions to "
                                   "/v1/models/{model}/...")
    admit_batch(request, len(batch.items), min(rt.batch_limit for rt in api.event_consumers), items="events",
                advice="split it; nothing was appended")
    items = [(item.event_time, item.data) for item in batch.items]
    if problems := api.ingress.check(items):
        raise InvalidBatch(problems)
    ids = api.ingress.append(items)
    api.metrics.accepted.labels("events", EVENT).inc(len(ids))
    return {"accepted": len(ids), "event_ids": ids}
