"""Helpers shared by the store tests: two windows (or frames) that must be equal to the last bit."""

from __future__ import annotations

import pandas as pd


def frame_equal(a: pd.DataFrame | None, b: pd.DataFrame | None) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def windows_equal(a, b) -> None:
    frame_equal(a.features, b.features)
    frame_equal(a.scores, b.scores)
    for name in ("labels", "predictions", "prediction_ids", "event_times", "label_times", "model_versions",
                 "label_seqs"):
        pd.testing.assert_series_equal(getattr(a, name), getattr(b, name), check_exact=True)
    assert a.fingerprint == b.fingerprint
    assert (a.rows, a.start, a.end, a.last_seq) == (b.rows, b.start, b.end, b.last_seq)
