"""Sealing: moving a model's oldest labeled rows from the row tables into a new segment, and when a store does it.

* :class:`Sealing`: the settings (segment size, rows kept in the row tables, background | inline | off), also from
  the environment (docs/deployment.md);
* :func:`seal_segments`: a store's model sealed segment by segment while enough rows are due, each segment in two
  steps: prepared from a read snapshot with no lock held (:mod:`controller.store.seal_prepare`), then committed in a
  short write transaction that checks the block is still exact and moves it, or finds it stale and has it prepared
  again (:mod:`controller.store.seal_commit`); both in the calling thread or in the store's helper process
  (:mod:`controller.store.seal_process`);
* :class:`Sealer`: a store's trigger: counts the label rows it writes and, past a quarter segment, seals inline (in
  the writer's thread) or asks its background thread (one per store, coalescing requests; it seals through the
  store's helper process).

Reads return exactly what they returned before a seal; only their speed and the database's size change. The sealed
tier's lookups (segments, ids, overwrites) are :mod:`controller.store.sealed`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.store.seal_commit import SealResult
from controller.store.seal_prepare import SealJob
from controller.store.seal_process import SegmentSealer

if TYPE_CHECKING:
    from controller.store.events import EventStore

log = logging.getLogger("driftpilot.store")


@dataclass(frozen=True)
class Sealing:
    """When a model's labeled rows move from the row tables into segments (docs/architecture.md).

    Each segment holds ``rows`` label rows; a model keeps at least ``keep_rows`` labeled rows in the row tables (its
    newest, where overwrites and the loop's cursors mostly are). ``mode``: ``"background"`` (after label writes,
    a thread of this store seals what is due), ``"inline"`` (the writer seals after its commit; deterministic, for
    tests and benchmarks), ``"off"`` (only :meth:`EventStore.seal` does)."""

    rows: int = 20_000
    keep_rows: int = 10_000
    mode: str = "background"

    def __post_init__(self) -> None:
        if self.rows < 1 or self.keep_rows < 0:
            raise ValueError(f"Sealing needs rows >= 1 and keep_rows >= 0, got rows={self.rows}, "
                             f"keep_rows={self.keep_rows}")
        if self.mode not in ("background", "inline", "off"):
            raise ValueError(f"Sealing mode must be 'background', 'inline' or 'off', got {self.mode!r}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Sealing:
        """The defaults, or ``DRIFTPILOT_SEGMENT_ROWS`` / ``DRIFTPILOT_SEGMENT_KEEP_ROWS`` / ``DRIFTPILOT_SEALING``
        (background | inline | off) when set: every process that opens the store reads them (docs/deployment.md)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for key, name in (("rows", "DRIFTPILOT_SEGMENT_ROWS"), ("keep_rows", "DRIFTPILOT_SEGMENT_KEEP_ROWS")):
            if environ.get(name):
                try:
                    values[key] = int(environ[name])
                except ValueError:
                    raise ValueError(f"{name}={environ[name]!r} is not a whole number of rows; unset it for the "
                                     f"default ({getattr(cls, key)})") from None
        if environ.get("DRIFTPILOT_SEALING"):
            values["mode"] = environ["DRIFTPILOT_SEALING"]
        return cls(**values)


# A prepared block found stale this many times in a row: give up until the next trigger (writers keep overwriting
# the model's oldest labels; rows stay in the row tables meanwhile, reads are exact either way).
MAX_STALE = 3


