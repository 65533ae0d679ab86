"""The HTTP API (FastAPI): ingest predictions and natural labels, report label statistics, health and metrics.

Build it with :func:`create_app` from already-opened :class:`ModelRuntime` objects; tests drive it in-process with
``fastapi.testclient.TestClient`` (no server, no port). ``driftpilot serve`` runs it under uvicorn.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.ingest import (
    EventBatch,
    Ingestor,
    LabelBatch,
    PredictionBatch,
    PredictRequest,
    problem_from_pydantic,
)
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
from controller.api.serving import ChampionHolder, NoChampion, Predictions, ServedModel
from controller.api.validation import check_features, check_prediction_id, check_unique_ids
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.errors import (
    InvalidBatch,
    LabelConflict,
    PredictionConflict,
    Problem,
    StoreUnavailable,
    UnknownModel,
)
from controller.features.events import EventIngress
from controller.features.lookup import FeatureServing, NoFeatureViews
from controller.store import EventStore, PredictionRecord

log = logging.getLogger("driftpilot.api")
# The routes under /v1/models/{model}/: the write ones need the model's token when it has one.
MODEL_ROUTES = {"predictions": True, "labels": True, "predict": True, "stats": False}


@dataclass
class ModelRuntime:
    """Everything the API needs for one model: its policy, store, champion and write token (None: no auth)."""

    policy: LoadedPolicy
    store: EventStore
    ingestor: Ingestor
    champion: ChampionHolder
    token: str | None = None
    # Feature views: the lookup/join of /predict (a null object without views) and the raw-event stream, if any.
    features: FeatureServing = field(default_factory=NoFeatureViews)
    events: Any = None

    @property
    def name(self) -> str:
        return self.policy.config.model


class ApiMetrics:
    """Prometheus metrics on a registry of the app's own, so two apps in one process never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter("driftpilot_events_accepted", "Events stored.", ["model", "kind"],
                                registry=self.registry)
        self.rejected = Counter("driftpilot_events_rejected",
                                "Events refused; a batch that does not parse counts as one event.",
                                ["model", "kind", "reason"], registry=self.registry)
        self.served = Counter("driftpilot_predictions_served", "Predictions served by /predict.",
                              ["model", "version"], registry=self.registry)
        self.latency = Histogram("driftpilot_request_seconds", "Request latency.", ["route", "method", "status"],
                                 registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5))


