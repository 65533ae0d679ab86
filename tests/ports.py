"""A free loopback port for a server a test starts (``driftpilot serve``, ``mlflow server``, a Dask scheduler)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now: bound, read and released (the server started next binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
