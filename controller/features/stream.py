"""The stream processor (``driftpilot stream``): raw events -> per-entity rolling aggregates -> the online store.

One step reads a batch of new events through the consumer group, folds each into the state in stream order, writes
the aggregates of every entity it changed (absolute values, never increments), and then acknowledges the batch.

Time is event time: the **watermark** is the newest event time seen, and an aggregate over window ``w`` covers the
events with ``watermark - w < t``; an event already outside every window of a view when it arrives is counted as
``late`` and dropped. Entities whose events leave a window as the watermark moves are rewritten too (or deleted
when every window is empty), so the online store holds each aggregate as of the watermark, which is stored beside
them: /predict's age of a stream feature is ``now - watermark``.

**Restart without double counting.** Every ``events.checkpoint_every`` events the state is saved with the id of the
last event folded into it. On start the processor loads the checkpoint and folds again, in stream order, every entry
after it up to the group's last delivered id (acknowledged or not: the state only holds what the checkpoint
holds), rewrites those entities, acknowledges what was pending, and continues with new entries. So each event is
folded once into the state, whatever the moment of a crash, and the aggregates equal those of an uninterrupted run.
One processor per consumer group; the stream must keep the entries since the last checkpoint (do not trim it
shorter).
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import pickle
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.features.config import StreamView
from controller.features.online_store import FeatureRecord, OnlineStore, meta_watermark
from controller.features.windows import RollingAggregate

log = logging.getLogger("driftpilot.stream")
CHECKPOINT_VERSION = 1


class EventStream(Protocol):
    """What the processor needs of the event stream (``redis_adapter.RedisEventStream``)."""

    def ensure_group(self) -> None: ...

    def read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, dict[str, str]]]: ...

    def ack(self, ids: Sequence[str]) -> None: ...

    def last_delivered(self) -> str: ...

    def pending_ids(self) -> list[str]: ...

    def entries(self, after: str, through: str, count: int = 10_000) -> Any: ...

    def save_checkpoint(self, blob: bytes) -> None: ...

    def load_checkpoint(self) -> bytes | None: ...


@dataclass
class ViewState:
    """One stream view's entities (key -> one RollingAggregate per aggregate) and its expiry heap."""

    entities: dict[str, list[RollingAggregate]] = field(default_factory=dict)
    heap: list[tuple[float, int, str]] = field(default_factory=list)


@dataclass
class ProcessorState:
    """Everything a checkpoint holds: the state is a function of the events folded, in stream order."""

    views: dict[str, ViewState]
    watermark: float = -math.inf
    last_id: str = "0-0"
    folded: int = 0
    late: int = 0
    invalid: int = 0
    seq: int = 0


@dataclass(frozen=True)
class Recovery:
    checkpoint_id: str
    replayed: int
    pending_acked: int


