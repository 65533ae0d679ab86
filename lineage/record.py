"""The lineage record every registered model version carries, and its exact encodings.

A record is plain data (no MLflow import here): where a version came from (parent, strategy, trigger), what
it was trained on (the data window: label-arrival range, event-time range, rows, fingerprint, label-maturity cut),
how it and the champion at the time scored on the same holdout, and which library versions and policy produced it.

The full record is stored as a JSON artifact of the version's run (:meth:`LineageRecord.to_json`); the version
carries only a handful of short, filterable tags (:meth:`LineageRecord.summary_tags`). Versions registered by an
older driftpilot carry the whole record as tags (schema 1, :meth:`LineageRecord.from_tags` still reads it).

>>> from datetime import datetime, UTC
>>> r = LineageRecord(
...     parent_version=None, strategy="bootstrap", trigger="bootstrap",
...     window_start=datetime(2026, 1, 1, tzinfo=UTC), window_end=datetime(2026, 1, 2, tzinfo=UTC),
...     window_rows=500, window_fingerprint="ab12cd34", maturity_cut=datetime(2026, 1, 2, tzinfo=UTC),
...     holdout_metrics={"accuracy": 0.91}, champion_metrics={}, chain_depth=0,
...     policy_hash="p0", decision_id="d0", library_versions={"python": "3.11.7"},
...     event_time_start=datetime(1996, 5, 7, tzinfo=UTC), event_time_end=datetime(1997, 8, 20, tzinfo=UTC))
>>> LineageRecord.from_json(r.to_json()) == r
True
>>> r.summary_tags()["driftpilot.window"]
'1996-05-07 → 1997-08-20'
>>> LineageRecord.from_tags(r.to_tags()) == r
True
"""

from __future__ import annotations

import json
import math
import numbers
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from lineage.errors import LineageError

#: Every driftpilot tag on runs and model versions starts with this, so they group together in the MLflow UI.
TAG_PREFIX = "driftpilot."
#: The layout of the version tags: "2" = summary tags + the record as a JSON artifact; "1" = the record as tags.
SCHEMA_VERSION = "2"
TAGS_SCHEMA = "1"
#: Where the full record lives in the version's run.
RECORD_ARTIFACT = "driftpilot-lineage.json"

#: "adopted": a model trained outside driftpilot and registered as a lineage root (`driftpilot adopt`).
STRATEGIES = ("bootstrap", "stateless", "finetune", "incremental", "adopted")
TRIGGERS = (
    "manual",
    "schedule",
    "data_volume",
    "data_drift",
    "concept_drift",
    "performance_drop",
    "bootstrap",
    "race",
    "cost",
)
#: Strategies that continue a parent's learned state, so they need a parent and deepen the chain.
STATEFUL_STRATEGIES = ("finetune", "incremental")

#: The extra facts are read with every version; long evidence belongs in a run artifact.
_MAX_EXTRA = 64_000
_LIBRARIES = ("scikit-learn", "river", "mlflow")


def installed_library_versions() -> dict[str, str]:
    """Python and the ML libraries' installed versions, as recorded on every version."""
    versions = {"python": platform.python_version()}
    for dist in _LIBRARIES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


