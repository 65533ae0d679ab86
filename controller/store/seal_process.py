"""Where a seal is prepared: in the calling thread (:class:`ThreadPreparer`) or in a helper process of the store
(:class:`ProcessPreparer`), which reads the rows from its own snapshot and encodes the segment
(:mod:`controller.store.seal_prepare`), so the Python work of fetching and encoding never takes the writers' GIL.

Both have one verb, ``prepare(job) -> PreparedSeal | None``; :func:`preparer_for` picks one for an engine. The commit
stays in the store's process (:func:`controller.store.sealing.commit_prepared`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from typing import Protocol

import sqlalchemy as sa

from controller.store.db import begin_snapshot, create_store_engine, sqlite_file
from controller.store.seal_prepare import PreparedSeal, SealJob, prepare

log = logging.getLogger("driftpilot.store")

# The helper's scheduling priority (added to the store process's): sealing is maintenance, and on a machine with as
# many busy threads as cores the writers come first (sealing catches up when they pause; nothing is lost meanwhile).
HELPER_NICE = 10


class Preparer(Protocol):
    def prepare(self, job: SealJob) -> PreparedSeal | None: ...

    def close(self) -> None: ...


class ThreadPreparer:
    """Prepares in the calling thread from ``read()``'s snapshot (the store's :meth:`EventStore.read`)."""

    def __init__(self, read: Callable[[], AbstractContextManager[sa.Connection]]) -> None:
        self.read = read

    def prepare(self, job: SealJob) -> PreparedSeal | None:
        with self.read() as conn:
            return prepare(conn, job)

    def close(self) -> None:
        pass


class ProcessPreparer:
    """Prepares in one helper process (``spawn``: the store's threads make ``fork`` unsafe), started on first use and
    kept for the store's life. ``work(url, job)`` runs there (:func:`prepare_at`; a test passes another).

    A helper that cannot start falls back to ``fallback`` (logged once); a helper that dies mid-prepare fails this
    seal (the caller logs it, the rows stay in the row tables) and the next seal starts a new one."""

    def __init__(self, url: str, fallback: Preparer,
                 work: Callable[[str, SealJob], PreparedSeal | None] | None = None) -> None:
        self.url = url
        self.fallback = fallback
        self.work = work or prepare_at
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False  # the helper could not start: every prepare is the fallback's
        self._lock = threading.Lock()

    def prepare(self, job: SealJob) -> PreparedSeal | None:
        if self._broken:
            return self.fallback.prepare(job)
        try:
            with self._lock:
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_lower_priority)
                future = self._pool.submit(self.work, self.url, job)
        except (OSError, RuntimeError) as exc:
            log.warning("the sealing helper process could not start (%s); sealing of this store is prepared in its "
                        "own thread from now on", exc)
            self._broken = True
            return self.fallback.prepare(job)
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


def preparer_for(engine: sa.Engine, read: Callable[[], AbstractContextManager[sa.Connection]]) -> Preparer:
    """A helper process for a database another process can open (a SQLite file, a server); the calling thread for
    SQLite ``:memory:`` and ``file:`` URIs, whose database a new process could not see (or would open apart)."""
    in_thread = ThreadPreparer(read)
    if engine.dialect.name == "sqlite" and sqlite_file(engine) is None:
        return in_thread
    return ProcessPreparer(engine.url.render_as_string(hide_password=False), in_thread)


# ------------------------------------------------------------------------------------------- in the helper process

_ENGINES: dict[str, sa.Engine] = {}


def _lower_priority() -> None:
    os.nice(HELPER_NICE)


def prepare_at(url: str, job: SealJob) -> PreparedSeal | None:
    """In the helper: the job prepared from a snapshot of the database at ``url`` (an engine per URL, kept)."""
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = create_store_engine(url)
    with engine.connect() as conn, begin_snapshot(conn):
        return prepare(conn, job)
