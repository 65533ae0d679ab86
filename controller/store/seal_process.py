"""Where a segment is sealed: in the calling thread (:class:`ThreadSealer`) or in a helper process of the store
(:class:`ProcessSealer`), which prepares it from its own snapshot (:mod:`controller.store.seal_prepare`) and commits
it on its own connection (:mod:`controller.store.seal_commit`), so neither step's Python work takes the writers' GIL.

Measured (docs/benchmarks-store.md): with the commit in the writers' process, its ~60 ms of SQLite work per 5,000 rows
held the write lock 100–200 ms, handing the GIL back and forth with the writer thread at every statement; in the
helper it holds it for its own work only.

Both have the verbs ``seal(job, now) -> SealStep | None`` (prepare, then commit) and ``prepare(job)`` (the dry half,
for tests); :func:`sealer_for` picks one for an engine.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from controller.store.db import begin_snapshot, begin_write, create_store_engine, sqlite_file
from controller.store.seal_commit import Connect, SealStep, seal_once
from controller.store.seal_prepare import PreparedSeal, SealJob, prepare

log = logging.getLogger("driftpilot.store")

# The helper's priority for preparing (added to the store process's): sealing is maintenance, and on a machine with
# as many busy threads as cores the writers come first. Only the preparing thread is lowered (Linux nice values are
# per thread): the commit holds the writers' lock and must not wait behind other processes for its core.
HELPER_NICE = 10


class SegmentSealer(Protocol):
    def seal(self, job: SealJob, now: datetime) -> SealStep | None: ...

    def prepare(self, job: SealJob) -> PreparedSeal | None: ...

    def close(self) -> None: ...


class ThreadSealer:
    """Seals in the calling thread: prepares from ``read()``'s snapshot, commits in ``transaction()`` (the store's
    :meth:`EventStore.read` and :meth:`EventStore.transaction`)."""

    def __init__(self, read: Connect, transaction: Connect) -> None:
        self.read = read
        self.transaction = transaction

    def prepare(self, job: SealJob) -> PreparedSeal | None:
        with self.read() as conn:
            return prepare(conn, job)

    def seal(self, job: SealJob, now: datetime) -> SealStep | None:
        return seal_once(self.prepare, self.transaction, job, now)

    def close(self) -> None:
        pass


class ProcessSealer:
    """Seals in one helper process (``spawn``: the store's threads make ``fork`` unsafe; as with any ``spawn``, a
    script's main module must guard its work with ``if __name__ == "__main__"``), started on first use and kept for
    the store's life. ``work(url, job, now)`` runs there (:func:`seal_at`; a test passes another).

    A helper that cannot start falls back to ``fallback`` (logged once); a helper that dies mid-seal fails this seal
    (the caller logs it; its transaction, if any, rolls back, so every row stays in place) and the next seal starts a
    new one."""

    def __init__(self, url: str, fallback: SegmentSealer,
                 work: Callable[[str, SealJob, datetime], SealStep | None] | None = None) -> None:
        self.url = url
        self.fallback = fallback
        self.work = work or seal_at
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False  # the helper could not start: every seal is the fallback's
        self._lock = threading.Lock()

    def seal(self, job: SealJob, now: datetime) -> SealStep | None:
        if not self._broken:
            try:
                return self._run(self.work, self.url, job, now)
            except _HelperUnavailable:
                pass
        return self.fallback.seal(job, now)

    def prepare(self, job: SealJob) -> PreparedSeal | None:
        if not self._broken:
            try:
                return self._run(prepare_at, self.url, job)
            except _HelperUnavailable:
                pass
        return self.fallback.prepare(job)

    def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            with self._lock:
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=watch_parent, initargs=(os.getpid(),))
                future = self._pool.submit(function, *args)
        except (OSError, RuntimeError) as exc:
            log.warning("the sealing helper process could not start (%s); this store seals in its own thread from "
                        "now on", exc)
            self._broken = True
            raise _HelperUnavailable from exc
        try:
            return future.result()
        except BrokenProcessPool:
            with self._lock:  # it died (killed, out of memory): the next seal starts a new one
                pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class _HelperUnavailable(Exception):
    """The helper process could not be started."""


def sealer_for(engine: sa.Engine, in_thread: ThreadSealer) -> SegmentSealer:
    """A helper process for a database another process can open (a SQLite file, a server), falling back to
    ``in_thread``; ``in_thread`` itself for SQLite ``:memory:`` and ``file:`` URIs, whose database a new process
    could not see (or would open apart)."""
    if engine.dialect.name == "sqlite" and sqlite_file(engine) is None:
        return in_thread
    return ProcessSealer(engine.url.render_as_string(hide_password=False), in_thread)


# ------------------------------------------------------------------------------------------- in the helper process

@functools.cache
def _engine(url: str) -> sa.Engine:
    """The helper's engine of ``url``, one per URL for the helper's life."""
    engine = create_store_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _no_sync_at_commit)
    return engine


def _no_sync_at_commit(dbapi_connection: Any, _record: Any) -> None:
    """The helper's SQLite commits skip the WAL fsync (``synchronous=NORMAL``; the store's own connections keep
    FULL): a seal is durable with the next writer's commit, whose fsync covers the whole WAL file before it, and a
    power cut before that loses the seal whole (WAL recovery stops at the last intact commit), never a writer's
    acknowledged batch and never half a seal. It saves the fsync while the writers' lock is held (measured ~15 ms of
    a ~65 ms commit per 5,000 rows)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# How often the helper looks whether the store's process is still there.
PARENT_CHECK_S = 1.0


def watch_parent(parent_pid: int, check_s: float = PARENT_CHECK_S) -> None:
    """The helper's initializer: a daemon thread that ends the helper once the store's process is gone. A process
    that exits without closing its store (SIGTERM'd server workers, kill -9, a script that never calls
    :meth:`EventStore.dispose`) would otherwise leave its helper running, orphaned, with pandas and pyarrow loaded
    (~270 MB each, seen). A seal cut short this way rolls back: its transaction never commits."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(check_s)
        os._exit(0)

    threading.Thread(target=watch, name="driftpilot-seal-parent-watch", daemon=True).start()


@functools.cache
def _preparing_thread() -> ThreadPoolExecutor:
    """The helper's one preparing thread, at ``nice`` +HELPER_NICE."""
    return ThreadPoolExecutor(max_workers=1, initializer=os.nice, initargs=(HELPER_NICE,))


def prepare_at(url: str, job: SealJob) -> PreparedSeal | None:
    """In the helper: the job prepared from a snapshot of the database at ``url`` (an engine per URL, kept), in the
    helper's low-priority thread."""
    def work() -> PreparedSeal | None:
        with _engine(url).connect() as conn, begin_snapshot(conn):
            return prepare(conn, job)

    return _preparing_thread().submit(work).result()


def seal_at(url: str, job: SealJob, now: datetime) -> SealStep | None:
    """In the helper: prepare (low priority), then commit on the helper's own connection (normal priority)."""

    return seal_once(lambda j: prepare_at(url, j), lambda: _write(_engine(url)), job, now)


@contextmanager
def _write(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as conn, begin_write(conn):
        yield conn
