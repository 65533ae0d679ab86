"""Open what the API needs for a set of policy files: one store per distinct URL, tokens from the environment; and
the app of one worker process of ``driftpilot serve --workers N``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from controller.api.ingest import Ingestor
from controller.api.runtime import ModelRuntime
from controller.api.serving import ChampionHolder, ChampionSource, LiveState, NoLiveState, StoreLiveState
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.errors import ConfigError
from controller.store import EventStore


class NoRegistry:
    """A champion source with no versions: the API ingests events but /predict answers 503 until a champion exists."""

    def champion_version(self, name: str) -> str | None:
        return None

    def load_version(self, name: str, version: str) -> None:
        raise LookupError(f"no registry configured for {name!r}")


def build_runtimes(policies: Sequence[LoadedPolicy], clock: Clock,
                   environ: Mapping[str, str] | None = None,
                   champion_sources: Callable[[LoadedPolicy], ChampionSource] = lambda _: NoRegistry(),
                   ) -> dict[str, ModelRuntime]:
    """Open (and migrate) each policy's store; models sharing a storage URL share one store and its pool."""
    environ = os.environ if environ is None else environ
    stores: dict[str, EventStore] = {}
    runtimes: dict[str, ModelRuntime] = {}
    for loaded in policies:
        config = loaded.config
        if config.model in runtimes:
            raise ConfigError(str(loaded.path), [
                (f"{loaded.path}: model {config.model!r} is also defined by {runtimes[config.model].policy.path}; "
                "each model needs exactly one policy file")])
        token = None
        if config.api.token_env is not None:
            token = environ.get(config.api.token_env)
            if not token:
                raise ConfigError(str(loaded.path), [
                    (f"{loaded.path}: api.token_env names {config.api.token_env}, but that environment variable is "
                    "empty or not set; export the token, or remove api.token_env to run without authentication")])
        url = config.storage.url
        if url not in stores:
            stores[url] = EventStore.from_url(url, clock)
        store = stores[url]
        runtimes[config.model] = ModelRuntime(policy=loaded, store=store, ingestor=Ingestor(config, store, clock),
                                              champion=ChampionHolder(config.registered_model,
                                                                      champion_sources(loaded),
                                                                      config.feature_types,
                                                                      live=live_state(loaded, store)),
                                              token=token)
        if config.feature_views.views:
            from controller.features.serving import attach_feature_views

            attach_feature_views(runtimes[config.model], clock)
    return runtimes


def live_state(loaded: LoadedPolicy, store: EventStore) -> LiveState:
    """With a race, the champion's state continued in service reaches this process through the store (whether the
    daemon runs in this process or elsewhere: one path for both)."""
    config = loaded.config
    return StoreLiveState(store, config.model) if config.race is not None else NoLiveState()


def reload_interval(policies: Sequence[LoadedPolicy]) -> float:
    """Seconds between two refreshes of the champions: ``serving.reload_interval_s``, and at most one tick of a
    model with a race, so its live state reaches every API process at least once per tick."""
    intervals = [p.config.serving.reload_interval_s for p in policies]
    intervals += [p.config.loop.tick.total_seconds() for p in policies if p.config.race is not None]
    return min(intervals)


# `driftpilot serve --workers N` hands its worker processes the policy files and log level through this variable.
WORKERS_ENV = "DRIFTPILOT_SERVE_WORKER"


def serving_app(policies: Sequence[LoadedPolicy], clock: Clock) -> tuple[Any, Any]:
    """The API app for ``policies`` with champions loaded from their registries, and the (not yet started)
    ChampionWatcher that keeps them current: what one serving process runs."""
    from controller.actions.model_registry import RegistryChampionSource, open_registry
    from controller.api.app import create_app
    from controller.api.serving import ChampionWatcher

    runtimes = build_runtimes(
        policies, clock, champion_sources=lambda loaded: RegistryChampionSource(open_registry(loaded.config, clock)))
    log = logging.getLogger("driftpilot")
    for rt in runtimes.values():
        try:
            rt.champion.refresh()
        except Exception as exc:  # noqa: BLE001 - ingestion still works; /predict answers 503 until it loads
            log.warning("no champion loaded for %s yet: %s", rt.name, exc)
    watcher = ChampionWatcher({name: rt.champion for name, rt in runtimes.items()}, interval=reload_interval(policies))
    return create_app(runtimes, clock), watcher


def worker_app() -> Any:
    """The app of one worker process of ``driftpilot serve --workers N`` (uvicorn calls this factory in each
    process): the policies named by the parent, its own store connections, registry and champion watcher."""
    from controller.clock import SystemClock
    from controller.logs import configure
    from controller.policy_loader import load_policy

    spec = json.loads(os.environ[WORKERS_ENV])
    configure(spec["log_level"])
    app, watcher = serving_app([load_policy(Path(p)) for p in spec["config"]], SystemClock())
    watcher.start()
    return app
