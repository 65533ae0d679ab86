"""The operations views: liveness, readiness (stores and champions) and the Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.api.runtime import context
from controller.errors import StoreUnavailable


def healthz() -> Any:
    """The process is up (does not touch the database)."""
    return {"status": "ok"}


def readyz(request: Request) -> Any:
    """Every model's event store answers, and every model whose policy sets ``serving.require_champion`` has a
    champion loaded (so a load balancer never routes /predict to a replica that would answer 503). ``served``
    (models with a race) says what this process serves: the champion version, and the racer, label seq and age
    in seconds of the live state continuing it (null while the registered version serves)."""
    api = context(request)
    problems, serving, live = {}, {}, {}
    now = api.clock.now()
    for name, rt in api.runtimes.items():
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
    return {"status": "ready", "models": sorted(api.runtimes), "champions": serving, **extra}


def prometheus(request: Request) -> Response:
    return Response(generate_latest(context(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
