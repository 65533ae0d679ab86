"""The sealing helper process (controller/store/seal_process.py) never outlives the store's process: a process killed
without closing its store (kill -9 here; SIGTERM'd server workers did the same) leaves no helper behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.store.tables import segments

REPO = Path(__file__).resolve().parents[2]

# Opens a store on a SQLite file with background sealing, writes enough labels to seal, waits for the helper to seal
# them, prints its child processes, then kills itself: nothing closes the store or its helper.
SCRIPT = """\
import glob, json, os, signal, sys
from datetime import datetime, timezone

from controller.clock import ManualClock
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.events import Sealing

if __name__ == "__main__":  # the helper is spawned: it imports this file again
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    store = EventStore.from_url(sys.argv[1], ManualClock(t0), sealing=Sealing(rows=50, keep_rows=0, mode="background"))
    store.add_predictions("m", [PredictionRecord({"x": float(i)}, t0, prediction=0, prediction_id=f"p{i}")
                                for i in range(200)])
    store.add_labels("m", [LabelRecord(f"p{i}", 0) for i in range(200)])
    store.wait_for_sealing(120)
    children = [int(pid) for path in glob.glob("/proc/self/task/*/children") for pid in open(path).read().split()]
    print(json.dumps(children), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for the container's init, which may never reap it)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from Linux's /proc")
def test_a_killed_store_process_leaves_no_sealing_helper_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    script = tmp_path / "write_and_die.py"
    script.write_text(SCRIPT)
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:  # files, not pipes: an orphan would hold a pipe open
        done = subprocess.run([sys.executable, str(script), url], stdout=stdout, stderr=stderr, cwd=REPO,
                              timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert done.returncode == -9, err.read_text()
    children = json.loads(out.read_text().strip().splitlines()[-1])
    assert children, "the store started no helper process"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:  # the helper did seal before its parent died
            assert conn.execute(sa.select(sa.func.sum(segments.c.row_count))).scalar_one() == 200
    finally:
        engine.dispose()
    deadline = time.monotonic() + 60
    pause = threading.Event()
    while any(running(pid) for pid in children):
        assert time.monotonic() < deadline, f"helper processes still running 60 s after their store's process " \
                                            f"died: {[pid for pid in children if running(pid)]}"
        pause.wait(0.2)
