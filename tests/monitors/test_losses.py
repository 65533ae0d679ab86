"""Loss helpers and the loss stream of a window."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from monitors import absolute_loss, log_loss_rows, loss_stream, squared_loss, zero_one_loss
from tests.monitors.conftest import make_window


def test_pure_helpers():
    assert zero_one_loss(["a", "b", True], ["a", "c", True]).tolist() == [0.0, 1.0, 0.0]
    assert squared_loss([1.0, -1.0], [0.0, 1.0]).tolist() == [1.0, 4.0]
    assert absolute_loss([1.0, -1.0], [0.0, 1.0]).tolist() == [1.0, 2.0]
    # String columns, as JSON stores them
    scores = pd.DataFrame({"0": [0.25, 0.0], "1": [0.75, 1.0]})
    losses = log_loss_rows([1, 0], scores)
    assert losses[0] == pytest.approx(-math.log(0.75)) and losses[1] == pytest.approx(
        -math.log(1e-15)
    )


def test_a_label_without_a_score_column_had_probability_zero():
    # The model gave class "c" nothing: the clipped maximum, as for any probability 0 (monitors.metrics).
    losses = log_loss_rows(["a", "c"], pd.DataFrame({"a": [0.5, 0.5], "b": [0.5, 0.5]}))
    assert losses.tolist() == pytest.approx([-math.log(0.5), -math.log(1e-15)])


def test_loss_stream_drops_rows_without_prediction_and_keeps_seq_and_time():
    window = make_window([1, 0, 1, 1], [1, None, 0, 1], first_seq=41)
    stream = loss_stream(window, "zero_one")
    assert stream.losses.tolist() == [0.0, 1.0, 0.0]
    assert stream.row_ids.tolist() == [41, 43, 44] and stream.rows_without_prediction == 1
    assert stream.times.tolist() == window.label_times.iloc[[0, 2, 3]].tolist()


def test_log_loss_stream_skips_unknown_scores_and_needs_scores():
    scores = pd.DataFrame({0: [0.9, np.nan, 0.2], 1: [0.1, np.nan, 0.8]})
    stream = loss_stream(make_window([0, 1, 1], [0, 1, 1], scores), "log_loss")
    assert (
        stream.losses == pytest.approx([-math.log(0.9), -math.log(0.8)])
        and stream.rows_without_prediction == 1
    )
    with pytest.raises(ValueError, match="use loss: zero_one"):
        loss_stream(make_window([0], [0]), "log_loss")


def test_loss_stream_of_one_model_version():
    window = make_window([1.0, 2.0, 3.0], [1.5, 2.0, 1.0], versions=["3", "4", "4"])
    assert loss_stream(window, "squared", model_version="4").losses.tolist() == [0.0, 4.0]
    assert loss_stream(window, "absolute", model_version="9").losses.tolist() == []