class ServedStateMetrics:
    """Gauges of the live state each model serves (a champion that keeps learning in service, published by the
    daemon), computed when scraped: a state's age grows between publishes without anything being set."""

    def __init__(self, runtimes: Mapping[str, ModelRuntime], clock: Clock) -> None:
        self.runtimes = runtimes
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        age = GaugeMetricFamily("driftpilot_served_state_age_seconds",
                                "Seconds since the live state this process serves was published (models whose "
                                "online champion keeps learning in service; absent while the registered version "
                                "serves).", labels=["model"])
        through = GaugeMetricFamily("driftpilot_served_state_through_seq",
                                    "Newest label seq the served live state learned.", labels=["model"])
        now = self.clock.now()
        for name, rt in self.runtimes.items():
            served = rt.champion.served
            if served is None or not served.live:
                continue
            info = served.describe(now)
            age.add_metric([name], info["age_s"])
            if served.through_seq is not None:
                through.add_metric([name], served.through_seq)
        yield age
        yield through


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
    app.state.runtimes = runtimes
    app.state.metrics = metrics
    metrics.registry.register(ServedStateMetrics(runtimes, clock))
    ingress = _event_ingress(runtimes, clock)
    app.add_middleware(Admission, runtimes=runtimes, metrics=metrics)
    app.add_middleware(RequestLatency, histogram=metrics.latency)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [problem_from_pydantic(err).to_dict() for err in exc.errors()]
        _count_rejection(request, "invalid")
        return error_response(422, "invalid batch; nothing was stored", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and request.method == "POST":
            # FastAPI's answer to a body it could not even decode (not UTF-8, an integer of more than 4300 digits,
            # nesting deeper than the parser allows): the same 422 as any other body that is not valid JSON.
            _count_rejection(request, "invalid")
            return error_response(422, "invalid batch; nothing was stored",
                                  [{"index": None, "field": "body",
                                    "problem": f"body is not valid JSON: {_undecodable(exc.__cause__)}"}])
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(exc.status_code, f"{detail}: {request.method} {request.url.path}; see /docs for the "
                                               "endpoints", headers=exc.headers)

    @app.exception_handler(InvalidBatch)
    async def _invalid_batch(request: Request, exc: InvalidBatch) -> JSONResponse:
        conflict = isinstance(exc, (LabelConflict, PredictionConflict))
        _count_rejection(request, "conflict" if conflict else "invalid")
        return error_response(409 if conflict else 422,
                              ("conflict with stored events" if conflict else "invalid batch") + "; nothing was stored",
                              [p.to_dict() for p in exc.problems])

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        _count_rejection(request, "store_unavailable")
        return error_response(503, str(exc))

    @app.exception_handler(UnknownModel)
    async def _unknown_model(request: Request, exc: UnknownModel) -> JSONResponse:
        return error_response(404, str(exc))

    @app.exception_handler(NoChampion)
    async def _no_champion(request: Request, exc: NoChampion) -> JSONResponse:
        return error_response(503, str(exc))

    def runtime(model: str) -> ModelRuntime:
        try:
            return runtimes[model]
        except KeyError:
            raise UnknownModel(model, list(runtimes)) from None

    def too_many(rt: ModelRuntime, kind: str, count: int) -> JSONResponse | None:
        limit = rt.policy.config.api.max_batch_items
        if count <= limit:
            return None
        metrics.rejected.labels(rt.name, kind, "too_large").inc(count)
        return error_response(413, f"batch of {count} items is over the limit of {limit} (api.max_batch_items); "
                                   "split it into smaller batches; nothing was stored")

    write_errors = (401, 404, 409, 413, 422, 503)

    @app.post("/v1/models/{model}/predictions", tags=["ingest"], responses=declared(PredictionsAccepted, *write_errors))
    def add_predictions(model: str, batch: PredictionBatch, request: Request) -> Any:
        """Store a batch of predictions made elsewhere (atomic: all stored, or none). Re-sending a stored
        prediction (same id, same content) is a no-op."""
        rt = runtime(model)
        request.state.batch_size = len(batch.items)
        if denied := too_many(rt, "prediction", len(batch.items)):
            return denied
        ids = rt.ingestor.add_predictions(batch.items)
        metrics.accepted.labels(model, "prediction").inc(len(ids))
        return {"accepted": len(ids), "prediction_ids": ids}

    @app.post("/v1/models/{model}/labels", tags=["ingest"], responses=declared(LabelsAccepted, *write_errors))
    def add_labels(model: str, batch: LabelBatch, request: Request) -> Any:
        """Store a batch of natural labels, joined to predictions by id (atomic: all stored, or none). Items apply
        in order: the same id twice with different labels needs ``overwrite: true`` on the later one."""
        rt = runtime(model)
        request.state.batch_size = len(batch.items)
        if denied := too_many(rt, "label", len(batch.items)):
            return denied
        receipt = rt.ingestor.add_labels(batch.items)
        metrics.accepted.labels(model, "label").inc(len(batch.items))
        return {"accepted": len(batch.items), **receipt.to_dict()}

    @app.post("/v1/models/{model}/predict", tags=["serving"], responses=declared(PredictResponse, *write_errors))
    def predict(model: str, body: PredictRequest, request: Request) -> Any:
        """Predict one row (``{"features": {...}}``) or a batch (``{"items": [...]}``) with the champion.

        Every prediction is logged to the store with its id and the version that made it, so natural labels can be
        joined later. All rows of one request are served by the same version, even during a hot swap. A retry with
        the same prediction ids is a no-op while the same version serves (409 once another version would answer; with
        a race, also once a newer live state of the champion answers differently). Rows served by a live state are
        logged under the registered version it continues.
        """
        rt = runtime(model)
        items = body.rows()
        request.state.batch_size = len(items)
        if denied := too_many(rt, "prediction", len(items)):
            return denied
        # Batch and near-real-time features looked up by entity key and joined (as sent without feature views).
        vectors, joined, join_problems = rt.features.join(items)
        refused = {p.index for p in join_problems}
        problems = check_unique_ids([item.prediction_id for item in items])
        for index, item in enumerate(items):
            if item.prediction_id is not None:
                problems += check_prediction_id(index, item.prediction_id)
            if index not in refused:
                problems += check_features(rt.policy.config, index, vectors[index])
        problems += join_problems
        if problems:
            raise InvalidBatch(problems)
        served = rt.champion.current  # one snapshot for the whole request
        result = _score(served, vectors, rt.policy.config.feature_types)
        records = [
            # event_time None: stamped by the store's clock, so a retry of the same request is a no-op. The vector
            # logged is the one served (request-time + joined features), so windows of logged rows are point-in-time.
            PredictionRecord(features=vector, event_time=None, prediction=value,
                             scores=result.scores[i] if result.scores is not None else None,
                             prediction_id=item.prediction_id, model_version=served.version, source="served")
            for i, (item, vector, value) in enumerate(zip(items, vectors, result.values, strict=True))
        ]
        ids = rt.store.add_predictions(model, records)
        metrics.served.labels(model, served.version).inc(len(ids))
        # Plain JSON types already: skip FastAPI's jsonable_encoder walk (1.4 ms at 100 rows).
        predictions = [
            {"prediction_id": pid, "prediction": value,
             "scores": result.scores[i] if result.scores is not None else None}
            for i, (pid, value) in enumerate(zip(ids, result.values, strict=True))
        ]
        for prediction, info in zip(predictions, joined, strict=True):
            if info is not None:
                prediction["features_served"] = info.to_dict()
        return JSONResponse({"model_version": served.version, "predictions": predictions})

    events_responses = declared(EventsAccepted, 401, 404, 413, 422, 503)
    events_responses[404] = {"model": ErrorBody, "description": "No loaded policy has a stream view (nothing "
                                                                "consumes raw events)."}
    events_responses[503] = {"model": ErrorBody, "description": "The raw-event stream (Redis) is unreachable; "
                                                                "nothing was appended."}

    @app.post("/v1/events", tags=["features"], responses=events_responses)
    def add_events(batch: EventBatch, request: Request) -> Any:
        """Append raw events for the stream views (near-real-time features) to their Redis Stream, in order (atomic
        check: all appended, or none). ``driftpilot stream`` folds them into per-entity rolling aggregates."""
        request.state.batch_size = len(batch.items)
        if ingress is None:
            return error_response(404, "no loaded policy has a stream view, so nothing consumes raw events; add a "
                                       "view of kind stream to feature_views, or send predictions to "
                                       "/v1/models/{model}/...")
        limit = min(rt.policy.config.api.max_batch_items for rt in runtimes.values() if rt.events is not None)
        if len(batch.items) > limit:
            return error_response(413, f"batch of {len(batch.items)} events is over the limit of {limit} "
                                       "(api.max_batch_items); split it; nothing was appended")
        items = [(item.event_time, item.data) for item in batch.items]
        if problems := ingress.check(items):
            raise InvalidBatch(problems)
        ids = ingress.append(items)
        metrics.accepted.labels("events", "event").inc(len(ids))
        return {"accepted": len(ids), "event_ids": ids}

    @app.get("/v1/models/{model}/stats", tags=["monitoring"], responses=declared(StatsBody, 404, 503))
    def stats(model: str) -> Any:
        """Predictions (served / logged / batch, apart from bootstrap reference rows), labeled, coverage, pending,
        unmatched labels and label-delay percentiles (seconds), as of now."""
        rt = runtime(model)
        return rt.store.label_stats(model, clock.now()).to_dict()

    @app.get("/healthz", tags=["operations"], responses={200: {"model": HealthBody, "description": "Up."}})
    def healthz() -> Any:
        """The process is up (does not touch the database)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"],
             responses={200: {"model": ReadyBody, "description": "Ready."},
                        503: {"model": NotReadyBody, "description": "A store is unreachable or a required champion "
                                                                    "is not loaded; `problems` names each model."}})
    def readyz() -> Any:
        """Every model's event store answers, and every model whose policy sets ``serving.require_champion`` has a
        champion loaded (so a load balancer never routes /predict to a replica that would answer 503). ``served``
        (models with a race) says what this process serves: the champion version, and the racer, label seq and age
        in seconds of the live state continuing it (null while the registered version serves)."""
        problems, serving, live = {}, {}, {}
        now = clock.now()
        for name, rt in runtimes.items():
            serving[name] = rt.champion.serving_version
            if rt.policy.config.race is not None:
                served = rt.champion.served
                live[name] = served.describe(now) if served is not None else None
            try:
                rt.store.ping()
            except StoreUnavailable as exc:
                problems[name] = str(exc)
                continue
            if serving[name] is None and rt.policy.config.serving.require_champion:
                problems[name] = "no champion loaded yet (serving.require_champion is true)"
        extra = {"served": live} if live else {}
        if problems:
            return JSONResponse(status_code=503, content={"status": "unavailable", "problems": problems,
                                                          "champions": serving, **extra})
        return {"status": "ready", "models": sorted(runtimes), "champions": serving, **extra}

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document without its default 422 (``HTTPValidationError``): this API never sends that body, and
        an operation without a body (stats) cannot fail validation at all."""
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

    def _count_rejection(request: Request, reason: str) -> None:
        model = request.path_params.get("model", "unknown")
        if model not in runtimes:
            return
        kind = "label" if request.url.path.endswith("/labels") else "prediction"
        metrics.rejected.labels(model, kind, reason).inc(getattr(request.state, "batch_size", 1))

    return app


def _event_ingress(runtimes: Mapping[str, ModelRuntime], clock: Clock) -> EventIngress | None:
    """The raw-event endpoint's checks and streams: every stream view of the loaded policies, one append per distinct
    stream (models sharing a stream get each event once). None: nothing consumes raw events."""
    consumers = [rt for rt in runtimes.values() if rt.events is not None]
    if not consumers:
        return None
    streams = {(rt.events.url, rt.events.stream): rt.events for rt in consumers}
    views = [v for rt in consumers for v in rt.policy.config.feature_views.stream_views]
    return EventIngress(views, list(streams.values()), clock)


def _score(served: ServedModel, rows: Sequence[Mapping[str, Any]], feature_types: Mapping[str, str]
           ) -> Predictions:
    """The champion's predictions for validated rows, or 422 naming the rows it cannot score.

    A value the schema allows can still be beyond a model (1e308 and -1e308 in one row make a linear model's score
    NaN; an allowed infinity makes scikit-learn refuse the row). Such rows are refused, never answered with NaN or a
    500. A champion that cannot score even a plain row (zeros, missing categories) is broken, not the request: that
    stays a server error, as does a batch failure that no single row reproduces.
    """
    rows = list(rows)
    try:
        with np.errstate(all="ignore"):  # overflow is expected here and checked below, not a warning per request
            result = served.predictor.predict_rows(rows)
    except (ValueError, ArithmeticError) as exc:
        plain_row = {name: {"numeric": 0.0, "boolean": False}.get(kind) for name, kind in feature_types.items()}
        if _fails(served, plain_row) is not None:
            raise  # the champion fails whatever it is sent
        problems = [Problem(index, "features", f"the champion (version {served.version}) cannot score this row: "
                                               f"{reason}")
                    for index, row in enumerate(rows) if (reason := _fails(served, row)) is not None]
        if not problems:
            raise
        log.info("refused %d row(s) the champion cannot score: %s", len(problems), _first_line(exc))
        raise InvalidBatch(problems) from exc
    problems = [
        Problem(index, "features", f"the champion (version {served.version}) gives no finite prediction for this row "
                                   "(its values are beyond what the model can score); send values in the range of "
                                   "the training data")
        for index, value in enumerate(result.values)
        if not _finite(value) or (result.scores is not None and not all(map(_finite, result.scores[index].values())))
    ]
    if problems:
        raise InvalidBatch(problems)
    return result


def _fails(served: ServedModel, row: Mapping[str, Any]) -> str | None:
    """Why the champion cannot score ``row`` alone, or None when it can."""
    try:
        with np.errstate(all="ignore"):
            served.predictor.predict_rows([row])
    except (ValueError, ArithmeticError) as exc:
        return _first_line(exc)
    return None


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _first_line(exc: BaseException) -> str:
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
    return _first_line(cause)


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


def _token_ok(rt: ModelRuntime, authorization: str) -> bool:
    if rt.token is None:
        return True
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), rt.token.encode())


