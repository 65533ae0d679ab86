"""The fingerprint of a labeled window (controller/store/fingerprint.py): the vectorized form equals the row-by-row
one that lineage records were written with.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from controller.store import segments as seg
from tests.conftest import T0


def reference_fingerprint(prediction_ids: pd.Series, labels: pd.Series, label_times: pd.Series) -> str:
    """The store's fingerprint as it was written first, row by row (lineage records hold such fingerprints)."""
    import hashlib

    digest = hashlib.sha256()
    for pid, value, arrived in zip(prediction_ids, labels, label_times, strict=True):
        value = value.item() if isinstance(value, np.generic) else value
        digest.update(f"{pid}\x1f{json.dumps(value)}\x1f{arrived.isoformat()}\x1e".encode())
    return digest.hexdigest()


@pytest.mark.parametrize("labels", [["UP", "DOWN", "UP"], [1, 0, 1], [0.5, 1e16, -0.0], ["a", None, 3],
                                    [{"k": 1}, [1, 2], "x"], []])
def test_the_vectorized_fingerprint_equals_the_row_by_row_one(labels: list[Any]) -> None:
    n = len(labels)
    ids = pd.Series([f"id-{i}-é" for i in range(n)], dtype=object)
    values = pd.Series(labels, dtype=object if not labels or not all(
        isinstance(v, (int, float)) for v in labels) else None)
    times = pd.Series(pd.to_datetime([T0 + timedelta(microseconds=7 * i, seconds=i) for i in range(n)], utc=True))
    expected = reference_fingerprint(ids, values, times)
    assert seg.fingerprint_columns(ids.to_numpy(dtype=object), values,
                                   pd.DatetimeIndex(times).as_unit("us").asi8) == expected
