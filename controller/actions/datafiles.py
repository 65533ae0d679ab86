"""Read training and scoring files (CSV, Parquet, ARFF inside a zip) into frames typed by the policy's schema."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd

from controller.config import PolicyConfig
from controller.errors import DriftpilotError
from controller.store import features_frame

READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".zip": "arff-zip", ".arff": "arff"}


class DataFileError(DriftpilotError):
    """A data file cannot be read or does not match the policy's schema."""


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV, Parquet or ARFF file (or a zip holding one ARFF file) as a DataFrame of raw values."""
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise DataFileError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(READERS)}")
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    if kind == "csv":
        return pd.read_csv(path)
    if kind == "parquet":
        return pd.read_parquet(path)
    if kind == "arff":
        return _read_arff(path.read_text())
    with zipfile.ZipFile(path) as archive:
        members = [n for n in archive.namelist() if n.lower().endswith(".arff")]
        if len(members) != 1:
            raise DataFileError(f"{path}: expected exactly one .arff file in the zip, found {members}")
        return _read_arff(archive.read(members[0]).decode("utf-8"))


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "parquet":
        frame.to_parquet(path, index=False)
    else:
        raise DataFileError(f"{path}: cannot write {path.suffix!r}; use .csv or .parquet")


def features_from_table(table: pd.DataFrame, policy: PolicyConfig, source: str) -> pd.DataFrame:
    """The policy's feature columns, typed (numeric float, categorical str, boolean bool); errors name the columns."""
    missing = [name for name, spec in policy.features.items() if spec.required and name not in table.columns]
    if missing:
        raise DataFileError(f"{source}: required feature column(s) {missing} are missing; the file has "
                            f"{list(table.columns)}")
    raw = {name: table[name] if name in table.columns else pd.Series([None] * len(table)) for name in policy.features}
    prepared = {}
    for name, spec in policy.features.items():
        column = raw[name]
        if spec.type == "numeric":
            numbers = pd.to_numeric(column, errors="coerce")
            bad = column.notna() & numbers.isna()
            if bad.any():
                row = int(bad.idxmax())
                raise DataFileError(f"{source}: column {name!r} must be numeric; row {row} has {column[row]!r}")
            prepared[name] = numbers.astype("float64")
        elif spec.type == "categorical":
            prepared[name] = column.map(lambda v: None if pd.isna(v) else str(v))
        else:
            prepared[name] = column.map(_to_bool(name, source))
    records = pd.DataFrame(prepared).to_dict(orient="records")
    return features_frame(records, policy.feature_types)


def target_from_table(table: pd.DataFrame, policy: PolicyConfig, source: str) -> pd.Series:
    name = policy.target.name
    if name not in table.columns:
        raise DataFileError(f"{source}: target column {name!r} is missing; the file has {list(table.columns)}")
    target = table[name].reset_index(drop=True)
    if target.isna().any():
        raise DataFileError(f"{source}: target column {name!r} has {int(target.isna().sum())} empty value(s)")
    if policy.task == "regression":
        return pd.to_numeric(target, errors="raise").astype("float64")
    classes = policy.target.classes
    if classes is not None:
        # Files carry text; map each value to the class it spells (so "1" becomes 1 when classes are [0, 1]).
        by_text = {str(c): c for c in classes}
        unknown = sorted({str(v) for v in target if str(v) not in by_text})
        if unknown:
            raise DataFileError(f"{source}: target values {unknown[:10]} are not in target.classes {classes}")
        return target.map(lambda v: by_text[str(v)]).astype(object)
    return target.map(lambda v: v.item() if hasattr(v, "item") else v).astype(object)


def _to_bool(name: str, source: str):
    truthy, falsy = {"true", "1", "yes"}, {"false", "0", "no"}

    def convert(value: object) -> bool | None:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in truthy:
            return True
        if text in falsy:
            return False
        raise DataFileError(f"{source}: column {name!r} must be boolean (true/false/1/0), got {value!r}")

    return convert


def _read_arff(text: str) -> pd.DataFrame:
    """A small ARFF reader: numeric attributes become floats, nominal ones ({a,b,...}) stay text."""
    names: list[str] = []
    numeric: set[str] = set()
    lines = iter(text.splitlines())
    for line in lines:
        stripped = line.strip()
        if stripped.lower().startswith("@attribute"):
            _, name, kind = stripped.split(None, 2)
            name = name.strip("'\"")
            names.append(name)
            if kind.strip().lower() in ("numeric", "real", "integer"):
                numeric.add(name)
        elif stripped.lower().startswith("@data"):
            break
    body = "\n".join(line for line in lines if line.strip() and not line.startswith("%"))
    frame = pd.read_csv(io.StringIO(body), header=None, names=names, dtype=str, keep_default_na=False)
    for name in numeric:
        frame[name] = pd.to_numeric(frame[name])
    return frame
