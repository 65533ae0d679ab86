"""Open what the API needs for a set of policy files: one store per distinct URL, tokens from the environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from controller.api.app import ModelRuntime
from controller.api.ingest import Ingestor
from controller.api.serving import ChampionHolder, ChampionSource
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
                                                                      config.feature_types),
                                              token=token)
        if config.feature_views.views:
            from controller.features.serving import attach_feature_views

            attach_feature_views(runtimes[config.model], clock)
    return runtimes