@dataclass(frozen=True)
class LineageRecord:
    """Where a model version came from. Validated on construction; round-trips exactly through :meth:`to_tags`.

    Datetimes are normalised to aware UTC (naive ones are taken to be UTC), metric values to ``float``.
    """

    parent_version: str | None
    strategy: str
    trigger: str
    window_start: datetime
    window_end: datetime
    window_rows: int
    window_fingerprint: str
    maturity_cut: datetime
    holdout_metrics: Mapping[str, float]
    champion_metrics: Mapping[str, float]
    chain_depth: int
    policy_hash: str
    decision_id: str
    library_versions: Mapping[str, str] = field(default_factory=installed_library_versions)
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: The data's own time range (the rows' event times), beside the label-arrival range ``window_start/end``.
    event_time_start: datetime | None = None
    event_time_end: datetime | None = None

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise LineageError("invalid lineage record: " + "; ".join(problems))
        # Normalised copies: callers' dicts stay theirs, and equality after a round trip is exact.
        set_ = object.__setattr__
        set_(
            self,
            "parent_version",
            None if self.parent_version is None else str(self.parent_version),
        )
        for name in ("window_start", "window_end", "maturity_cut"):
            set_(self, name, _utc(getattr(self, name)))
        for name in ("event_time_start", "event_time_end"):
            if getattr(self, name) is not None:
                set_(self, name, _utc(getattr(self, name)))
        set_(self, "holdout_metrics", {str(k): float(v) for k, v in self.holdout_metrics.items()})
        set_(self, "champion_metrics", {str(k): float(v) for k, v in self.champion_metrics.items()})
        set_(self, "library_versions", {str(k): str(v) for k, v in self.library_versions.items()})
        set_(self, "extra", json.loads(json.dumps(dict(self.extra))))
        if self.window_end < self.window_start:
            raise LineageError(
                f"invalid lineage record: window_end {self.window_end.isoformat()} is before window_start "
                f"{self.window_start.isoformat()}; pass the first and last label-arrival times of the window"
            )

    def _problems(self) -> list[str]:
        p: list[str] = []
        if self.strategy not in STRATEGIES:
            p.append(f"strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.trigger not in TRIGGERS:
            p.append(f"trigger {self.trigger!r} is not one of {', '.join(TRIGGERS)}")
        if self.strategy == "bootstrap" and self.parent_version is not None:
            p.append(
                f"a bootstrap version has no parent, got parent_version={self.parent_version!r}; "
                "use strategy 'stateless' to retrain from scratch while recording the replaced champion"
            )
        if self.strategy == "adopted" and self.parent_version is not None:
            p.append(f"an adopted version is a lineage root (trained outside driftpilot), got "
                     f"parent_version={self.parent_version!r}")
        if self.trigger == "bootstrap" and self.strategy != "bootstrap":
            p.append(
                f"trigger 'bootstrap' only goes with strategy 'bootstrap', not {self.strategy!r}"
            )
        if self.strategy in STATEFUL_STRATEGIES and self.parent_version is None:
            p.append(
                f"strategy {self.strategy!r} continues a parent model, so parent_version is required"
            )
        if not isinstance(self.chain_depth, int) or self.chain_depth < 0:
            p.append(f"chain_depth must be an int >= 0, got {self.chain_depth!r}")
        elif self.strategy in STATEFUL_STRATEGIES and self.chain_depth < 1:
            p.append(
                f"strategy {self.strategy!r} must have chain_depth = parent's chain_depth + 1 (>= 1), "
                f"got {self.chain_depth}"
            )
        elif self.strategy not in STATEFUL_STRATEGIES and self.chain_depth != 0:
            p.append(
                f"strategy {self.strategy!r} starts a new chain, so chain_depth must be 0, got {self.chain_depth}"
            )
        if not isinstance(self.window_rows, int) or self.window_rows < 0:
            p.append(f"window_rows must be an int >= 0, got {self.window_rows!r}")
        for name in ("window_fingerprint", "policy_hash", "decision_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                p.append(f"{name} must be a non-empty string, got {value!r}")
        for name in ("window_start", "window_end", "maturity_cut"):
            if not isinstance(getattr(self, name), datetime):
                p.append(f"{name} must be a datetime, got {getattr(self, name)!r}")
        for name in ("event_time_start", "event_time_end"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), datetime):
                p.append(f"{name} must be a datetime or None, got {getattr(self, name)!r}")
        if (self.event_time_start is None) != (self.event_time_end is None):
            p.append("event_time_start and event_time_end go together: pass both (the window's oldest and newest "
                     "event time) or neither")
        for name in ("holdout_metrics", "champion_metrics"):
            p.extend(_metric_problems(name, getattr(self, name)))
        try:
            encoded = json.dumps(dict(self.extra), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            p.append(
                f"extra must hold JSON values (str, int, float, bool, None, lists, dicts): {exc}"
            )
        else:
            if len(encoded) > _MAX_EXTRA:
                p.append(
                    f"extra encodes to {len(encoded)} characters, a lineage record holds at most {_MAX_EXTRA}; "
                    "attach long evidence as a run artifact and put its name in extra"
                )
        return p

    # ----------------------------------------------------------------------------------------- JSON encoding

    def to_json(self) -> str:
        """The whole record as JSON (floats written with repr, so :meth:`from_json` reads them back bit for bit)."""
        body = {
            "schema": SCHEMA_VERSION,
            "parent_version": self.parent_version,
            "strategy": self.strategy,
            "trigger": self.trigger,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "event_time_start": _iso(self.event_time_start),
            "event_time_end": _iso(self.event_time_end),
            "window_rows": self.window_rows,
            "window_fingerprint": self.window_fingerprint,
            "maturity_cut": self.maturity_cut.isoformat(),
            "holdout_metrics": dict(self.holdout_metrics),
            "champion_metrics": dict(self.champion_metrics),
            "chain_depth": self.chain_depth,
            "policy_hash": self.policy_hash,
            "decision_id": self.decision_id,
            "library_versions": dict(self.library_versions),
            "extra": dict(self.extra),
        }
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LineageRecord:
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise LineageError(f"the lineage record is not valid JSON: {exc}") from exc
        if not isinstance(body, dict) or body.get("schema") != SCHEMA_VERSION:
            found = body.get("schema") if isinstance(body, dict) else type(body).__name__
            raise LineageError(
                f"this JSON holds no driftpilot lineage record of schema {SCHEMA_VERSION} (found schema {found!r})"
            )
        try:
            return cls(
                parent_version=body["parent_version"],
                strategy=body["strategy"],
                trigger=body["trigger"],
                window_start=datetime.fromisoformat(body["window_start"]),
                window_end=datetime.fromisoformat(body["window_end"]),
                window_rows=body["window_rows"],
                window_fingerprint=body["window_fingerprint"],
                maturity_cut=datetime.fromisoformat(body["maturity_cut"]),
                holdout_metrics=body["holdout_metrics"],
                champion_metrics=body["champion_metrics"],
                chain_depth=body["chain_depth"],
                policy_hash=body["policy_hash"],
                decision_id=body["decision_id"],
                library_versions=body["library_versions"],
                extra=body["extra"],
                event_time_start=_from_iso(body.get("event_time_start")),
                event_time_end=_from_iso(body.get("event_time_end")),
            )
        except KeyError as exc:
            raise LineageError(f"the lineage record JSON lacks the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise LineageError(f"the lineage record JSON could not be decoded: {exc}") from exc

    def summary_tags(self) -> dict[str, str]:
        """The few short, filterable tags of a version (the full record is the JSON artifact).

        ``window`` is the event-time range (the data's own time) when known, else the label-arrival range.
        """
        start, end = (
            (self.event_time_start, self.event_time_end)
            if self.event_time_start is not None
            else (self.window_start, self.window_end)
        )
        tags = {
            "schema": SCHEMA_VERSION,
            "strategy": self.strategy,
            "trigger": self.trigger,
            "window": time_range(start, end),
            "window_rows": str(self.window_rows),
            "chain_depth": str(self.chain_depth),
            "decision_id": self.decision_id,
        }
        if self.parent_version is not None:
            tags["parent_version"] = self.parent_version
        return {TAG_PREFIX + key: value for key, value in tags.items()}

    # ------------------------------------------------------------------------------ tag encoding (schema 1)

    def to_tags(self) -> dict[str, str]:
        """The whole record as MLflow tags, the layout of older driftpilot versions (schema 1).

        A bootstrap version has no ``parent_version`` tag. New versions carry :meth:`summary_tags` instead.
        """
        tags = {
            "schema": TAGS_SCHEMA,
            "strategy": self.strategy,
            "trigger": self.trigger,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "window_rows": str(self.window_rows),
            "window_fingerprint": self.window_fingerprint,
            "maturity_cut": self.maturity_cut.isoformat(),
            # json.dumps writes floats with repr(), which float() reads back bit for bit.
            "holdout_metrics": json.dumps(self.holdout_metrics, sort_keys=True),
            "champion_metrics": json.dumps(self.champion_metrics, sort_keys=True),
            "chain_depth": str(self.chain_depth),
            "policy_hash": self.policy_hash,
            "decision_id": self.decision_id,
            "extra": json.dumps(self.extra, sort_keys=True),
        }
        if self.parent_version is not None:
            tags["parent_version"] = self.parent_version
        if self.event_time_start is not None:
            tags["event_time_start"] = _iso(self.event_time_start)
            tags["event_time_end"] = _iso(self.event_time_end)
        tags.update({f"lib.{name}": version for name, version in self.library_versions.items()})
        return {TAG_PREFIX + key: value for key, value in tags.items()}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> LineageRecord:
        """Read a schema-1 record back from model-version (or run) tags; other tags are ignored."""
        own = {k[len(TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
        schema = own.get("schema")
        if schema == SCHEMA_VERSION:
            raise LineageError(
                f"these tags are the summary of a schema-{SCHEMA_VERSION} record; the full record is the run "
                f"artifact {RECORD_ARTIFACT} (LineageRecord.from_json)"
            )
        if schema != TAGS_SCHEMA:
            raise LineageError(
                f"these tags hold no driftpilot lineage record of schema {TAGS_SCHEMA} "
                f"(found {TAG_PREFIX}schema={schema!r}); the version was not registered by this driftpilot"
            )
        required = (
            "strategy",
            "trigger",
            "window_start",
            "window_end",
            "window_rows",
            "window_fingerprint",
            "maturity_cut",
            "holdout_metrics",
            "champion_metrics",
            "chain_depth",
            "policy_hash",
            "decision_id",
            "extra",
        )
        missing = [TAG_PREFIX + k for k in required if k not in own]
        if missing:
            raise LineageError(f"lineage tags are incomplete, missing: {', '.join(missing)}")
        try:
            return cls(
                parent_version=own.get("parent_version"),
                strategy=own["strategy"],
                trigger=own["trigger"],
                window_start=datetime.fromisoformat(own["window_start"]),
                window_end=datetime.fromisoformat(own["window_end"]),
                window_rows=int(own["window_rows"]),
                window_fingerprint=own["window_fingerprint"],
                maturity_cut=datetime.fromisoformat(own["maturity_cut"]),
                holdout_metrics=json.loads(own["holdout_metrics"]),
                champion_metrics=json.loads(own["champion_metrics"]),
                chain_depth=int(own["chain_depth"]),
                policy_hash=own["policy_hash"],
                decision_id=own["decision_id"],
                library_versions={
                    k[len("lib.") :]: v for k, v in own.items() if k.startswith("lib.")
                },
                extra=json.loads(own["extra"]),
                event_time_start=_from_iso(own.get("event_time_start")),
                event_time_end=_from_iso(own.get("event_time_end")),
            )
        except ValueError as exc:
            raise LineageError(f"lineage tags could not be decoded: {exc}") from exc


def has_record(tags: Mapping[str, str]) -> bool:
    """Whether ``tags`` carry a driftpilot lineage record (of any schema)."""
    return TAG_PREFIX + "schema" in tags


def record_schema(tags: Mapping[str, str]) -> str | None:
    """The lineage schema of a version's tags: "2" (artifact), "1" (all tags), None (no driftpilot record)."""
    return tags.get(TAG_PREFIX + "schema")


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def time_range(start: datetime, end: datetime) -> str:
    """``1996-05-07 → 1997-08-20`` for whole days, else to the minute (``2026-01-01 10:00 → 2026-01-01 10:05``)."""
    days = all((t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0) for t in (start, end))
    form = "%Y-%m-%d" if days else "%Y-%m-%d %H:%M"
    return f"{start.strftime(form)} → {end.strftime(form)}"


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _metric_problems(name: str, metrics: Any) -> list[str]:
    if not isinstance(metrics, Mapping):
        return [f"{name} must be a dict of metric name -> float, got {type(metrics).__name__}"]
    bad = {
        k: v
        for k, v in metrics.items()
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isinf(float(v))
    }
    if bad:
        return [
            f"{name} values must be finite numbers (NaN is allowed for undefined metrics), got {bad!r}"
        ]
    return []
