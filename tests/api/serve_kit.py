"""Real `driftpilot serve` processes for the multi-process tests (concurrent writers, replicas)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.ports import free_port

DRIFTPILOT = Path(sys.executable).with_name("driftpilot")


class ServeProcesses:
    """``count`` `driftpilot serve [--workers N]` processes on free loopback ports, started together; stopped with
    SIGTERM (killed after ``stop``'s timeout). ``label`` names them in logs and failures."""

    def __init__(self, policy: Path, count: int, folder: Path, *, workers: int = 1, env: dict[str, str] | None = None,
                 label: str = "server") -> None:
        self.label = label
        self.ports = [free_port() for _ in range(count)]
        self.logs = [folder / f"{label}-{i}.log" for i in range(count)]
        command = [str(DRIFTPILOT), "--log-level", "WARNING", "serve", "--config", str(policy)]
        if workers > 1:
            command += ["--workers", str(workers)]
        self.procs: list[subprocess.Popen] = []
        for port, log in zip(self.ports, self.logs, strict=True):
            with open(log, "w") as out:
                self.procs.append(subprocess.Popen(
                    [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=folder,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}))

    def wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(range(len(self.ports)))
        while pending:  # a bounded poll on real subprocesses
            for i in sorted(pending):
                if self.procs[i].poll() is not None:
                    raise AssertionError(f"{self.label} {i} exited with {self.procs[i].returncode}:\n"
                                         f"{self.logs[i].read_text()}")
                try:
                    if httpx.get(f"http://127.0.0.1:{self.ports[i]}/healthz", timeout=1).status_code == 200:
                        pending.discard(i)
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label}s {sorted(pending)} not healthy after {timeout_s} s")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 30) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
