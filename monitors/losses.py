"""Per-row losses (the row scores of monitors.metrics under the concept-drift detectors' names), and the loss stream
of a window of labeled predictions.

>>> import numpy as np, pandas as pd
>>> zero_one_loss(pd.Series([1, 0, 1]), pd.Series([1, 1, 1])).tolist()
[0.0, 1.0, 0.0]
>>> log_loss_rows(pd.Series(["a", "b"]), pd.DataFrame({"a": [0.9, 0.5], "b": [0.1, 0.5]})).round(4).tolist()
[0.1054, 0.6931]
>>> squared_loss([1.0, 2.0], [1.5, 0.0]).tolist(), absolute_loss([1.0, 2.0], [1.5, 0.0]).tolist()
([0.25, 4.0], [0.5, 2.0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from monitors.metrics import EPS, row_scores
from monitors.protocols import LabeledRows

__all__ = ["EPS", "LossStream", "absolute_loss", "log_loss_rows", "loss_stream", "squared_loss", "zero_one_loss"]


def zero_one_loss(y_true: Sequence | pd.Series, y_pred: Sequence | pd.Series) -> np.ndarray:
    """1.0 where the prediction is another class than the label, else 0.0 ("1" and 1 are one class)."""
    return 1.0 - row_scores("accuracy", y_true, y_pred)


def squared_loss(
    y_true: Sequence[float] | pd.Series, y_pred: Sequence[float] | pd.Series
) -> np.ndarray:
    return row_scores("rmse", y_true, y_pred)


def absolute_loss(
    y_true: Sequence[float] | pd.Series, y_pred: Sequence[float] | pd.Series
) -> np.ndarray:
    return row_scores("mae", y_true, y_pred)


def log_loss_rows(y_true: Sequence | pd.Series, scores: pd.DataFrame) -> np.ndarray:
    """Negative log of the probability given to the true class, clipped to [EPS, 1]; NaN on rows without scores.

    A label without a score column had probability 0 (the clipped maximum, about 34.5); see monitors.metrics.
    """
    return row_scores("log_loss", y_true, None, proba=scores)


PREDICTION_LOSSES: dict[str, Callable[..., np.ndarray]] = {
    "zero_one": zero_one_loss,
    "squared": squared_loss,
    "absolute": absolute_loss,
}


@dataclass(frozen=True)
class LossStream:
    """Per-row losses with the label seq and arrival time of each row, in label-arrival order."""

    losses: np.ndarray
    row_ids: np.ndarray
    times: pd.Series
    rows_without_prediction: int


def loss_stream(rows: LabeledRows, loss: str, *, model_version: str | None = None) -> LossStream:
    """The ``loss`` of each logged prediction in ``rows`` (rows without one are dropped and counted).

    ``model_version`` keeps only rows predicted by that registry version, so a new champion's detector
    is not fed its predecessor's errors.
    """
    keep = np.ones(len(rows.labels), dtype=bool)
    if model_version is not None:
        keep &= (rows.model_versions.astype(object) == str(model_version)).to_numpy()
    if loss == "log_loss":
        if rows.scores is None:
            raise ValueError(
                "loss log_loss needs logged class probabilities, but this window has no scores; "
                "log scores with the predictions or use loss: zero_one"
            )
        values = log_loss_rows(rows.labels[keep], rows.scores.loc[keep])
        have = ~np.isnan(values)
    elif loss in PREDICTION_LOSSES:
        predictions = rows.predictions[keep]
        have = ~pd.isna(predictions).to_numpy()
        values = np.full(int(keep.sum()), np.nan)
        values[have] = PREDICTION_LOSSES[loss](rows.labels[keep][have], predictions[have])
    else:
        raise ValueError(
            f"unknown loss {loss!r}; valid losses: zero_one, log_loss, squared, absolute"
        )
    return LossStream(
        losses=values[have],
        row_ids=rows.label_seqs[keep][have].to_numpy(dtype=np.int64),
        times=rows.label_times[keep][have].reset_index(drop=True),
        rows_without_prediction=int((~have).sum()),
    )