class RequestLatency:
    """Observe each request's latency by route template (pure ASGI: no extra task or body wrapping per request)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # A request refused by Admission never reached the router; Admission names its route template.
            route = getattr(scope.get("route"), "path", None) or scope.get(ROUTE_KEY, "unmatched")
            self.histogram.labels(route, scope["method"], str(status)).observe(time.perf_counter() - started)


ROUTE_KEY = "driftpilot.route"


class Admission:
    """The cheap checks, in order, before the app parses a byte of the body: an unknown model (404), a missing or
    wrong bearer token on a write endpoint (401), a body over the model's ``api.max_body_bytes`` (413; Content-Length
    is checked up front, streamed chunks are counted). So an unauthenticated caller never gets hints about a body,
    and a request for a model that does not exist is told so whatever its body holds.
    """

    def __init__(self, app: ASGIApp, runtimes: Mapping[str, ModelRuntime], metrics: ApiMetrics) -> None:
        self.app = app
        self.runtimes = runtimes
        self.metrics = metrics
        self.default = max((rt.policy.config.api.max_body_bytes for rt in runtimes.values()),
                           default=16 * 1024 * 1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parts = scope["path"].strip("/").split("/")
        rt = None
        if len(parts) >= 3 and parts[0] == "v1" and parts[1] == "models":
            if len(parts) == 4 and parts[3] in MODEL_ROUTES:
                scope[ROUTE_KEY] = f"/v1/models/{{model}}/{parts[3]}"
            rt = self.runtimes.get(parts[2])
            if rt is None:
                await error_response(404, str(UnknownModel(parts[2], list(self.runtimes))))(scope, receive, send)
                return
            if len(parts) == 4 and MODEL_ROUTES.get(parts[3]) and scope["method"] == "POST":
                headers = dict(scope.get("headers", []))
                if not _token_ok(rt, headers.get(b"authorization", b"").decode("latin-1")):
                    kind = "label" if parts[3] == "labels" else "prediction"
                    self.metrics.rejected.labels(rt.name, kind, "unauthorized").inc()
                    await error_response(
                        401, "this endpoint needs 'Authorization: Bearer <token>' with the token from "
                             f"${rt.policy.config.api.token_env}; nothing was stored",
                        headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                    return
        if parts == ["v1", "events"] and scope["method"] == "POST":
            tokens = [r.token for r in self.runtimes.values() if r.events is not None and r.token is not None]
            authorization = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            scheme, _, given = authorization.partition(" ")
            if tokens and not (scheme.lower() == "bearer"
                               and any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens)):
                await error_response(
                    401, "this endpoint needs 'Authorization: Bearer <token>' with the token of a model whose stream "
                         "views consume the events; nothing was appended",
                    headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = rt.policy.config.api.max_body_bytes if rt is not None else self.default
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        if declared is not None:
            await self.app(scope, receive, send)  # the server enforces Content-Length itself
            return
        # No Content-Length (chunked): read up to the limit before the app sees a byte, then replay it.
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = message.get("more_body", False)
            if seen > limit:
                await _too_large(limit)(scope, receive, send)
                return
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return error_response(413, f"request body is over the limit of {limit} bytes (api.max_body_bytes); send smaller "
                               "batches; nothing was stored")
