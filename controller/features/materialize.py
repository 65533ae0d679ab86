"""Materialization: a batch view's source (a CSV/Parquet file or a SQL query) -> the online store.

Each row of the source is one entity's features, typed by the model's ``features:``. Several rows for one entity:
the newest (``timestamp_column``) wins. Every value is checked before anything is written, and a source that does
not fit is one :class:`MaterializeError` naming the view, the column and the row. A record's timestamp is the row's
timestamp (or, without a timestamp column, the time of materialization); /predict's age of the feature counts from
there. Entities absent from a newer source keep their older record, which ages into ``max_age`` (stale).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from controller.clock import Clock
from controller.errors import DriftpilotError
from controller.features.config import BatchView, FileSource, QuerySource
from controller.features.lookup import ENTITY_KEY_MAX
from controller.features.online_store import FeatureRecord, OnlineStore, meta_materialized

CHUNK = 5000


class MaterializeError(DriftpilotError):
    """A batch view's source cannot be materialized; nothing of that view was written."""


@dataclass(frozen=True)
class MaterializeReport:
    view: str
    rows: int
    entities: int
    seconds: float
    as_of: float

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.view, "rows": self.rows, "entities": self.entities, "seconds": round(self.seconds, 3),
                "as_of": self.as_of}


def read_source(view: BatchView) -> pd.DataFrame:
    source = view.source
    if isinstance(source, FileSource):
        path = Path(source.path)
        if not path.is_file():
            raise MaterializeError(f"feature view {view.name!r}: source file {path} does not exist; fix "
                                   "source.path (relative to the working directory)")
        try:
            if path.suffix.lower() in (".parquet", ".pq"):
                return pd.read_parquet(path)
            if path.suffix.lower() in (".csv", ".txt") or path.name.lower().endswith(".csv.gz"):
                return pd.read_csv(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad source, reported in one line
            raise MaterializeError(f"feature view {view.name!r}: cannot read {path}: {_first_line(exc)}") from None
        raise MaterializeError(f"feature view {view.name!r}: {path} is neither CSV (.csv) nor Parquet (.parquet)")
    assert isinstance(source, QuerySource)
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(source.url)
        try:
            with engine.connect() as connection:
                return pd.read_sql_query(sa.text(source.query), connection)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001
        raise MaterializeError(f"feature view {view.name!r}: the source query failed on "
                               f"{sa.engine.make_url(source.url).render_as_string(hide_password=True)}: "
                               f"{_first_line(exc)}") from None


def materialize_view(view: BatchView, feature_types: Mapping[str, str], store: OnlineStore, clock: Clock,
                     frame: pd.DataFrame | None = None) -> MaterializeReport:
    """Read (or take) the view's source, check it, and write one record per entity into ``store``."""
    started = time.perf_counter()
    frame = read_source(view) if frame is None else frame
    now = clock.now().timestamp()
    records = to_records(view, feature_types, frame, now)
    items = list(records.items())
    for start in range(0, len(items), CHUNK):
        last = start + CHUNK >= len(items)
        meta = {meta_materialized(view.name): json.dumps({"at": now, "rows": len(frame), "entities": len(records)})}
        store.write(view.name, dict(items[start:start + CHUNK]), meta=meta if last else None)
    if not items:
        store.write(view.name, {}, meta={meta_materialized(view.name): json.dumps({"at": now, "rows": 0,
                                                                                   "entities": 0})})
    return MaterializeReport(view=view.name, rows=len(frame), entities=len(records),
                             seconds=time.perf_counter() - started, as_of=now)


def to_records(view: BatchView, feature_types: Mapping[str, str], frame: pd.DataFrame, now: float
               ) -> dict[str, FeatureRecord]:
    """The source rows as records by entity key (the newest row per entity), every value checked."""
    where = f"feature view {view.name!r}"
    stamp = view.source.timestamp_column
    needed = [view.entity, *view.features] + ([stamp] if stamp else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise MaterializeError(f"{where}: the source has no column(s) {missing}; it has {list(frame.columns)}. "
                               "Select them in the query / file, or fix the view's entity/features")
    keys = [_entity_key(where, view.entity, i, v) for i, v in enumerate(frame[view.entity].tolist())]
    columns = {name: _typed(where, name, feature_types[name], frame[name]) for name in view.features}
    if stamp:
        try:
            times = pd.to_datetime(frame[stamp], utc=True)
        except (ValueError, TypeError) as exc:
            raise MaterializeError(f"{where}: timestamp column {stamp!r} holds values that are not times: "
                                   f"{_first_line(exc)}") from None
        if times.isna().any():
            row = int(np.flatnonzero(times.isna().to_numpy())[0])
            raise MaterializeError(f"{where}: timestamp column {stamp!r} is empty in row {row}")
        stamps = (times.astype("int64") / 1e9).tolist()
    else:
        stamps = [now] * len(frame)
    records: dict[str, FeatureRecord] = {}
    for i, key in enumerate(keys):
        previous = records.get(key)
        if previous is not None and previous.timestamp > stamps[i]:
            continue  # an older row of the same entity
        values = {name: columns[name][i] for name in view.features if columns[name][i] is not None}
        records[key] = FeatureRecord(values=values, timestamp=stamps[i])
    return records


def _entity_key(where: str, column: str, row: int, value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is None or (isinstance(value, float) and math.isnan(value)) or isinstance(value, bool):
        raise MaterializeError(f"{where}: entity column {column!r} is empty (or not a key) in row {row}; every row "
                               "needs its entity key")
    text = str(value)
    if not 0 < len(text) <= ENTITY_KEY_MAX or "\x00" in text:
        raise MaterializeError(f"{where}: entity key in row {row} must be 1-{ENTITY_KEY_MAX} characters without NUL")
    return text


def _typed(where: str, name: str, kind: str, column: pd.Series) -> list[Any]:
    values = column.tolist()
    out: list[Any] = []
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            out.append(None)
            continue
        if kind == "numeric":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
                raise MaterializeError(f"{where}: column {name!r} is numeric in the policy, but row {row} holds "
                                       f"{value!r}; fix the source or the feature's type")
            number = float(value)
            if not math.isfinite(number):
                raise MaterializeError(f"{where}: column {name!r} holds {number} in row {row}; the online store "
                                       "keeps finite numbers (leave the cell empty for a missing value)")
            out.append(number)
        elif kind == "boolean":
            if isinstance(value, (bool, np.bool_)) or value in (0, 1):
                out.append(bool(value))
            else:
                raise MaterializeError(f"{where}: column {name!r} is boolean in the policy, but row {row} holds "
                                       f"{value!r}; use true/false (or 1/0)")
        else:
            if not isinstance(value, str):
                raise MaterializeError(f"{where}: column {name!r} is categorical in the policy, but row {row} holds "
                                       f"{value!r} ({type(value).__name__}); categories are strings")
            out.append(value)
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