def entry_sort_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class StreamProcessor:
    """Folds raw events into rolling aggregates of ``views`` and keeps ``store`` current (see the module doc)."""

    def __init__(self, views: Sequence[StreamView], events: EventStream, store: OnlineStore, *,
                 consumer: str = "processor-1", batch_size: int = 1000, block_ms: int = 200,
                 checkpoint_every: int = 50_000) -> None:
        self.views = list(views)
        self.events = events
        self.store = store
        # Per view: name, entity field, longest window, (field, aggregate, window) per aggregate, distinct windows.
        self._plan = [(v.name, v.entity, v.longest_window.total_seconds(),
                       [(a.of, a.agg, a.window.total_seconds()) for a in v.aggregates],
                       sorted({a.window.total_seconds() for a in v.aggregates})) for v in self.views]
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.checkpoint_every = checkpoint_every
        self.state = self._empty_state()
        self._dirty: dict[str, set[str]] = {v.name: set() for v in self.views}
        self._since_checkpoint = 0

    def _empty_state(self) -> ProcessorState:
        return ProcessorState(views={v.name: ViewState() for v in self.views})

    # ------------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> Recovery:
        """Create the group if needed, restore the checkpoint, fold what was delivered after it, write it back."""
        self.events.ensure_group()
        blob = self.events.load_checkpoint()
        if blob is not None:
            saved = pickle.loads(blob)  # our own checkpoint, in the operator's Redis
            if saved.get("version") != CHECKPOINT_VERSION or saved.get("views") != self._signature():
                log.warning("the checkpoint was written for other stream views (%s); rebuilding the state from the "
                            "start of the stream", saved.get("views"))
                self.state = self._empty_state()
            else:
                self.state = saved["state"]
        checkpoint_id = self.state.last_id
        through = self.events.last_delivered()
        replayed = 0
        if entry_sort_key(through) > entry_sort_key(checkpoint_id):
            for entry_id, fields in self.events.entries(checkpoint_id, through):
                self._fold_entry(entry_id, fields)
                replayed += 1
        self._flush()
        pending = self.events.pending_ids()
        self.events.ack(pending)  # all of them are folded (they are <= the last delivered id)
        if replayed:
            self.checkpoint()
        log.info("stream processor %s resumed after %s: %d event(s) folded again, %d pending acknowledged",
                 self.consumer, checkpoint_id, replayed, len(pending))
        return Recovery(checkpoint_id=checkpoint_id, replayed=replayed, pending_acked=len(pending))

    def step(self, block_ms: int | None = None) -> int:
        """Read, fold, write, acknowledge one batch of new events; returns how many were read."""
        batch = self.events.read_new(self.consumer, self.batch_size, self.block_ms if block_ms is None else block_ms)
        if not batch:
            return 0
        for entry_id, fields in batch:
            self._fold_entry(entry_id, fields)
        self._flush()
        self.events.ack([entry_id for entry_id, _ in batch])
        self._since_checkpoint += len(batch)
        if self._since_checkpoint >= self.checkpoint_every:
            self.checkpoint()
        return len(batch)

    def run(self, stop: threading.Event) -> None:
        """:meth:`start`, then steps until ``stop`` is set; a graceful stop saves a checkpoint."""
        self.start()
        while not stop.is_set():
            self.step()
        self.checkpoint()

    def checkpoint(self) -> None:
        """Save the state with the id of the last event folded into it."""
        self.events.save_checkpoint(pickle.dumps({"version": CHECKPOINT_VERSION, "views": self._signature(),
                                                  "state": self.state}, protocol=pickle.HIGHEST_PROTOCOL))
        self._since_checkpoint = 0

    def _signature(self) -> list:
        return [[v.name, v.entity, [[a.name, a.agg, a.of, a.window.total_seconds()] for a in v.aggregates]]
                for v in self.views]

    # ------------------------------------------------------------------------------------------------- folding

    def _fold_entry(self, entry_id: str, fields: Mapping[str, str]) -> None:
        self.state.last_id = entry_id
        try:
            event_time = float(fields["event_time"])
            data = json.loads(fields["data"])
            if not math.isfinite(event_time) or not isinstance(data, dict):
                raise ValueError
        except (KeyError, ValueError, TypeError):
            self.state.invalid += 1
            log.warning("stream entry %s is not an event ({event_time: <epoch seconds>, data: <JSON object>}); "
                        "skipped", entry_id)
            return
        self.fold(event_time, data)

    def fold(self, t: float, data: Mapping[str, Any]) -> None:
        """Fold one event (event time ``t`` in epoch seconds) into every view whose entity field it carries."""
        state = self.state
        state.folded += 1
        advanced = t > state.watermark
        if advanced:
            state.watermark = t
        watermark = state.watermark
        late = False
        for name, entity, longest, specs, windows in self._plan:
            key = data.get(entity)
            if key is None or key is True or key is False:
                continue
            if t <= watermark - longest:
                late = True  # outside every window of the view already
                continue
            key = key if key.__class__ is str else str(key)
            vstate = state.views[name]
            aggregates = vstate.entities.get(key)
            if aggregates is None:
                aggregates = [RollingAggregate(agg, window) for _, agg, window in specs]
                vstate.entities[key] = aggregates
            added = False
            for (of, agg, window), rolling in zip(specs, aggregates, strict=True):
                if t <= watermark - window:
                    continue  # already outside this window
                if of is not None:
                    value = data.get(of)
                    if value is None:
                        continue
                    if agg == "distinct":
                        value = value if value.__class__ is str else json.dumps(value)
                    elif value.__class__ is float or (value.__class__ is int):
                        value = float(value)
                        if not math.isfinite(value):
                            continue
                    else:
                        continue  # the API refuses these; a direct producer's bad value is skipped
                else:
                    value = None
                rolling.add(t, value)
                added = True
            if added:
                heap = vstate.heap
                for window in windows:
                    if t > watermark - window:
                        state.seq += 1
                        heapq.heappush(heap, (t + window, state.seq, key))
                self._dirty[name].add(key)
            elif not any(r.times for r in aggregates):
                del vstate.entities[key]
        if late:
            state.late += 1
        if advanced:
            self._expire(watermark)

    def _expire(self, watermark: float) -> None:
        for view in self.views:
            vstate = self.state.views[view.name]
            heap = vstate.heap
            dirty = self._dirty[view.name]
            while heap and heap[0][0] <= watermark:
                _, _, key = heapq.heappop(heap)
                aggregates = vstate.entities.get(key)
                if aggregates is None:
                    continue
                for rolling in aggregates:
                    rolling.expire(watermark - rolling.window)
                dirty.add(key)
                if not any(r.times for r in aggregates):
                    del vstate.entities[key]

    def _flush(self) -> None:
        watermark = self.state.watermark
        if watermark == -math.inf:
            return
        for view in self.views:
            dirty = self._dirty[view.name]
            entities = self.state.views[view.name].entities
            rows: dict[str, FeatureRecord] = {}
            deletes: list[str] = []
            for key in dirty:
                aggregates = entities.get(key)
                if aggregates is None:
                    deletes.append(key)
                    continue
                values = {spec.name: rolling.value() for spec, rolling in zip(view.aggregates, aggregates,
                                                                                strict=True)}
                rows[key] = FeatureRecord(values={k: v for k, v in values.items() if v is not None},
                                          timestamp=watermark)
            self.store.write(view.name, rows, deletes=deletes, meta={meta_watermark(view.name): repr(watermark)})
            dirty.clear()

    # --------------------------------------------------------------------------------------------------- reading

    def aggregates(self, view: str, key: str) -> dict[str, Any] | None:
        """The current values of one entity (None: no event in any window)."""
        spec = next(v for v in self.views if v.name == view)
        aggregates = self.state.views[view].entities.get(key)
        if aggregates is None:
            return None
        return {a.name: r.value() for a, r in zip(spec.aggregates, aggregates, strict=True)}

    def counters(self) -> dict[str, Any]:
        s = self.state
        return {"folded": s.folded, "late": s.late, "invalid": s.invalid, "last_id": s.last_id,
                "watermark": s.watermark if s.watermark != -math.inf else None,
                "entities": {name: len(v.entities) for name, v in s.views.items()}}
