"""The admission middleware: the cheap checks that run before the app parses a byte of a request's body, driven by
the same route table the app registers (:data:`controller.api.routes.ROUTES`)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.refusals import error_response
from controller.api.routing import ROUTE_KEY, Guard, Route, match, model_in, split_path
from controller.api.runtime import ApiContext, ModelRuntime
from controller.config import ApiConfig
from controller.errors import UnknownModel


def bearer_ok(authorization: str, tokens: Sequence[str]) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <one of tokens>`` (compared in constant time)."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens)


class Admission:
    """The cheap checks, in order, before the app parses a byte of the body: an unknown model (404), a missing or
    wrong bearer token on a write endpoint (401), a body over the model's ``api.max_body_bytes`` (413; Content-Length
    is checked up front, streamed chunks are counted). So an unauthenticated caller never gets hints about a body,
    and a request for a model that does not exist is told so whatever its body holds.

    It matches each request against the route table once and leaves the route in the scope (``ROUTE_KEY``), for the
    latency metric and the refused-event counters.
    """

    def __init__(self, app: ASGIApp, api: ApiContext, routes: Sequence[Route]) -> None:
        self.app = app
        self.api = api
        self.routes = routes
        self.default = max((rt.policy.config.api.max_body_bytes for rt in api.runtimes.values()),
                           default=ApiConfig.model_fields["max_body_bytes"].default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parts = split_path(scope["path"])
        route = match(self.routes, parts)
        if route is not None:
            scope[ROUTE_KEY] = route
        rt = None
        if (model := model_in(parts)) is not None:
            rt = self.api.runtimes.get(model)
            if rt is None:
                await error_response(404, str(UnknownModel(model, list(self.api.runtimes))))(scope, receive, send)
                return
        headers = dict(scope.get("headers", []))
        if route is not None and not self._authorized(route, rt, scope["method"], headers):
            await self._unauthorized(route, rt)(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        await self._limit_body(rt, headers.get(b"content-length"), scope, receive, send)

    def _authorized(self, route: Route, rt: ModelRuntime | None, method: str, headers: dict[bytes, bytes]) -> bool:
        """Whether the route lets this request through: its guard's tokens (if any) hold the one it presents."""
        if route.guard is Guard.OPEN or method != route.method:
            return True
        if route.guard is Guard.MODEL:
            tokens = [rt.token] if rt is not None and rt.token is not None else []
        else:
            tokens = [r.token for r in self.api.event_consumers if r.token is not None]
        return not tokens or bearer_ok(headers.get(b"authorization", b"").decode("latin-1"), tokens)

    def _unauthorized(self, route: Route, rt: ModelRuntime | None) -> ASGIApp:
        if rt is not None and route.kind is not None:
            self.api.metrics.rejected.labels(rt.name, route.kind, "unauthorized").inc()
        if route.guard is Guard.MODEL and rt is not None:
            whose, outcome = f"the token from ${rt.policy.config.api.token_env}", "stored"
        else:
            whose, outcome = "the token of a model whose stream views consume the events", "appended"
        return error_response(401, f"this endpoint needs 'Authorization: Bearer <token>' with {whose}; nothing was "
                                   f"{outcome}", headers={"WWW-Authenticate": "Bearer"})

    async def _limit_body(self, rt: ModelRuntime | None, declared: bytes | None, scope: Scope, receive: Receive,
                          send: Send) -> None:
        limit = rt.policy.config.api.max_body_bytes if rt is not None else self.default
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


def _too_large(limit: int) -> ASGIApp:
    return error_response(413, f"request body is over the limit of {limit} bytes (api.max_body_bytes); send smaller "
                               "batches; nothing was stored")