def seal_segments(store: EventStore, model: str, *, keep_rows: int | None = None, min_rows: int | None = None,
                  where: SegmentSealer | None = None) -> list[SealResult]:
    """:meth:`EventStore.seal <controller.store.events.EventStore.seal>`: segments of ``store.sealing.rows`` rows
    while more than ``keep_rows`` would stay, each prepared from a snapshot and committed in its own short write
    transaction, by ``where`` (default: in this thread; the background sealer's helper process)."""
    keep = store.sealing.keep_rows if keep_rows is None else keep_rows
    where = where or store.in_thread_sealer
    # The prepare joins the model's rows: the planner must know its size (wherever the prepare then runs).
    store.statistics.ensure(model)
    job = SealJob(model, store.sealing.rows, keep, min_rows)
    results: list[SealResult] = []
    stale = 0
    while True:
        # No pause between segments is needed for SQLite's unfair write lock (a waiting writer polls with growing
        # sleeps): the next prepare, hundreds of milliseconds without the lock, comes between two commits.
        step = where.seal(job, store.clock.now())
        if step is None:
            return results
        result = step.result
        if result is None:
            stale += 1
            log.info("the prepared segment of %s (seqs %d-%d) changed before its commit (%d of %d); preparing again",
                     model, step.first_seq, step.last_seq, stale, MAX_STALE)
            if stale >= MAX_STALE:
                log.warning("sealing %s gave up after %d stale prepares; retried after the next label writes",
                            model, stale)
                return results
            continue
        stale = 0
        log.info("sealed %d rows of %s (seqs %d-%d) into segment %d: %d bytes; prepared in %.0f ms, committed in "
                 "%.0f ms after %.0f ms waiting for the lock", result.rows, model, result.first_seq, result.last_seq,
                 result.segment_id, result.bytes, step.prepared_s * 1e3, step.held_s * 1e3, step.waited_s * 1e3)
        results.append(result)


class Sealer:
    """When a store seals: label rows written by this store are counted per model; past a quarter segment,
    ``seal(model, where)`` runs inline with ``in_thread`` (mode ``inline``) or on the store's background thread with
    the sealer ``helper()`` makes (``background``: the helper process; both started on first use); mode ``off``
    never seals here."""

    def __init__(self, sealing: Sealing, seal: Callable[[str, SegmentSealer], Any], in_thread: SegmentSealer,
                 helper: Callable[[], SegmentSealer]) -> None:
        self.sealing = sealing
        self.seal = seal
        self.in_thread = in_thread
        self.helper = helper
        self._since_check: dict[str, int] = {}
        self._thread: _SealThread | None = None
        self._helper: SegmentSealer | None = None
        self._lock = threading.Lock()

    def labels_written(self, model: str, rows: int) -> None:
        """Count label rows written by this store; past a quarter segment, look whether sealing is due."""
        if self.sealing.mode == "off" or rows == 0:
            return
        written = self._since_check.get(model, 0) + rows
        if written < max(1, self.sealing.rows // 4):
            self._since_check[model] = written
            return
        self._since_check[model] = 0
        if self.sealing.mode == "inline":
            self.seal_quietly(model, self.in_thread)
            return
        with self._lock:
            if self._thread is None:
                self._helper = self.helper()
                helper = self._helper
                self._thread = _SealThread(lambda name: self.seal_quietly(name, helper))
            self._thread.request(model)

    def seal_quietly(self, model: str, where: SegmentSealer) -> None:
        """Sealing is maintenance: a failure is logged (and retried after the next quarter segment), never raised into
        the writer whose batch is committed already."""
        try:
            self.seal(model, where)
        except Exception:
            log.exception("sealing %s failed; its rows stay in the row tables and sealing is retried later", model)

    def drain(self, timeout_s: float) -> None:
        """Block until the background thread has nothing left to do."""
        thread = self._thread
        if thread is not None:
            thread.drain(timeout_s)

    def stop(self) -> None:
        thread, helper = self._thread, self._helper
        if thread is not None:
            thread.stop()
        if helper is not None:
            helper.close()


class _SealThread:
    """The background thread of one store that seals models after label writes (one at a time, coalescing requests).
    A daemon thread: a process that exits mid-seal rolls that transaction back; nothing is half-moved."""

    def __init__(self, work: Callable[[str], None]) -> None:
        self.work = work
        self._pending: dict[str, None] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="driftpilot-sealer", daemon=True)
        self._thread.start()

    def request(self, model: str) -> None:
        with self._cond:
            self._pending[model] = None
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                model = next(iter(self._pending))
                del self._pending[model]
                self._busy = True
            try:
                self.work(model)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def drain(self, timeout_s: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: (not self._pending and not self._busy) or self._stopped,
                                       timeout=timeout_s):
                raise TimeoutError(f"the store's sealer still busy after {timeout_s:g} s")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
