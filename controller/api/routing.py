"""The shape of the route table: a :class:`Route` per URL, and how a request path is matched against the table.

The table itself is :data:`controller.api.routes.ROUTES`. ``create_app`` registers each of its routes with FastAPI,
and :class:`controller.api.admission.Admission` matches each request against the same table before the body is read,
so both always agree on which URLs exist, which write which kind of event and which need a token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Any

from starlette.types import Scope

# The kinds of events the write routes take, as the event counters (driftpilot_events_*) label them.
PREDICTION = "prediction"
LABEL = "label"
EVENT = "event"

# Every path below this one names a model: an unknown one is 404 whatever follows it.
MODEL_PATH = "/v1/models/{model}"

# Where Admission leaves the route it matched in the request's scope, for the latency metric and the counters.
ROUTE_KEY = "driftpilot.route"


class Guard(Enum):
    """Whose bearer token a write route needs; Admission checks it before a byte of the body is read."""

    OPEN = "open"  # no token
    MODEL = "model"  # the token of the model named in the path, when its policy sets api.token_env
    EVENT_CONSUMER = "event_consumer"  # the token of any model whose stream views consume raw events, if one has one


@dataclass(frozen=True)
class Route:
    """One URL of the API: its path template, view, method, what it writes, who may call it, and its OpenAPI entry."""

    path: str
    endpoint: Callable[..., Any]
    method: str = "GET"
    kind: str | None = None  # the events it writes (PREDICTION, LABEL, EVENT); None: it writes none
    guard: Guard = Guard.OPEN
    tags: tuple[str, ...] = ()
    responses: Mapping[int | str, dict[str, Any]] | None = None
    include_in_schema: bool = True

    @cached_property
    def segments(self) -> list[str]:
        return split_path(self.path)


def split_path(path: str) -> list[str]:
    """A path as Admission compares it: its segments, leading and trailing slashes ignored."""
    return path.strip("/").split("/")


def match(routes: Sequence[Route], parts: Sequence[str]) -> Route | None:
    """The route whose template fits the path ``parts`` (any method), or None."""
    for route in routes:
        if len(route.segments) == len(parts) and all(
                seg == part or seg.startswith("{") for seg, part in zip(route.segments, parts, strict=True)):
            return route
    return None


MODEL_SEGMENTS = split_path(MODEL_PATH)


def model_in(parts: Sequence[str]) -> str | None:
    """The model a path names (any path below :data:`MODEL_PATH`, routed or not), or None."""
    if len(parts) >= len(MODEL_SEGMENTS) and list(parts[:len(MODEL_SEGMENTS) - 1]) == MODEL_SEGMENTS[:-1]:
        return parts[len(MODEL_SEGMENTS) - 1]
    return None


def matched(scope: Scope) -> Route | None:
    """The route Admission matched for this request, or None (a path outside the table)."""
    return scope.get(ROUTE_KEY)
