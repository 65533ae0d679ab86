"""Join the batch and near-real-time features of /predict's rows: one online-store read per request.

A row brings its request-time features and ``entities`` (``{"user_id": "u-1"}``); every view's features are looked
up by the view's entity key and joined. A value older than the view's ``max_age`` is stale; a value the store does
not hold is missing; either is refused (a problem naming the feature, the entity and the age) or replaced by the
view's recorded default, as the view says. The joined vector is what the model sees and what the store logs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from controller.clock import Clock
from controller.errors import Problem
from controller.features.config import ZERO_WHEN_EMPTY, FeatureViewsConfig, StreamView
from controller.features.online_store import FeatureRecord, OnlineStore, meta_watermark

ENTITY_KEY_MAX = 128


@dataclass(frozen=True)
class Served:
    """What the views added to one row: the age of each view's values (seconds) and the features imputed."""

    ages: dict[str, float | None] = field(default_factory=dict)
    imputed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ages": self.ages, "imputed": self.imputed}


class RowIn(Protocol):
    features: dict[str, Any]
    entities: dict[str, Any] | None


class FeatureServing(Protocol):
    """/predict's feature step: the vectors to score and log, what was served, and the problems found."""

    def join(self, rows: Sequence[RowIn]) -> tuple[list[dict[str, Any]], list[Served | None], list[Problem]]: ...


class NoFeatureViews:
    """The null object of a model without feature views: rows are served as sent; entities are refused."""

    def join(self, rows: Sequence[RowIn]) -> tuple[list[dict[str, Any]], list[Served | None], list[Problem]]:
        problems = [Problem(index, "entities", "this model has no feature views, so entity keys are not used; send "
                                               "every feature in features, or add feature_views to its policy")
                    for index, row in enumerate(rows) if row.entities is not None]
        return [row.features for row in rows], [None] * len(rows), problems


class FeatureJoiner:
    """Looks up and joins the views of one model's policy (see the module doc)."""

    def __init__(self, config: FeatureViewsConfig, store: OnlineStore, clock: Clock) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.provider = config.provider()
        self.entities = sorted({v.entity for v in config.views})
        self._meta = [meta_watermark(v.name) for v in config.stream_views]

    def join(self, rows: Sequence[RowIn]) -> tuple[list[dict[str, Any]], list[Served | None], list[Problem]]:
        problems: list[Problem] = []
        keys: list[tuple[str, str]] = []
        wanted: list[dict[str, int] | None] = []  # per row: view -> index in keys (None: the row is refused)
        for index, row in enumerate(rows):
            refused = self._check_row(index, row)
            if refused:
                problems += refused
                wanted.append(None)
                continue
            entities = row.entities or {}
            slots = {}
            for view in self.config.views:
                slots[view.name] = len(keys)
                keys.append((view.name, str(entities[view.entity])))
            wanted.append(slots)
        records, meta = self.store.read(keys, self._meta) if keys else ([], {})
        now = self.clock.now().timestamp()
        vectors: list[dict[str, Any]] = []
        served: list[Served | None] = []
        for index, row in enumerate(rows):
            if wanted[index] is None:
                vectors.append(row.features)
                served.append(None)
                continue
            vector = dict(row.features)
            info = Served()
            for view in self.config.views:
                record = records[wanted[index][view.name]]
                problems += self._serve(index, view, str(row.entities[view.entity]), record, meta, now, vector, info)
            vectors.append(vector)
            served.append(info)
        return vectors, served, problems

    def _check_row(self, index: int, row: RowIn) -> list[Problem]:
        problems = []
        entities = row.entities or {}
        for name in entities:
            if name not in self.entities:
                problems.append(Problem(index, f"entities.{name}", f"unknown entity; the feature views are keyed by: "
                                                                   f"{', '.join(self.entities)}"))
        for name in self.entities:
            views = [v for v in self.config.views if v.entity == name]
            value = entities.get(name)
            if value is None:
                problems.append(Problem(index, f"entities.{name}",
                                        f"missing; feature view(s) {', '.join(v.name for v in views)} look up "
                                        f"{', '.join(f for v in views for f in v.feature_names())} by it, so send "
                                        f"\"entities\": {{\"{name}\": \"...\"}}"))
            elif not key_ok(value):
                problems.append(Problem(index, f"entities.{name}",
                                        f"expected a string or integer key of 1-{ENTITY_KEY_MAX} characters without "
                                        f"NUL, got {_show(value)}"))
        for name in row.features:
            if name in self.provider:
                view = self.provider[name]
                problems.append(Problem(index, f"features.{name}",
                                        f"comes from feature view {view.name!r} (looked up by {view.entity}); do not "
                                        "send it, send the entity key in entities"))
        return problems

    def _serve(self, index: int, view: Any, key: str, record: FeatureRecord | None, meta: Mapping[str, str | None],
               now: float, vector: dict[str, Any], info: Served) -> list[Problem]:
        problems = []
        is_stream = isinstance(view, StreamView)
        if is_stream:
            watermark = meta.get(meta_watermark(view.name))
            as_of = float(watermark) if watermark is not None else None
            values = record.values if record is not None else {}
            known_empty = {a.name for a in view.aggregates if a.agg in ZERO_WHEN_EMPTY} if as_of is not None else set()
        else:
            as_of = record.timestamp if record is not None else None
            values = record.values if record is not None else {}
            known_empty = set()
        age = None if as_of is None else max(0.0, now - as_of)
        info.ages[view.name] = age
        stale = age is not None and age > view.max_age.total_seconds()
        for name in view.feature_names():
            value = values.get(name)
            if value is None and name in known_empty:
                value = 0  # no event of the entity in the window, and the processor is current
            if stale:
                if view.on_stale == "impute":
                    vector[name] = view.defaults[name]
                    info.imputed.append(name)
                else:
                    problems.append(Problem(index, f"features.{name}",
                                            f"stale: feature view {view.name!r} holds it for {view.entity}={key!r} "
                                            f"with age {_age(age)}, older than its max_age {_age(view.max_age)}; "
                                            f"{_remedy(view)}"))
            elif value is None:
                if view.on_missing == "impute":
                    vector[name] = view.defaults[name]
                    info.imputed.append(name)
                else:
                    where = "has no value" if as_of is not None else "was never written"
                    problems.append(Problem(index, f"features.{name}",
                                            f"missing: feature view {view.name!r} {where} for {view.entity}={key!r} "
                                            f"(age: unknown); {_remedy(view)}, or set on_missing: impute with a "
                                            "default"))
            else:
                vector[name] = value
        return problems


def _remedy(view: Any) -> str:
    if isinstance(view, StreamView):
        return "check that `driftpilot stream` runs and events for this entity arrive"
    return "run `driftpilot features materialize` (or check the view's refresh schedule and source)"


def key_ok(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return False
    text = str(value)
    return 0 < len(text) <= ENTITY_KEY_MAX and "\x00" not in text


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _age(value: float | timedelta | None) -> str:
    """A duration for people: 45s, 12m30s, 3h05m, 2d04h."""
    if value is None:
        return "unknown"
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if not math.isfinite(seconds):
        return "unknown"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.3g}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
