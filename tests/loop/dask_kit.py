"""Real ``dask scheduler`` / ``dask worker`` subprocesses for the Dask executor's tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.loop.daemon_kit import REPO, tail, wait_until
from tests.ports import free_port


class DaskCluster:
    """``dask scheduler`` and ``dask worker`` subprocesses, each in its own process group (killed whole at the end)."""

    def __init__(self, folder: Path, workers: int = 2, *, allowed_failures: int = 0) -> None:
        dask = Path(sys.executable).with_name("dask")
        self.folder = folder
        self.address = f"tcp://127.0.0.1:{free_port()}"
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
               # A task whose worker dies fails at once (KilledWorker) instead of being started again elsewhere.
               "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(allowed_failures)}
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        port = self.address.rsplit(":", 1)[1]
        self._start("scheduler", [str(dask), "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
                    env)
        for n in range(workers):
            self._start(f"worker-{n}", [str(dask), "worker", self.address, "--nthreads", "1", "--no-dashboard",
                                        "--name", f"w{n}"], env)

    def _start(self, label: str, command: list[str], env: dict[str, str]) -> None:
        log = self.folder / f"dask-{label}.log"
        with open(log, "w") as out:  # the workers run in their own folder: only the store and MLflow connect them
            self.procs.append(subprocess.Popen(command, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT,
                                               env=env, start_new_session=True))
        self.logs.append(log)

    def output(self) -> str:
        return "\n".join(f"--- {log.name}:\n{tail(log.read_text(errors='replace'), 30)}" for log in self.logs)

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        def ready() -> bool:
            try:
                with Client(self.address, timeout=2, set_as_default=False) as client:
                    return len(client.scheduler_info()["workers"]) >= count
            except OSError:
                return False

        wait_until(ready, f"{count} Dask workers on {self.address}", 90)

    def group_of(self, pid: int) -> int:
        return os.getpgid(pid)

    def worker_groups(self) -> set[int]:
        return {proc.pid for proc in self.procs[1:]}

    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=10)

    def kill_scheduler(self) -> None:
        os.killpg(self.procs[0].pid, signal.SIGKILL)
        self.procs[0].wait(timeout=10)
