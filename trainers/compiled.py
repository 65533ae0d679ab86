"""A numpy-only forward pass for fitted driftpilot scikit-learn pipelines, for low-latency serving.

scikit-learn spends about 2 ms per call on a one-row DataFrame in the ``features`` ColumnTransformer (pandas column
selection, dataframe-protocol checks, joblib) while the model's arithmetic takes 0.15 ms (docs/benchmarks-serve.md).
:func:`compile_pipeline` reads the fitted preprocessing (imputer statistics, one-hot categories) once and applies it
to plain row dicts; the steps after it run on the resulting array as usual. It compiles only the shapes
:mod:`trainers.sklearn_adapter` builds, checks itself against the pipeline on probe rows, and returns ``None`` for
anything else, so a caller always has the pipeline to fall back on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from trainers.sklearn_adapter import FEATURES_STEP, booleans_to_float, categories_to_str


class CompiledPipeline:
    """``predict_proba_rows`` / ``predict_rows`` on feature dicts, equal to the pipeline on the same rows."""

    def __init__(self, blocks: list[_Block], steps: list[Any], final: Any) -> None:
        self._blocks = blocks
        self._steps = steps
        self.final = final
        self.classes_ = getattr(final, "classes_", None)

    def transform_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        X = np.hstack([block.encode(rows) for block in self._blocks])
        for step in self._steps:
            X = step.transform(X)
        return X

    def predict_proba_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.final.predict_proba(self.transform_rows(rows))

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.final.predict(self.transform_rows(rows))


def compile_pipeline(model: Any, probes: int = 16, seed: int = 0) -> CompiledPipeline | None:
    """A :class:`CompiledPipeline` equal to ``model`` on probe rows, or ``None`` if ``model`` has another shape."""
    if not isinstance(model, Pipeline) or model.steps[0][0] != FEATURES_STEP:
        return None
    features = model.steps[0][1]
    if not isinstance(features, ColumnTransformer) or not hasattr(features, "transformers_"):
        return None
    blocks = []
    for name, transformer, columns in features.transformers_:
        if name == "remainder":
            if transformer != "drop":
                return None
            continue
        block = _BLOCKS.get(name, lambda *_: None)(transformer, list(columns))
        if block is None:
            return None
        blocks.append(block)
    steps = [step for _, step in model.steps[1:-1]]
    if any(not hasattr(step, "transform") for step in steps):
        return None
    compiled = CompiledPipeline(blocks, steps, model.steps[-1][1])
    return compiled if _agrees(model, compiled, features, probes, seed) else None


# ------------------------------------------------------------------------------------------------ blocks


class _Block:
    columns: list[str]

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        raise NotImplementedError


class _Numeric(_Block):
    def __init__(self, columns: list[str], fill: np.ndarray) -> None:
        self.columns, self.fill = columns, fill

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        X = np.array([[_number(row.get(c)) for c in self.columns] for row in rows], dtype=np.float64)
        missing = np.isnan(X)
        if missing.any():
            X[missing] = np.broadcast_to(self.fill, X.shape)[missing]
        return X


class _OneHot(_Block):
    def __init__(self, columns: list[str], categories: list[np.ndarray]) -> None:
        self.columns = columns
        self.offsets, self.positions = [], []
        offset = 0
        for values in categories:
            self.offsets.append(offset)
            self.positions.append({_category_key(v): i for i, v in enumerate(values)})
            offset += len(values)
        self.width = offset

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        X = np.zeros((len(rows), self.width))
        for r, row in enumerate(rows):
            for column, offset, positions in zip(self.columns, self.offsets, self.positions, strict=True):
                value = row.get(column)
                index = positions.get(None if value is None else str(value))
                if index is not None:  # an unknown category encodes as all zeros (handle_unknown="ignore")
                    X[r, offset + index] = 1.0
        return X


class _Boolean(_Block):
    def __init__(self, columns: list[str], fill: np.ndarray) -> None:
        self.columns, self.fill = columns, fill

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        X = np.array([[np.nan if row.get(c) is None else float(bool(row.get(c))) for c in self.columns]
                      for row in rows], dtype=np.float64)
        missing = np.isnan(X)
        if missing.any():
            X[missing] = np.broadcast_to(self.fill, X.shape)[missing]
        return X


def _numeric(transformer: Any, columns: list[str]) -> _Block | None:
    if isinstance(transformer, SimpleImputer) and transformer.strategy in ("median", "mean"):
        return _Numeric(columns, np.asarray(transformer.statistics_, dtype=np.float64))
    return None


def _categorical(transformer: Any, columns: list[str]) -> _Block | None:
    if not isinstance(transformer, Pipeline) or len(transformer.steps) != 2:
        return None
    cast, encoder = transformer.steps[0][1], transformer.steps[1][1]
    if getattr(cast, "func", None) is not categories_to_str or not isinstance(encoder, OneHotEncoder):
        return None
    if encoder.drop_idx_ is not None or getattr(encoder, "_infrequent_enabled", False) \
            or encoder.handle_unknown != "ignore":
        return None
    return _OneHot(columns, list(encoder.categories_))


def _boolean(transformer: Any, columns: list[str]) -> _Block | None:
    if not isinstance(transformer, Pipeline) or len(transformer.steps) != 2:
        return None
    cast, imputer = transformer.steps[0][1], transformer.steps[1][1]
    if getattr(cast, "func", None) is not booleans_to_float or not isinstance(imputer, SimpleImputer):
        return None
    return _Boolean(columns, np.asarray(imputer.statistics_, dtype=np.float64))


_BLOCKS = {"numeric": _numeric, "categorical": _categorical, "boolean": _boolean}


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value)  # stored "NaN"/"Infinity" strings parse too


def _category_key(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


# ------------------------------------------------------------------------------------------------ self-check


def _agrees(model: Pipeline, compiled: CompiledPipeline, features: ColumnTransformer, probes: int,
            seed: int) -> bool:
    """Compare with the pipeline on rows that exercise every block: known and unknown categories, missing values."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = [{} for _ in range(probes)]
    for block in compiled._blocks:
        for j, column in enumerate(block.columns):
            for i, row in enumerate(rows):
                if i % 5 == 4:
                    row[column] = None
                elif isinstance(block, _Numeric):
                    row[column] = float(block.fill[j] + rng.normal())
                elif isinstance(block, _Boolean):
                    row[column] = bool(rng.integers(2))
                else:
                    known = [k for k in block.positions[j] if k is not None]
                    row[column] = known[i % len(known)] if known and i % 7 else "never-seen-category"
    names = list(features.feature_names_in_)
    frame = pd.DataFrame({name: [row.get(name) for row in rows] for name in names})
    for block in compiled._blocks:
        if isinstance(block, _Numeric):
            frame[block.columns] = frame[block.columns].astype(np.float64)
    try:
        if hasattr(model, "predict_proba"):
            return bool(np.allclose(model.predict_proba(frame), compiled.predict_proba_rows(rows), atol=1e-9))
        return bool(np.allclose(model.predict(frame), compiled.predict_rows(rows), atol=1e-9))
    except Exception:  # noqa: BLE001 - any disagreement in shape or type means: do not use the compiled path
        return False
