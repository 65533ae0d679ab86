"""`driftpilot stream` as a real process, SIGKILLed mid-stream and started again: the aggregates in the online store
equal those computed from the definition over all events, each event counted once."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.features.serving import open_event_stream
from tests.features.test_stream import assert_same, oracle, seeded_events, stored, views_policy

pytestmark = pytest.mark.slow
EVENTS = 60_000
DRIFTPILOT = Path(sys.executable).with_name("driftpilot")


def start(policy_path: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(DRIFTPILOT), "--log-level", "INFO", "stream",
                             "--config", str(policy_path), "--report-every", "0.5"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": "."})


def wait_until(check, timeout: float, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None:
            pytest.fail(f"the stream processor exited ({process.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.005)


def test_kill_mid_stream_then_restart_counts_every_event_once(tmp_path: Path, prefix: str):
    policy = views_policy(tmp_path, prefix, batch=100, checkpoint=2000)
    policy_path = tmp_path / "activity.yaml"
    stream = open_event_stream(policy)
    events = seeded_events(EVENTS, seed=11)
    stream.append(events)
    stream.ensure_group()
    log = tmp_path / "stream.log"

    def read() -> int:
        return next(g["entries-read"] or 0 for g in stream.client.xinfo_groups(stream.stream)
                    if g["name"] == stream.group)

    first = start(policy_path, log)
    wait_until(lambda: read() >= 8_000, 60, "8,000 events were read", first, log)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    at_kill = read()
    assert at_kill < EVENTS, "the processor finished before the kill; the test did not kill it mid-stream"

    second = start(policy_path, log)
    try:
        wait_until(lambda: stream.backlog() == 0 and not stream.pending_ids(), 120, "the backlog was processed",
                   second, log)
        second.send_signal(signal.SIGTERM)  # a graceful stop saves a checkpoint
        assert second.wait(30) == 0, log.read_text()
    finally:
        if second.poll() is None:
            second.kill()

    checkpoint = pickle.loads(stream.load_checkpoint())
    assert checkpoint["state"].folded == EVENTS  # each event folded into the state once
    assert "resumed after" in log.read_text()
    view = policy.feature_views.stream_views[0]
    users = sorted({d["user_id"] for _, d in events})
    values, watermark = stored(policy, users)
    assert watermark == max(t for t, _ in events)
    assert_same({u: v for u, v in values.items() if v is not None}, oracle(view, events))
