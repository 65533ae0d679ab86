"""What the benchmark scripts share: their first lines (which driftpilot they import, how many threads numpy may use),
loading a sibling script as a module, and a free loopback port.

A script imports this before numpy or driftpilot (run as a script, this folder is ``sys.path[0]``)::

    import bench_kit

    bench_kit.one_thread_per_process()  # only the scripts that pin BLAS/OpenMP threads
    REPO = bench_kit.repo_first()

    import numpy as np
    from controller... import ...
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def one_thread_per_process() -> None:
    """One BLAS/OpenMP thread per process unless the environment says otherwise: the scripts that run many processes
    (or time one core) must not have each process's numpy spread over every core. Call it before numpy is
    imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def repo_first() -> Path:
    """Put this checkout's root first on ``sys.path`` and this folder last, and return the root.

    Run as a script, this folder is ``sys.path[0]``: ``benchmarks/controller.py``, ``monitors.py`` and ``trainers.py``
    would shadow the packages of the same name, and without the root first an installed (editable) driftpilot of
    another checkout would be measured. This folder stays reachable, last, for the scripts that import a sibling
    (``store_rows``)."""
    here, root = str(HERE), str(REPO)
    others = [p for p in sys.path if p != root and Path(p or ".").resolve() != HERE]
    sys.path[:] = [root, *others, here]
    return REPO


def load_script(script: str) -> ModuleType:
    """``benchmarks/<script>.py``, a script, loaded as the module ``benchmark_<script>`` (once per process)."""
    name = f"benchmark_{script}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
