"""What the API serves: each model's :class:`ModelRuntime`, and the :class:`ApiContext` of one app that every view,
the admission middleware and the error handlers reach (views through :func:`context`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from controller.api.ingest import Ingestor
from controller.api.serving import ChampionHolder
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.errors import UnknownModel
from controller.features.events import EventIngress
from controller.features.lookup import FeatureServing, NoFeatureViews
from controller.store import EventStore

if TYPE_CHECKING:
    from controller.api.metrics import ApiMetrics


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

    @property
    def batch_limit(self) -> int:
        """The most items one write request may carry (``api.max_batch_items``)."""
        return self.policy.config.api.max_batch_items


@dataclass
class ApiContext:
    """The models of one app, its clock and metrics, and the raw-event ingress (None: nothing consumes raw events)."""

    runtimes: Mapping[str, ModelRuntime]
    clock: Clock
    metrics: ApiMetrics
    ingress: EventIngress | None = None

    @classmethod
    def open(cls, runtimes: Mapping[str, ModelRuntime], clock: Clock, metrics: ApiMetrics) -> ApiContext:
        api = cls(runtimes, clock, metrics)
        api.ingress = event_ingress(api.event_consumers, clock)
        return api

    def runtime(self, model: str) -> ModelRuntime:
        try:
            return self.runtimes[model]
        except KeyError:
            raise UnknownModel(model, list(self.runtimes)) from None

    @property
    def event_consumers(self) -> list[ModelRuntime]:
        """The models whose stream views consume raw events (``POST /v1/events``)."""
        return [rt for rt in self.runtimes.values() if rt.events is not None]


def context(request: Request) -> ApiContext:
    """The context of the app serving ``request`` (``create_app`` keeps it in ``app.state.api``)."""
    return request.app.state.api


def event_ingress(consumers: Sequence[ModelRuntime], clock: Clock) -> EventIngress | None:
    """The raw-event endpoint's checks and streams: every stream view of the ``consumers`` (the models with one),
    one append per distinct stream (models sharing a stream get each event once). None: nothing consumes raw events."""
    if not consumers:
        return None
    streams = {(rt.events.url, rt.events.stream): rt.events for rt in consumers}
    views = [v for rt in consumers for v in rt.policy.config.feature_views.stream_views]
    return EventIngress(views, list(streams.values()), clock)
