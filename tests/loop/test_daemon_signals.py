"""`driftpilot run --no-api` stops on a SIGTERM that the kernel hands to one of its other threads.

A process-directed signal may be delivered to any thread; CPython runs the Python handler only in the main thread,
when that thread executes bytecode. A main thread blocked for good on a lock (``Event.wait()``) never did: the daemon
kept ticking after SIGTERM (seen once in CI). Here the signal is sent to a chosen non-main thread with ``tgkill``."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
from pathlib import Path

import pytest

from tests.loop.daemon_kit import Daemon, make_toy, shared_mlflow_dir

pytestmark = pytest.mark.slow

TGKILL = {"x86_64": 234, "aarch64": 131}  # syscall numbers


def tgkill(pid: int, tid: int, sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(TGKILL[platform.machine()], pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill({pid}, {tid}, {sig}) failed")


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() not in TGKILL, reason="tgkill is Linux's")
def test_sigterm_delivered_to_a_non_main_thread_stops_the_daemon_gracefully(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, model_name: str) -> None:
    toy = make_toy(tmp_path, model_name, mlflow_dir=shared_mlflow_dir(tmp_path_factory))
    daemon = Daemon(tmp_path, [toy.path], label="signals")
    try:
        daemon.wait_until(lambda: daemon.owns(getattr(toy.lease(), "holder", None)), "the daemon's lease")
        others = [int(t) for t in os.listdir(f"/proc/{daemon.pid}/task") if int(t) != daemon.pid]
        assert others, "the daemon runs its scheduler in threads besides the main one"
        tgkill(daemon.pid, others[0], signal.SIGTERM)
        code = daemon.proc.wait(timeout=30)
        assert code == 0, daemon.output()[-3000:]
        assert toy.lease() is None  # a graceful stop released the lease
        assert any(line["message"] == "received SIGTERM: stopping" for line in daemon.log_lines())
    finally:
        daemon.cleanup()
