"""The policy's ``feature_views`` section: where /predict's batch and near-real-time features come from.

```yaml
features:                          # the model's input schema, as always
  amount: numeric                  # request-time: sent in the /predict request
  user_avg_amount_30d: numeric     # batch: materialized from a file or a SQL query
  user_txn_count_10m: numeric      # near-real-time: a rolling aggregate kept by `driftpilot stream`
feature_views:
  online_store: {url: "redis://127.0.0.1:6379/0"}        # or sqlite:///.driftpilot/features.db (the default)
  events: {url: "redis://127.0.0.1:6379/0", stream: driftpilot:events}   # raw events for stream views
  views:
    - name: user_profile
      kind: batch
      entity: user_id
      features: [user_avg_amount_30d]
      source: {path: examples/features/user_profile.csv}   # or {query: ..., url: ...}; see config/example-features.yaml
      refresh: {every: 1h}                                # or {cron: "0 * * * *"}; the daemon runs it
      max_age: 2d
    - name: user_activity
      kind: stream
      entity: user_id
      aggregates:
        - {name: user_txn_count_10m, agg: count, window: 10m}
      max_age: 1m
      on_missing: impute                                   # reject (the default) | impute
      defaults: {user_txn_count_10m: 0}
```

Every feature a view provides must be declared in ``features:`` (its type comes from there); a request sends the
request-time features and ``entities: {user_id: ...}``, never a view's features.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.loop.config import Duration, Schedule

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
AGGREGATES = ("count", "sum", "mean", "min", "max", "distinct")
#: Aggregates whose value over an empty window is known (0); the others are missing then.
ZERO_WHEN_EMPTY = ("count", "sum", "distinct")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnlineStoreConfig(_Strict):
    url: str = Field("sqlite:///.driftpilot/features.db",
                     description="redis://host:6379/0 (production) or sqlite:///path (the embedded default).")
    prefix: str = Field("driftpilot:", description="Redis key prefix (keys are <prefix>row:<view>:<entity key>).")

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://", "sqlite:///")):
            raise ValueError(f"unsupported online store URL {url!r}; use redis://127.0.0.1:6379/0 or "
                             "sqlite:///.driftpilot/features.db")
        return url


class EventsConfig(_Strict):
    """The Redis Stream of raw events that stream views consume (``POST /v1/events`` appends to it)."""

    url: str | None = Field(None, description="Redis URL; default: the online store's, when that is Redis.")
    stream: str = Field("driftpilot:events", min_length=1, description="Key of the Redis Stream.")
    group: str | None = Field(None, description="Consumer group of `driftpilot stream`; default driftpilot-<model>.")
    batch_size: int = Field(1000, ge=1, le=100_000, description="Events read (and written back) per step.")
    block_ms: int = Field(200, ge=0, le=60_000, description="Milliseconds one read waits for new events.")
    checkpoint_every: int = Field(50_000, ge=1, description="Events between two checkpoints of the processor's "
                                                            "state (a restart replays the events since the last one).")

    @field_validator("url")
    @classmethod
    def _redis_only(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"events.url {url!r} is not a Redis URL; raw events travel on a Redis Stream "
                             "(redis://host:6379/0)")
        return url


class FileSource(_Strict):
    path: str = Field(description="CSV or Parquet file, relative to the working directory.")
    timestamp_column: str | None = Field(None, description="When each row's features were computed; default: the "
                                                           "time of materialization.")


class QuerySource(_Strict):
    query: str = Field(min_length=1, description="SELECT returning the entity column and the view's features.")
    url: str = Field(description="SQLAlchemy URL of the database, e.g. postgresql+psycopg://user@host/db.")
    timestamp_column: str | None = Field(None, description="When each row's features were computed; default: the "
                                                           "time of materialization.")


class _View(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN, description="Names the view in keys, logs and errors.")]
    entity: Annotated[str, Field(pattern=NAME_PATTERN,
                                 description="The entity key: a column of the source / a field of raw events, sent "
                                             "by /predict as entities.<name>.")]
    max_age: Duration = Field(description="Older features are stale (e.g. 1d for batch, 1m for stream views).")
    on_missing: Literal["reject", "impute"] = Field(
        "reject", description="No value for the entity: reject the request (422 naming the feature), or serve the "
                              "default.")
    on_stale: Literal["reject", "impute"] = Field(
        "reject", description="A value older than max_age: reject (422 naming the feature and its age), or serve the "
                              "default.")
    defaults: dict[str, float | bool | str] = Field(default_factory=dict,
                                                    description="Feature -> value served when imputing.")

    def feature_names(self) -> list[str]:
        raise NotImplementedError

    @model_validator(mode="after")
    def _defaults_cover_imputation(self) -> _View:
        names = self.feature_names()
        unknown = [k for k in self.defaults if k not in names]
        if unknown:
            raise ValueError(f"view {self.name!r}: defaults for {unknown}, which the view does not provide; its "
                             f"features are {names}")
        needed = []
        if self.on_missing == "impute":  # a stream view's count/sum/distinct of an entity without events is 0
            needed += [n for n in names if n not in self.defaults and not self._known_when_empty(n)]
        if self.on_stale == "impute":
            needed += [n for n in names if n not in self.defaults and n not in needed]
        if needed:
            raise ValueError(f"view {self.name!r} imputes (on_missing/on_stale: impute) but has no default for "
                             f"{needed}; add them to defaults, e.g. defaults: {{{needed[0]}: 0}}")
        return self

    def _known_when_empty(self, name: str) -> bool:
        return False


class BatchView(_View):
    """Precomputed features, loaded into the online store by ``driftpilot features materialize``."""

    kind: Literal["batch"]
    features: list[str] = Field(min_length=1, description="Columns of the source to serve (declared in features:).")
    source: FileSource | QuerySource
    refresh: Schedule | None = Field(None, description="When the daemon materializes the view: {every: 1h} or "
                                                       "{cron: '0 * * * *'}; none: only by hand.")

    def feature_names(self) -> list[str]:
        return list(self.features)


class Aggregate(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN, description="The feature it serves (declared in features:).")]
    agg: Literal["count", "sum", "mean", "min", "max", "distinct"]
    of: str | None = Field(None, description="The raw event's field aggregated (all but count).")
    window: Duration = Field(description="Event-time window, e.g. 10m, 1h, 1d.")

    @model_validator(mode="after")
    def _field_when_needed(self) -> Aggregate:
        if self.agg == "count" and self.of is not None:
            raise ValueError(f"aggregate {self.name!r}: count counts the entity's events; remove of: {self.of!r}")
        if self.agg != "count" and self.of is None:
            raise ValueError(f"aggregate {self.name!r}: {self.agg} needs the event field it aggregates, "
                             f"e.g. of: amount")
        return self


class StreamView(_View):
    """Rolling per-entity aggregates over raw events, kept by ``driftpilot stream``."""

    kind: Literal["stream"]
    aggregates: list[Aggregate] = Field(min_length=1)

    def feature_names(self) -> list[str]:
        return [a.name for a in self.aggregates]

    def _known_when_empty(self, name: str) -> bool:
        return any(a.name == name and a.agg in ZERO_WHEN_EMPTY for a in self.aggregates)

    @property
    def longest_window(self) -> timedelta:
        return max(a.window for a in self.aggregates)


FeatureView = Annotated[BatchView | StreamView, Field(discriminator="kind")]


class FeatureViewsConfig(_Strict):
    """Feature views of the model; none by default (requests send every feature)."""

    online_store: OnlineStoreConfig = OnlineStoreConfig()
    events: EventsConfig | None = Field(None, description="The raw-event stream; needed by stream views.")
    views: list[FeatureView] = Field(default_factory=list)

    @model_validator(mode="after")
    def _views_are_consistent(self) -> FeatureViewsConfig:
        names = [v.name for v in self.views]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"feature view names must be unique: {repeated}")
        provided: dict[str, str] = {}
        for view in self.views:
            for feature in view.feature_names():
                if feature in provided:
                    raise ValueError(f"feature {feature!r} is provided by views {provided[feature]!r} and "
                                     f"{view.name!r}; each feature comes from one view")
                provided[feature] = view.name
        if self.stream_views and self.events is None:
            raise ValueError(f"stream view(s) {[v.name for v in self.stream_views]} need the raw-event stream: add "
                             "feature_views.events: {url: redis://127.0.0.1:6379/0, stream: driftpilot:events}")
        if self.events is not None and self.events.url is None and not self.online_store.url.startswith("redis"):
            raise ValueError("feature_views.events.url is needed when the online store is not Redis (raw events "
                             "travel on a Redis Stream); set it, e.g. redis://127.0.0.1:6379/0")
        return self

    @property
    def batch_views(self) -> list[BatchView]:
        return [v for v in self.views if isinstance(v, BatchView)]

    @property
    def stream_views(self) -> list[StreamView]:
        return [v for v in self.views if isinstance(v, StreamView)]

    @property
    def events_url(self) -> str:
        assert self.events is not None
        return self.events.url or self.online_store.url

    def view(self, name: str) -> FeatureView:
        for view in self.views:
            if view.name == name:
                return view
        raise KeyError(f"no feature view {name!r}; the policy has {[v.name for v in self.views] or '(none)'}")

    def provider(self) -> dict[str, FeatureView]:
        """Feature name -> the view that provides it."""
        return {feature: view for view in self.views for feature in view.feature_names()}

    def check_against(self, feature_types: dict[str, str]) -> None:
        """Raise ValueError (a teaching one) when the views do not fit the model's ``features:``."""
        for i, view in enumerate(self.views):
            where = f"feature_views.views[{i}] ({view.name})"
            undeclared = [f for f in view.feature_names() if f not in feature_types]
            if undeclared:
                raise ValueError(f"{where}: {undeclared} not declared in features:; every feature a view serves is "
                                 f"part of the model's input schema, e.g. add `{undeclared[0]}: numeric` to features")
            if view.entity in feature_types:
                raise ValueError(f"{where}: the entity key {view.entity!r} is also a feature; /predict sends entity "
                                 "keys in entities:, not in features (rename one of them)")
            if isinstance(view, StreamView):
                wrong = [a.name for a in view.aggregates if feature_types[a.name] != "numeric"]
                if wrong:
                    raise ValueError(f"{where}: aggregates {wrong} are numbers; declare them numeric in features:")
            for feature, value in view.defaults.items():
                kind = feature_types[feature]
                ok = (isinstance(value, bool) if kind == "boolean" else isinstance(value, str) if kind == "categorical"
                      else isinstance(value, (int, float)) and not isinstance(value, bool))
                if not ok:
                    raise ValueError(f"{where}: default {value!r} of {feature!r} does not fit its type {kind}")


def parse_views(data: Any) -> FeatureViewsConfig:
    """For tests and tools: a ``feature_views`` section from plain data."""
    return FeatureViewsConfig.model_validate(data)
