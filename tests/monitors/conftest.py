"""Test data for the monitors: a frozen window shaped like the store's LabeledWindow, and seeded streams."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    """Satisfies monitors.protocols.LabeledRows (test data, not a mock)."""

    labels: pd.Series
    predictions: pd.Series
    scores: pd.DataFrame | None
    label_seqs: pd.Series
    label_times: pd.Series
    model_versions: pd.Series


def make_window(
    labels, predictions, scores=None, versions=None, first_seq=1, step=timedelta(minutes=1)
) -> Window:
    n = len(labels)
    return Window(
        labels=pd.Series(list(labels)),
        predictions=pd.Series(list(predictions), dtype=object),
        scores=None if scores is None else pd.DataFrame(scores).reset_index(drop=True),
        label_seqs=pd.Series(np.arange(first_seq, first_seq + n), dtype="int64"),
        label_times=pd.Series(pd.date_range(T0, periods=n, freq=step, tz="UTC"))
        if n
        else pd.Series([], dtype="datetime64[ns, UTC]"),
        model_versions=pd.Series(
            list(versions) if versions is not None else ["1"] * n, dtype=object
        ),
    )


def error_stream(
    seed: int, n: int, change_at: int | None = None, before: float = 0.1, after: float = 0.4
) -> np.ndarray:
    """0/1 errors: Bernoulli(before), switching abruptly to Bernoulli(after) at ``change_at``."""
    rng = np.random.default_rng(seed)
    p = np.full(n, before)
    if change_at is not None:
        p[change_at:] = after
    return (rng.random(n) < p).astype(np.float64)
