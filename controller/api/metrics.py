"""The API's Prometheus metrics: event counters, request latency (:class:`RequestLatency`, a pure ASGI middleware) and
gauges of the state each model serves. ``GET /metrics`` renders them (controller/api/routes/operations.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.routing import matched
from controller.clock import Clock

if TYPE_CHECKING:
    from controller.api.runtime import ModelRuntime


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
            route = getattr(scope.get("route"), "path", None) or getattr(matched(scope), "path", "unmatched")
            self.histogram.labels(route, scope["method"], str(status)).observe(time.perf_counter() - started)
