"""Wire a policy's feature views into the API and the CLI: open its online store and its raw-event stream."""

from __future__ import annotations

from typing import Any

from controller.clock import Clock
from controller.config import PolicyConfig
from controller.features.lookup import FeatureJoiner
from controller.features.online_store import OnlineStore, open_online_store


def event_group(policy: PolicyConfig) -> str:
    events = policy.feature_views.events
    return (events.group if events is not None and events.group else None) or f"driftpilot-{policy.model}"


def open_event_stream(policy: PolicyConfig) -> Any:
    """The policy's raw-event stream (``redis_adapter.RedisEventStream``); the policy must have ``events``."""
    from controller.features.redis_adapter import RedisEventStream

    views = policy.feature_views
    assert views.events is not None, "open_event_stream needs feature_views.events"
    return RedisEventStream(views.events_url, views.events.stream, event_group(policy))


def open_store(policy: PolicyConfig) -> OnlineStore:
    return open_online_store(policy.feature_views.online_store)


def attach_feature_views(runtime: Any, clock: Clock, store: OnlineStore | None = None) -> None:
    """Give an API ``ModelRuntime`` its lookup/join (and, with stream views, the raw-event stream to append to)."""
    policy = runtime.policy.config
    runtime.features = FeatureJoiner(policy.feature_views, store or open_store(policy), clock)
    if policy.feature_views.stream_views:
        runtime.events = open_event_stream(policy)
