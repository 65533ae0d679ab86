"""Per-row losses: small pure helpers, and the loss stream of a window of labeled predictions.

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

from monitors.protocols import LabeledRows

EPS = 1e-15  # log loss clips probabilities to [EPS, 1] so one confident mistake costs ~34.5, not infinity


def zero_one_loss(y_true: Sequence | pd.Series, y_pred: Sequence | pd.Series) -> np.ndarray:
    """1.0 where the prediction differs from the label, else 0.0."""
    true = np.asarray(y_true, dtype=object)
    pred = np.asarray(y_pred, dtype=object)
    return (true != pred).astype(np.float64)


def squared_loss(
    y_true: Sequence[float] | pd.Series, y_pred: Sequence[float] | pd.Series
) -> np.ndarray:
    return (np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)) ** 2


def absolute_loss(
    y_true: Sequence[float] | pd.Series, y_pred: Sequence[float] | pd.Series
) -> np.ndarray:
    return np.abs(np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64))


def true_class_probability(y_true: Sequence | pd.Series, scores: pd.DataFrame) -> np.ndarray:
    """The probability each row gave to its own label (NaN where that score is unknown).

    Score columns are class labels; a label matches a column equal to it or to its ``str`` (JSON turns
    integer keys into strings).
    """
    labels = pd.Series(list(y_true) if not isinstance(y_true, pd.Series) else y_true, dtype=object)
    cols = pd.Index(scores.columns, dtype=object).get_indexer(labels)
    missing = cols < 0
    if missing.any():
        by_name = pd.Index([str(c) for c in scores.columns], dtype=object)
        cols[missing] = by_name.get_indexer(labels[missing].astype(str))
    if (cols < 0).any():
        raise ValueError(
            f"label {labels[cols < 0].iloc[0]!r} has no score column; the score columns are "
            f"{list(scores.columns)}. Log class probabilities for every class the model can predict."
        )
    values = scores.to_numpy(dtype=np.float64, na_value=np.nan)
    return values[np.arange(len(labels)), cols] if len(labels) else np.empty(0)


def log_loss_rows(y_true: Sequence | pd.Series, scores: pd.DataFrame) -> np.ndarray:
    """Negative log of the probability given to the true class (clipped to [1e-15, 1]); NaN where unknown."""
    return -np.log(np.clip(true_class_probability(y_true, scores), EPS, 1.0))


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
