"""The one module that talks to Redis: the online store and the raw-event stream (a Redis Stream with a consumer
group). Connection failures become :class:`~controller.errors.StoreUnavailable` with what to check.

Keys: ``<prefix>row:<view>:<entity key>`` holds a record as JSON, ``<prefix>meta:<name>`` a meta value; the stream
is the configured key, and the stream processor's checkpoint lives at ``<stream>:checkpoint:<group>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from controller.errors import StoreUnavailable
from controller.features.online_store import FeatureRecord

#: One entry of the stream: its id and its fields (``event_time`` in seconds since the epoch, ``data`` as JSON).
StreamEntry = tuple[str, dict[str, str]]


@contextmanager
def _reachable(url: str, what: str) -> Iterator[None]:
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise StoreUnavailable(f"{what} at {_safe(url)} is unreachable: {exc}; check that Redis runs there (and the "
                               "URL in feature_views)") from None


def _safe(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2,
                                health_check_interval=30)


class RedisOnlineStore:
    """Feature records as JSON strings: one ``MGET`` answers a whole /predict request (records and meta)."""

    def __init__(self, url: str, *, prefix: str = "driftpilot:") -> None:
        self.url = url
        self.prefix = prefix
        self.client = _client(url)

    def _row(self, view: str, key: str) -> str:
        return f"{self.prefix}row:{view}:{key}"

    def _meta(self, name: str) -> str:
        return f"{self.prefix}meta:{name}"

    def write(self, view: str, rows: Mapping[str, FeatureRecord], *, deletes: Iterable[str] = (),
              meta: Mapping[str, str] | None = None) -> None:
        mapping = {self._row(view, key): record.encode() for key, record in rows.items()}
        mapping.update({self._meta(name): value for name, value in (meta or {}).items()})
        gone = [self._row(view, key) for key in deletes]
        with _reachable(self.url, "the online feature store"):
            pipe = self.client.pipeline(transaction=True)  # MULTI/EXEC: a reader sees all of it or none
            if mapping:
                pipe.mset(mapping)
            if gone:
                pipe.delete(*gone)
            pipe.execute()

    def read(self, keys: Sequence[tuple[str, str]], meta: Sequence[str] = ()
             ) -> tuple[list[FeatureRecord | None], dict[str, str | None]]:
        names = [self._row(view, key) for view, key in keys] + [self._meta(m) for m in meta]
        if not names:
            return [], {}
        with _reachable(self.url, "the online feature store"):
            raw = self.client.mget(names)
        records = [FeatureRecord.decode(value) for value in raw[:len(keys)]]
        return records, dict(zip(meta, raw[len(keys):], strict=True))

    def scan(self, view: str) -> dict[str, FeatureRecord]:
        """Every record of a view (tests and tools; not for serving)."""
        head = self._row(view, "")
        with _reachable(self.url, "the online feature store"):
            keys = list(self.client.scan_iter(match=_glob(head) + "*", count=1000))
            values = self.client.mget(keys) if keys else []
        return {key.removeprefix(head): FeatureRecord.decode(value) for key, value in zip(keys, values, strict=True)}

    def close(self) -> None:
        self.client.close()

    def purge(self) -> int:
        with _reachable(self.url, "the online feature store"):
            keys = list(self.client.scan_iter(match=_glob(self.prefix) + "*", count=1000))
            for start in range(0, len(keys), 1000):
                self.client.delete(*keys[start:start + 1000])
        return len(keys)


def _glob(text: str) -> str:
    """``text`` with Redis glob characters escaped, for SCAN MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisEventStream:
    """The raw events of stream views, on a Redis Stream read through a consumer group.

    Producers append ``{event_time: <epoch seconds>, data: <JSON object>}`` (``POST /v1/events`` does, or any
    client: ``XADD <stream> * event_time 1767225600.5 data '{"user_id": "u-1", "amount": 12.5}'``).
    """

    def __init__(self, url: str, stream: str, group: str) -> None:
        self.url = url
        self.stream = stream
        self.group = group
        self.client = _client(url)

    @property
    def checkpoint_key(self) -> str:
        return f"{self.stream}:checkpoint:{self.group}"

    def append(self, events: Sequence[tuple[float, Mapping[str, Any]]]) -> list[str]:
        """XADD each ``(event_time, data)`` in order, in one round trip; returns the stream ids."""
        with _reachable(self.url, "the event stream"):
            pipe = self.client.pipeline(transaction=False)
            for event_time, data in events:
                pipe.xadd(self.stream, {"event_time": repr(float(event_time)),
                                        "data": json.dumps(data, separators=(",", ":"), allow_nan=False)})
            return pipe.execute()

    def ensure_group(self) -> None:
        """Create the consumer group at the start of the stream (the stream too, if absent); a no-op if it exists."""
        with _reachable(self.url, "the event stream"):
            try:
                self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read_new(self, consumer: str, count: int, block_ms: int) -> list[StreamEntry]:
        """Entries never delivered to the group, oldest first (waits up to ``block_ms`` when there are none)."""
        with _reachable(self.url, "the event stream"):
            answer = self.client.xreadgroup(self.group, consumer, {self.stream: ">"}, count=count,
                                            block=block_ms or None)
        return [(entry_id, fields) for _, entries in answer or [] for entry_id, fields in entries]

    def ack(self, ids: Sequence[str]) -> None:
        if ids:
            with _reachable(self.url, "the event stream"):
                self.client.xack(self.stream, self.group, *ids)

    def last_delivered(self) -> str:
        """The id of the newest entry delivered to the group ("0-0": none yet)."""
        with _reachable(self.url, "the event stream"):
            for group in self.client.xinfo_groups(self.stream):
                if group["name"] == self.group:
                    return group["last-delivered-id"]
        raise LookupError(f"consumer group {self.group!r} does not exist on {self.stream!r}")

    def pending_ids(self) -> list[str]:
        """Ids delivered to the group but not acknowledged (the processor stopped before it wrote them back)."""
        out: list[str] = []
        start = "-"
        with _reachable(self.url, "the event stream"):
            while True:
                page = self.client.xpending_range(self.stream, self.group, min=start, max="+", count=10_000)
                out += [p["message_id"] for p in page]
                if len(page) < 10_000:
                    return out
                start = "(" + page[-1]["message_id"]

    def entries(self, after: str, through: str, count: int = 10_000) -> Iterator[StreamEntry]:
        """Entries with ``after < id <= through``, oldest first, in pages of ``count`` (XRANGE; no delivery)."""
        start = "(" + after if after != "0-0" else "-"
        while True:
            with _reachable(self.url, "the event stream"):
                page = self.client.xrange(self.stream, min=start, max=through, count=count)
            yield from page
            if len(page) < count:
                return
            start = "(" + page[-1][0]

    def first_id(self) -> str | None:
        with _reachable(self.url, "the event stream"):
            page = self.client.xrange(self.stream, count=1)
        return page[0][0] if page else None

    def backlog(self) -> int | None:
        """Entries not yet delivered to the group (Redis 7's ``lag``; None when Redis cannot tell)."""
        with _reachable(self.url, "the event stream"):
            for group in self.client.xinfo_groups(self.stream):
                if group["name"] == self.group:
                    return group.get("lag")
        return None

    def save_checkpoint(self, blob: bytes) -> None:
        with _reachable(self.url, "the event stream"):
            self.client.set(self.checkpoint_key, blob.hex())

    def load_checkpoint(self) -> bytes | None:
        with _reachable(self.url, "the event stream"):
            value = self.client.get(self.checkpoint_key)
        return bytes.fromhex(value) if value is not None else None

    def destroy(self) -> None:
        """Delete the stream and the checkpoint (tests, benchmarks)."""
        with _reachable(self.url, "the event stream"):
            self.client.delete(self.stream, self.checkpoint_key)

    def close(self) -> None:
        self.client.close()
