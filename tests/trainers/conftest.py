"""Fixtures of the trainer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # OpenMP models (HistGradientBoosting) oversubscribe the shared 2-core box: 0.2 s fits
    # took 10 s under load with two threads. One thread keeps the suite fast and stable.
    # Module scope, so the limit is lifted before other test folders run.
    with threadpool_limits(limits=1):
        yield
