"""Test data for the trainer tests: a window type satisfying TrainingWindow, and seeded streams."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from river.datasets import synth

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIXED_TYPES = {"num_a": "numeric", "num_b": "numeric", "color": "categorical", "flag": "boolean"}


@dataclass(frozen=True)
class Window:
    """The shape of the controller's LabeledWindow, built from plain frames."""

    as_of: datetime
    features: pd.DataFrame
    labels: pd.Series
    prediction_ids: pd.Series
    label_seqs: pd.Series
    start: datetime | None
    end: datetime | None
    fingerprint: str

    @property
    def rows(self) -> int:
        return len(self.labels)


def make_window(features: pd.DataFrame, labels, *, first_seq: int = 1) -> Window:
    """Rows get consecutive label seqs from `first_seq` and one arrival per minute from T0."""
    features = features.reset_index(drop=True)
    labels = pd.Series(list(labels)).reset_index(drop=True)
    n = len(labels)
    seqs = pd.Series(np.arange(first_seq, first_seq + n, dtype="int64"))
    ids = pd.Series([f"p{s}" for s in seqs], dtype=object)
    arrivals = [T0 + timedelta(minutes=int(s)) for s in seqs]
    digest = hashlib.sha256()
    for pid, label, at in zip(ids, labels, arrivals):
        digest.update(f"{pid}|{label}|{at.isoformat()}\n".encode())
    return Window(
        as_of=(arrivals[-1] if n else T0) + timedelta(seconds=1),
        features=features,
        labels=labels,
        prediction_ids=ids,
        label_seqs=seqs,
        start=arrivals[0] if n else None,
        end=arrivals[-1] if n else None,
        fingerprint=digest.hexdigest(),
    )


def fake_timer(step: float = 0.5):
    """A timer that advances `step` seconds per reading (so duration_s == step)."""
    ticks = itertools.count(0.0, step)
    return lambda: next(ticks)


def mixed_frame(n: int, seed: int, flip: bool = False) -> tuple[pd.DataFrame, pd.Series]:
    """Numeric (with NaN), categorical (with None) and boolean (with None) features.

    `flip` reverses the concept: the sign of every effect changes.
    """
    rng = np.random.default_rng(seed)
    num_a = rng.normal(size=n)
    num_b = rng.normal(size=n)
    color = rng.choice(np.array(["red", "green", "blue"], dtype=object), size=n)
    flag = rng.random(n) < 0.5
    effect = {"red": 1.0, "green": -1.0, "blue": 0.0}
    score = 1.5 * num_a - 1.0 * num_b + np.array([effect[c] for c in color]) + 1.2 * (flag - 0.5)
    score = -score if flip else score
    y = (score + rng.normal(scale=0.3, size=n) > 0).astype(int)
    num_b[rng.random(n) < 0.1] = np.nan
    color = color.astype(object)
    color[rng.random(n) < 0.05] = None
    flag = flag.astype(object)
    flag[rng.random(n) < 0.05] = None
    frame = pd.DataFrame({"num_a": num_a, "num_b": num_b, "color": color, "flag": flag})
    return frame, pd.Series(y)


def river_frame(stream, n: int, rename=None, categorical=()) -> tuple[pd.DataFrame, pd.Series]:
    """Take n rows of a River stream into a DataFrame; listed columns become str categories."""
    xs, ys = [], []
    for x, y in stream.take(n):
        xs.append(x)
        ys.append(y)
    frame = pd.DataFrame(xs)
    if rename:
        frame = frame.rename(columns=rename)
    for column in categorical:
        frame[column] = frame[column].map(str).astype(object)
    return frame, pd.Series(ys)


AGRAWAL_TYPES = {
    "salary": "numeric", "commission": "numeric", "age": "numeric", "elevel": "categorical",
    "car": "categorical", "zipcode": "categorical", "hvalue": "numeric", "hyears": "numeric",
    "loan": "numeric",
}


def agrawal(n: int, function: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    return river_frame(
        synth.Agrawal(classification_function=function, seed=seed), n,
        categorical=("elevel", "car", "zipcode"),
    )


SGD = {
    "pipeline": [
        {"class": "sklearn.preprocessing.StandardScaler"},
        {"class": "sklearn.linear_model.SGDClassifier", "params": {"loss": "log_loss"}},
    ]
}
RIVER_LR = {
    "pipeline": [
        {"class": "river.preprocessing.StandardScaler"},
        {"class": "river.linear_model.LogisticRegression"},
    ]
}


def context(spec: dict, feature_types=None, task="classification", seed=0, classes=()):
    from trainers import EstimatorSpec, TrainingContext

    return TrainingContext(
        estimator=EstimatorSpec.model_validate(spec),
        feature_types=feature_types or MIXED_TYPES,
        task=task,
        seed=seed,
        classes=classes,
    )
