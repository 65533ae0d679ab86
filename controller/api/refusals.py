"""How the API refuses a request: the error body (:func:`error_response`), the batch limit of the write routes
(:func:`admit_batch`), and the exception handlers that turn what the views raise into statuses and count the refused
events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.api.ingest import problem_from_pydantic
from controller.api.routing import matched
from controller.api.runtime import context
from controller.api.serving import NoChampion
from controller.errors import InvalidBatch, LabelConflict, PredictionConflict, StoreUnavailable, UnknownModel


def error_response(status: int, error: str, problems: list[dict[str, Any]] | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error body (``{"error"}``, plus ``problems`` for 409/422) that always renders: the problems may echo text
    the client sent (a lone surrogate cannot be encoded as UTF-8), so such text is shown escaped."""
    content: dict[str, Any] = {"error": error}
    if problems is not None:
        content["problems"] = problems
    try:
        return JSONResponse(status_code=status, content=content, headers=headers)
    except UnicodeEncodeError:
        return JSONResponse(status_code=status, content=_escaped(content), headers=headers)


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


class BatchTooLarge(Exception):
    """A write request with more items than ``api.max_batch_items`` allows (413)."""


def admit_batch(request: Request, count: int, limit: int, *, items: str = "items",
                advice: str = "split it into smaller batches; nothing was stored") -> None:
    """The batch limit of every write route: note the batch's size (the refused-event counters count it), and refuse
    a batch of more than ``limit`` items."""
    request.state.batch_size = count
    if count > limit:
        raise BatchTooLarge(f"batch of {count} {items} is over the limit of {limit} (api.max_batch_items); {advice}")


def count_rejection(request: Request, reason: str) -> None:
    """Count a refused batch (its size, or one when it did not parse) by model and by the kind its route writes."""
    route = matched(request.scope)
    api = context(request)
    model = request.path_params.get("model")
    if route is None or route.kind is None or model not in api.runtimes:
        return
    api.metrics.rejected.labels(model, route.kind, reason).inc(getattr(request.state, "batch_size", 1))


def install_handlers(app: FastAPI) -> None:
    """The app's answers to what its views and FastAPI raise."""
    handlers: dict[type[Exception], Any] = {
        RequestValidationError: _invalid_request, StarletteHTTPException: _http_error, InvalidBatch: _invalid_batch,
        BatchTooLarge: _too_large, StoreUnavailable: _store_down, UnknownModel: _unknown_model,
        NoChampion: _no_champion,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [problem_from_pydantic(err).to_dict() for err in exc.errors()]
    count_rejection(request, "invalid")
    return error_response(422, "invalid batch; nothing was stored", problems)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and request.method == "POST":
        # FastAPI's answer to a body it could not even decode (not UTF-8, an integer of more than 4300 digits,
        # nesting deeper than the parser allows): the same 422 as any other body that is not valid JSON.
        count_rejection(request, "invalid")
        return error_response(422, "invalid batch; nothing was stored",
                              [{"index": None, "field": "body",
                                "problem": f"body is not valid JSON: {_undecodable(exc.__cause__)}"}])
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return error_response(exc.status_code, f"{detail}: {request.method} {request.url.path}; see /docs for the "
                                           "endpoints", headers=exc.headers)


async def _invalid_batch(request: Request, exc: InvalidBatch) -> JSONResponse:
    conflict = isinstance(exc, (LabelConflict, PredictionConflict))
    count_rejection(request, "conflict" if conflict else "invalid")
    return error_response(409 if conflict else 422,
                          ("conflict with stored events" if conflict else "invalid batch") + "; nothing was stored",
                          [p.to_dict() for p in exc.problems])


async def _too_large(request: Request, exc: BatchTooLarge) -> JSONResponse:
    count_rejection(request, "too_large")
    return error_response(413, str(exc))


async def _store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
    count_rejection(request, "store_unavailable")
    return error_response(503, str(exc))


async def _unknown_model(request: Request, exc: UnknownModel) -> JSONResponse:
    return error_response(404, str(exc))


async def _no_champion(request: Request, exc: NoChampion) -> JSONResponse:
    return error_response(503, str(exc))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _undecodable(cause: BaseException | None) -> str:
    if cause is None:
        return "it could not be decoded"
    if isinstance(cause, UnicodeDecodeError):
        return f"it is not UTF-8 text ({cause.reason} at byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "it nests arrays or objects too deeply"
    if "integer string conversion" in str(cause):
        return "it holds an integer of more than 4300 digits, more than any feature or label can hold"
    return first_line(cause)
