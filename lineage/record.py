"""The lineage record every registered model version carries, and its exact encoding as MLflow tags.

A record is plain data (no MLflow import here): where a version came from (parent, strategy, trigger), what
it was trained on (the data window and its label-maturity cut), how it scored against the champion it was
compared with, and which library versions and policy produced it.

>>> from datetime import datetime, UTC
>>> r = LineageRecord(
...     parent_version=None, strategy="bootstrap", trigger="bootstrap",
...     window_start=datetime(2026, 1, 1, tzinfo=UTC), window_end=datetime(2026, 1, 2, tzinfo=UTC),
...     window_rows=500, window_fingerprint="ab12cd34", maturity_cut=datetime(2026, 1, 2, tzinfo=UTC),
...     holdout_metrics={"accuracy": 0.91}, champion_metrics={}, chain_depth=0,
...     policy_hash="p0", decision_id="d0", library_versions={"python": "3.11.7"})
>>> r.to_tags()["driftpilot.window_start"]
'2026-01-01T00:00:00+00:00'
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
#: Bumped when the tag layout changes incompatibly; ``from_tags`` refuses layouts it does not know.
SCHEMA_VERSION = "1"

STRATEGIES = ("bootstrap", "stateless", "finetune", "incremental")
TRIGGERS = (
    "manual",
    "schedule",
    "data_volume",
    "data_drift",
    "concept_drift",
    "performance_drop",
    "bootstrap",
)
#: Strategies that continue a parent's learned state, so they need a parent and deepen the chain.
STATEFUL_STRATEGIES = ("finetune", "incremental")

#: MLflow's limit for run tag values (model-version tags allow more; runs carry the same tags).
_MAX_TAG_VALUE = 8000
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
        for name in ("holdout_metrics", "champion_metrics"):
            p.extend(_metric_problems(name, getattr(self, name)))
        try:
            encoded = json.dumps(dict(self.extra), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            p.append(
                f"extra must hold JSON values (str, int, float, bool, None, lists, dicts): {exc}"
            )
        else:
            if len(encoded) > _MAX_TAG_VALUE:
                p.append(
                    f"extra encodes to {len(encoded)} characters, MLflow tags hold at most {_MAX_TAG_VALUE}; "
                    "attach long evidence as a run artifact and put its name in extra"
                )
        return p

    # ------------------------------------------------------------------------------------------ tag encoding

    def to_tags(self) -> dict[str, str]:
        """The record as MLflow tags (``driftpilot.*``); a bootstrap version has no ``parent_version`` tag."""
        tags = {
            "schema": SCHEMA_VERSION,
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
        tags.update({f"lib.{name}": version for name, version in self.library_versions.items()})
        return {TAG_PREFIX + key: value for key, value in tags.items()}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> LineageRecord:
        """Read a record back from model-version (or run) tags; other tags are ignored."""
        own = {k[len(TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
        schema = own.get("schema")
        if schema != SCHEMA_VERSION:
            raise LineageError(
                f"these tags hold no driftpilot lineage record of schema {SCHEMA_VERSION} "
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
            )
        except ValueError as exc:
            raise LineageError(f"lineage tags could not be decoded: {exc}") from exc


def has_record(tags: Mapping[str, str]) -> bool:
    """Whether ``tags`` carry a driftpilot lineage record (of any schema)."""
    return TAG_PREFIX + "schema" in tags


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
