"""The daemon's APScheduler thread pool drops a job the scheduler hands over while it shuts down (no traceback)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from controller.loop.daemon import ClosingThreadPoolExecutor


def _scheduler_with(executor: ThreadPoolExecutor, ran: threading.Event) -> tuple[BackgroundScheduler, object]:
    scheduler = BackgroundScheduler(executors={"default": executor}, timezone="UTC")
    scheduler.start(paused=True)
    job = scheduler.add_job(ran.set, "interval", hours=1, id="job")
    return scheduler, job


def test_a_job_submitted_after_shutdown_is_dropped_quietly() -> None:
    ran = threading.Event()
    executor = ClosingThreadPoolExecutor(2)
    scheduler, job = _scheduler_with(executor, ran)
    scheduler.shutdown(wait=True)
    # What the scheduler thread does when its timer passed the "paused?" check just before shutdown took the lock.
    executor.submit_job(job, [datetime.now(UTC)])
    assert not ran.is_set()


def test_the_plain_pool_raises_there_which_is_why_the_daemon_does_not_use_it() -> None:
    ran = threading.Event()
    executor = ThreadPoolExecutor(2)
    scheduler, job = _scheduler_with(executor, ran)
    scheduler.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit_job(job, [datetime.now(UTC)])


def test_before_shutdown_jobs_run() -> None:
    ran = threading.Event()
    executor = ClosingThreadPoolExecutor(2)
    scheduler, job = _scheduler_with(executor, ran)
    try:
        executor.submit_job(job, [datetime.now(UTC)])
        assert ran.wait(timeout=30)
    finally:
        scheduler.shutdown(wait=True)
