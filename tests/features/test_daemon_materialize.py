"""The daemon schedules one materialize job per batch view with a refresh schedule, and the job loads the view."""

from __future__ import annotations

from pathlib import Path

from controller.clock import ManualClock
from controller.features.serving import open_store
from controller.loop.daemon import Daemon
from controller.policy_loader import load_policy
from controller.store import EventStore
from tests.conftest import T0
from tests.features.conftest import write_policy, write_profile
from tests.features.test_serving import PROFILE


def test_a_batch_view_with_a_refresh_schedule_gets_a_materialize_job(tmp_path: Path, prefix: str):
    write_profile(tmp_path, PROFILE)
    path = write_policy(tmp_path, prefix)
    path.write_text(path.read_text().replace("refresh: {every: 1h}", 'refresh: {cron: "15 * * * *"}'))
    loaded = load_policy(path, environ={})
    clock = ManualClock(T0)
    store = EventStore.from_url(loaded.config.storage.url, clock)
    daemon = Daemon([loaded], {"fraud": store}, {"fraud": None}, clock,
                    scheduler_url=f"sqlite:///{tmp_path}/jobs.db", max_workers=1, owner="test")
    daemon.start()
    try:
        job = daemon.scheduler.get_job("materialize:fraud:user_profile")
        assert job is not None and "minute='15'" in str(job.trigger)
        assert daemon.scheduler.get_job("materialize:fraud:user_activity") is None  # a stream view: no job
        daemon.materialize("fraud", "user_profile")
    finally:
        daemon.stop()
        store.dispose()
    (record,), _ = open_store(loaded.config).read([("user_profile", "u-1")])
    assert dict(record.values) == {"avg_amount_30d": 40.0, "segment": "gold"}
