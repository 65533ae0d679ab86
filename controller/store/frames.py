"""Window assembly: pandas columns from :class:`~controller.store.segments.Part` s of rows, the path every window read
takes (sealed segments and the row tables' newest rows alike), and feature frames from plain feature dicts.

:func:`assemble_window` turns parts into the columns of a :class:`~controller.store.records.LabeledWindow` with
vectorized conversions and the same sha256 fingerprint (:mod:`controller.store.fingerprint`) the row-by-row reader
computed; :func:`features_frame` is the dict-rows path of ``/predict`` and of ``predictions_frame``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from controller.store.fingerprint import fingerprint_columns
from controller.store.segments import DictColumn, Part, ValueColumn


@dataclass
class WindowColumns:
    """The columns of a labeled window in seq order (see :func:`assemble_window`): the fields of
    :class:`~controller.store.records.LabeledWindow` after ``model`` and ``as_of``, which it is built from."""

    features: pd.DataFrame
    labels: pd.Series
    predictions: pd.Series
    scores: pd.DataFrame | None
    prediction_ids: pd.Series
    event_times: pd.Series
    label_times: pd.Series
    model_versions: pd.Series
    label_seqs: pd.Series
    fingerprint: str


def order_of(parts: Sequence[Part]) -> np.ndarray | None:
    """The permutation that puts the concatenated parts in seq order, or None when they already are."""
    if len(parts) < 2:
        seqs = parts[0].ints("seq") if parts else np.empty(0, dtype=np.int64)
    else:
        seqs = np.concatenate([p.ints("seq") for p in parts])
    if seqs.size < 2 or bool((seqs[1:] > seqs[:-1]).all()):
        return None
    return np.argsort(seqs, kind="stable")


def _concat(pieces: list[np.ndarray], order: np.ndarray | None, dtype: Any = None) -> np.ndarray:
    if not pieces:
        return np.empty(0, dtype=dtype or object)
    out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    if dtype is not None and out.dtype != dtype:
        out = out.astype(dtype)
    return out if order is None else out[order]


def assemble_window(parts: Sequence[Part], feature_types: Mapping[str, str] | None) -> WindowColumns:
    """The window's columns from parts of rows (each in seq order, together covering the window's rows once)."""
    parts = [p for p in parts if len(p)]
    order = order_of(parts)
    n = sum(len(p) for p in parts)
    index = pd.RangeIndex(n)

    label_times_us = _concat([p.ints("arrived_at") for p in parts], order, np.int64)
    seqs = _concat([p.ints("seq") for p in parts], order, np.int64)
    pids = _concat([p.objects("prediction_id") for p in parts], order, object)
    labels = _labels([p.value_column("value") for p in parts], order)
    features = _features(parts, order, feature_types, index)
    scores = _scores([p.dict_column("scores") for p in parts], order, index)
    predictions = _concat([p.value_column("prediction").objects() for p in parts], order, object)
    event_us = _concat([p.ints("event_time") for p in parts], order, np.int64)
    versions = _concat([p.objects("model_version") for p in parts], order, object)
    label_times = pd.Series(pd.to_datetime(label_times_us, unit="us", utc=True), name="label_time")
    return WindowColumns(
        features=features,
        labels=labels,
        predictions=pd.Series(predictions, dtype=object, name="prediction"),
        scores=scores,
        prediction_ids=pd.Series(pids, dtype=object, name="prediction_id"),
        event_times=pd.Series(pd.to_datetime(event_us, unit="us", utc=True), name="event_time"),
        label_times=label_times,
        model_versions=pd.Series(versions, dtype=object, name="model_version"),
        label_seqs=pd.Series(seqs, dtype="int64", name="label_seq"),
        fingerprint=fingerprint_columns(pids, labels, label_times_us),
    )


def _labels(columns: list[ValueColumn], order: np.ndarray | None) -> pd.Series:
    types: set[type] = set()
    for column in columns:
        types |= column.python_types()
    if types == {float} and all(c.kind == "num" for c in columns):
        return pd.Series(_concat([c.numbers("float64") for c in columns], order, np.float64), dtype="float64",
                         name="label")
    if types == {int} and all(c.kind == "num" for c in columns):
        return pd.Series(_concat([c.numbers("int64") for c in columns], order, np.int64), dtype="int64",
                         name="label")
    values = _concat([c.objects() for c in columns], order, object)
    if types == {float}:
        return pd.Series(values.astype(np.float64), dtype="float64", name="label")
    if types == {int}:
        return pd.Series(values.astype(np.int64), dtype="int64", name="label")
    return pd.Series(values, dtype=object, name="label")


def _features(parts: Sequence[Part], order: np.ndarray | None, feature_types: Mapping[str, str] | None,
              index: pd.RangeIndex) -> pd.DataFrame:
    columns = [p.dict_column("features") for p in parts]
    if feature_types is None:
        # Columns and dtypes inferred from the data, as pandas does it from the stored dicts (the slow, exact way).
        dicts: list[Any] = [d for c in columns for d in c.dicts()]
        if order is not None:
            dicts = [dicts[i] for i in order]
        frame = pd.DataFrame.from_records(dicts) if dicts else pd.DataFrame()
        return frame.reset_index(drop=True)
    out: dict[str, Any] = {}
    for name, kind in feature_types.items():
        if kind == "numeric":
            out[name] = _concat([c.floats(name) for c in columns], order, np.float64)
        else:
            out[name] = _concat([c.objects(name) for c in columns], order, object)
    return pd.DataFrame(out, index=index)


def _scores(columns: list[DictColumn], order: np.ndarray | None, index: pd.RangeIndex) -> pd.DataFrame | None:
    """Like ``pd.DataFrame.from_records([s or {} for s in scores]).astype("float64")`` when any row has scores:
    one column per key in order of first appearance (row by row, each row's keys in its order), NaN where a row
    lacks the key."""
    n = len(index)
    positions = np.arange(n) if order is None else np.argsort(order, kind="stable")  # part row -> window row
    first: dict[str, tuple[int, int]] = {}
    offset = 0
    for column in columns:
        for key, (row, rank) in column.first_appearances().items():
            candidate = (int(positions[offset + row]) if order is None else
                         int(positions[offset + np.flatnonzero(column.key_present(key))].min()), rank)
            if key not in first or candidate < first[key]:
                first[key] = candidate
        offset += column.table.num_rows
    if not first:
        return None
    keys = sorted(first, key=first.__getitem__)
    data = {key: _concat([_score_floats(c, key) for c in columns], order, np.float64) for key in keys}
    return pd.DataFrame(data, index=index, columns=pd.Index(keys, dtype=object)).astype("float64")


def _score_floats(column: DictColumn, key: str) -> np.ndarray:
    values = column.floats(key)
    present = column.key_present(key)
    if not present.all():
        values = values.copy()
        values[~present] = np.nan
    return values


def newest_features_frame(pieces: Sequence[tuple[Part, np.ndarray]], max_rows: int | None,
                          feature_types: Mapping[str, str] | None) -> pd.DataFrame:
    """The features of ``(part, event times of its rows)`` pieces merged by event time: the newest ``max_rows``
    (all when None), oldest first."""
    times = np.concatenate([t for _, t in pieces])
    order = np.argsort(times, kind="stable")
    if max_rows is not None:
        order = order[max(0, len(order) - max_rows):] if max_rows else order[:0]
    return _features([p for p, _ in pieces], order, feature_types, pd.RangeIndex(len(order)))


def features_frame(feature_rows: list[Mapping[str, Any]], feature_types: Mapping[str, str] | None) -> pd.DataFrame:
    """Feature dicts as a DataFrame: numeric -> float64 (None/missing -> NaN; stored "NaN"/"Infinity" -> floats),
    categorical and boolean -> object (None where missing). Built column by column with plain lists: this runs on
    every /predict request, where pandas' per-row construction cost more than the model (docs/benchmarks-serve.md)."""
    if feature_types is None:
        frame = pd.DataFrame.from_records(feature_rows) if feature_rows else pd.DataFrame()
        return frame.reset_index(drop=True)
    columns: dict[str, Any] = {}
    for name, kind in feature_types.items():
        values = [row.get(name) for row in feature_rows]
        if kind == "numeric":
            columns[name] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        else:
            columns[name] = np.fromiter(values, dtype=object, count=len(values))  # a list value stays one object
    return pd.DataFrame(columns, index=pd.RangeIndex(len(feature_rows)))
