"""What the benchmark scripts share: their first lines (which driftpilot they import, how many threads numpy may use),
loading a sibling script as a module, a free loopback port, and scratch PostgreSQL databases.

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
import uuid
from collections.abc import Iterable
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


def create_database(admin_url: str, prefix: str, *, template: str | None = None) -> str:
    """A new database ``<prefix>_<random>`` on the PostgreSQL server of ``admin_url`` (a copy of the database
    ``template``, which nobody may be connected to); its URL. Drop it with :func:`drop_databases`."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    _run_admin(admin_url, [f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")])
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_databases(admin_url: str, names: Iterable[str]) -> None:
    """Drop these databases (their names, as in the URLs :func:`create_database` returned), connected or not."""
    _run_admin(admin_url, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names])


def _run_admin(admin_url: str, statements: list[str]) -> None:
    import sqlalchemy as sa

    if not statements:
        return
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        admin.dispose()
