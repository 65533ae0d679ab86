"""A `driftpilot serve` that can be SIGKILLed and started again on the same port (a client's base URL does not
change across a restart), a transport that kills it at planned requests, and the toy model with a token it serves
(:func:`token_toy`, :func:`serving`: the module fixtures of the client and replay tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.loop.daemon_kit import DRIFTPILOT, Toy, make_toy, shared_mlflow_dir
from tests.ports import free_port


def token_toy(factory: pytest.TempPathFactory, prefix: str, token_env: str, api: str = "") -> Toy:
    """The daemon kit's toy model under a fresh name, its API guarded by the token in ``token_env``; ``api``: more
    ``api:`` settings (e.g. ``"max_batch_items: 50, "``)."""
    return make_toy(factory.mktemp(prefix), f"m-{uuid.uuid4().hex[:8]}", mlflow_dir=shared_mlflow_dir(factory),
                    extra=f"api: {{{api}token_env: {token_env}}}")


@contextmanager
def serving(toy: Toy, env: dict[str, str]) -> Iterator[Server]:
    """``driftpilot serve`` of ``toy`` started with ``env``, killed on exit."""
    server = Server(toy.path, toy.path.parent, env=env)
    try:
        server.start()
        yield server
    finally:
        server.kill()


class Server:
    """``driftpilot serve --config policy`` in its own process group on a fixed free port."""

    def __init__(self, policy: Path, folder: Path, env: dict[str, str]) -> None:
        self.policy = policy
        self.folder = folder
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 120.0) -> None:
        """Start it and wait until /readyz answers 200 (a bounded poll on the real subprocess)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(DRIFTPILOT), "--log-level", "WARNING", "serve", "--config", str(self.policy), "--port",
                 str(self.port)], cwd=self.folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"driftpilot serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"driftpilot serve not ready after {timeout_s} s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL to the whole process group: nothing graceful, no response finished, no transaction committed."""
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)


class Chaos(httpx.BaseTransport):
    """The real HTTP transport, with the server SIGKILLed at planned requests, keyed (route, n-th request to that
    route, retries included), at one of three moments:

    - ``before`` the request is sent: the port is dead, the connection is refused for real;
    - ``during``: from another thread as the request goes out: refused, cut mid-request, or answered, whichever
      the race gives (every outcome must end the same);
    - ``after`` the server answered: it committed, and the answer is lost as if the connection broke on its way
      back; the retry re-sends what is already stored.
    """

    def __init__(self, server: Server, plan: dict[tuple[str, int], str]) -> None:
        self.inner = httpx.HTTPTransport()
        self.server = server
        self.plan = dict(plan)
        self.seen: Counter[str] = Counter()
        self.fired: list[tuple[str, int, str]] = []
        self.failures: list[str] = []  # the transport errors the client saw

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        route = request.url.path.rsplit("/", 1)[-1]
        self.seen[route] += 1
        when = self.plan.pop((route, self.seen[route]), None)
        if when is not None:
            self.fired.append((route, self.seen[route], when))
        if when == "before":
            self.server.kill()
        killer = threading.Thread(target=self.server.kill) if when == "during" else None
        if killer is not None:
            killer.start()
        try:
            response = self.inner.handle_request(request)
            if when == "after":
                response.read()
                self.server.kill()
                raise httpx.ReadError("the connection broke before the answer arrived (test: server SIGKILLed)")
            return response
        except httpx.TransportError as exc:
            self.failures.append(type(exc).__name__)
            raise
        finally:
            if killer is not None:
                killer.join()

    def close(self) -> None:
        self.inner.close()
