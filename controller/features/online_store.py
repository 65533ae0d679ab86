"""The online store: feature records by (view, entity key), read in one round trip per /predict request.

Two adapters behind one small interface: Redis (production; ``controller/features/redis_adapter.py``, the only module
that talks to Redis) and SQLite (the embedded default, here, on the standard library's ``sqlite3``). A record is the
view's feature values for one entity plus the time they are valid for (``timestamp``, seconds since the epoch):
batch views stamp the source's timestamp column (or the materialization time), stream views the processor's
watermark.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from controller.errors import StoreUnavailable
from controller.features.config import OnlineStoreConfig


@dataclass(frozen=True)
class FeatureRecord:
    """One entity's values of one view; a value of None (or a name absent) is a missing feature."""

    values: Mapping[str, Any]
    timestamp: float

    def encode(self) -> str:
        return json.dumps({"v": self.values, "t": self.timestamp}, separators=(",", ":"), allow_nan=False)

    @staticmethod
    def decode(raw: str | bytes | None) -> FeatureRecord | None:
        if raw is None:
            return None
        data = json.loads(raw)
        return FeatureRecord(values=data["v"], timestamp=data["t"])


class OnlineStore(Protocol):
    """Key-value access to feature records. ``read`` answers keys and meta names in one round trip."""

    def write(self, view: str, rows: Mapping[str, FeatureRecord], *, deletes: Iterable[str] = (),
              meta: Mapping[str, str] | None = None) -> None:
        """Upsert ``rows`` (entity key -> record), delete ``deletes`` and set ``meta``, together."""
        ...

    def read(self, keys: Sequence[tuple[str, str]], meta: Sequence[str] = ()
             ) -> tuple[list[FeatureRecord | None], dict[str, str | None]]:
        """The records of ``(view, entity key)`` pairs (None where absent) and the ``meta`` values."""
        ...

    def close(self) -> None: ...

    def purge(self) -> int:
        """Remove every record and meta value of this store's namespace (tests, benchmarks); returns how many."""
        ...


def open_online_store(config: OnlineStoreConfig) -> OnlineStore:
    if config.url.startswith("sqlite:///"):
        return SqliteOnlineStore(config.url.removeprefix("sqlite:///"), prefix=config.prefix)
    from controller.features.redis_adapter import RedisOnlineStore

    return RedisOnlineStore(config.url, prefix=config.prefix)


class SqliteOnlineStore:
    """The embedded online store: one SQLite file (WAL), a connection per thread. Rebuildable from the sources and
    the event stream, so it trades the last transactions on a power cut (``synchronous=NORMAL``) for speed."""

    def __init__(self, path: str, *, prefix: str = "driftpilot:") -> None:
        self.path = path
        self.prefix = prefix
        self._local = threading.local()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as db:
            db.execute("CREATE TABLE IF NOT EXISTS online_features (view TEXT NOT NULL, entity TEXT NOT NULL, "
                       "value TEXT NOT NULL, PRIMARY KEY (view, entity)) WITHOUT ROWID")
            db.execute("CREATE TABLE IF NOT EXISTS online_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) "
                       "WITHOUT ROWID")

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open the online feature store {self.path}: {exc}; check the path "
                                       "in feature_views.online_store.url") from None
            self._local.db = db
        return db

    def write(self, view: str, rows: Mapping[str, FeatureRecord], *, deletes: Iterable[str] = (),
              meta: Mapping[str, str] | None = None) -> None:
        db = self._connection()
        name = self.prefix + view
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO online_features VALUES (?, ?, ?)",
                           [(name, key, record.encode()) for key, record in rows.items()])
            db.executemany("DELETE FROM online_features WHERE view = ? AND entity = ?",
                           [(name, key) for key in deletes])
            db.executemany("INSERT OR REPLACE INTO online_meta VALUES (?, ?)",
                           [(self.prefix + k, v) for k, v in (meta or {}).items()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def read(self, keys: Sequence[tuple[str, str]], meta: Sequence[str] = ()
             ) -> tuple[list[FeatureRecord | None], dict[str, str | None]]:
        db = self._connection()
        found: dict[tuple[str, str], str] = {}
        by_view: dict[str, list[str]] = {}
        for view, key in keys:
            by_view.setdefault(view, []).append(key)
        for view, entity_keys in by_view.items():
            marks = ",".join("?" * len(entity_keys))
            for entity, value in db.execute(f"SELECT entity, value FROM online_features WHERE view = ? AND entity "
                                            f"IN ({marks})", [self.prefix + view, *entity_keys]):
                found[(view, entity)] = value
        meta_values: dict[str, str | None] = dict.fromkeys(meta)
        if meta:
            marks = ",".join("?" * len(meta))
            for name, value in db.execute(f"SELECT name, value FROM online_meta WHERE name IN ({marks})",
                                          [self.prefix + m for m in meta]):
                meta_values[name.removeprefix(self.prefix)] = value
        return [FeatureRecord.decode(found.get(k)) for k in keys], meta_values

    def scan(self, view: str) -> dict[str, FeatureRecord]:
        """Every record of a view (tests and tools; not for serving)."""
        rows = self._connection().execute("SELECT entity, value FROM online_features WHERE view = ?",
                                          [self.prefix + view])
        return {entity: FeatureRecord.decode(value) for entity, value in rows}

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def purge(self) -> int:
        db = self._connection()
        like = self.prefix.replace("%", r"\%").replace("_", r"\_") + "%"
        count = db.execute(r"DELETE FROM online_features WHERE view LIKE ? ESCAPE '\'", [like]).rowcount
        count += db.execute(r"DELETE FROM online_meta WHERE name LIKE ? ESCAPE '\'", [like]).rowcount
        return count


def meta_watermark(view: str) -> str:
    """Meta name of a stream view's watermark (event time the view's records are current for)."""
    return f"watermark:{view}"


def meta_materialized(view: str) -> str:
    """Meta name of a batch view's last materialization (JSON: time, rows, entities)."""
    return f"materialized:{view}"
