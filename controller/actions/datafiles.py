"""Read training and scoring files (CSV, Parquet, ARFF inside a zip) into frames typed by the policy's schema.

A file that cannot be used raises :class:`DataFileError` with one line naming the file, the column and the row where
it helps, and what to do; the CLI prints it and exits with code 2. That covers files that are corrupt or truncated,
columns the policy does not know, missing columns or values, numbers beyond a 64-bit float, NaN/infinity where the
feature does not allow them, and text the event store cannot keep (NUL characters).
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from controller.config import PolicyConfig
from controller.errors import DriftpilotError
from controller.store import features_frame

READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".zip": "arff-zip", ".arff": "arff"}
FORMATS = {"csv": "CSV", "parquet": "Parquet", "arff-zip": "a zip holding one ARFF file", "arff": "ARFF"}
# What the readers raise on a corrupt or truncated file (pyarrow's ArrowInvalid is a ValueError, ArrowIOError an
# OSError; pandas' ParserError and EmptyDataError are ValueErrors, a bad encoding a UnicodeDecodeError).
UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, IndexError, KeyError)


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
    try:
        return _read(path, kind)
    except DataFileError:
        raise
    except UNREADABLE as exc:
        raise DataFileError(f"{path}: cannot read it as {FORMATS[kind]} ({_reason(exc)}); check that the file is "
                            "complete (not truncated) and really in that format") from None


def _read(path: Path, kind: str) -> pd.DataFrame:
    if kind == "csv":
        return pd.read_csv(path)
    if kind == "parquet":
        return pd.read_parquet(path)
    if kind == "arff":
        return _read_arff(path.read_text(encoding="utf-8"))
    with zipfile.ZipFile(path) as archive:
        members = [n for n in archive.namelist() if n.lower().endswith(".arff")]
        if len(members) != 1:
            raise DataFileError(f"{path}: expected exactly one .arff file in the zip, found {members}")
        return _read_arff(archive.read(members[0]).decode("utf-8"))


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind not in ("csv", "parquet"):
        raise DataFileError(f"{path}: cannot write {path.suffix!r}; use .csv or .parquet")
    try:
        if kind == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    except OSError as exc:
        raise DataFileError(f"{path}: cannot write it ({_reason(exc)}); check that the folder exists and is "
                            "writable") from None


def features_from_table(table: pd.DataFrame, policy: PolicyConfig, source: str, *,
                        extra_columns: Collection[str] = ()) -> pd.DataFrame:
    """The policy's feature columns, typed (numeric float, categorical str, boolean bool); errors name the columns.

    Columns that are neither features, nor the target, nor in ``extra_columns`` are refused: a column the policy
    does not know is usually a misspelt feature, silently missing from the model.
    """
    known = {*policy.features, policy.target.name, *extra_columns}
    unknown = [str(c) for c in table.columns if c not in known]
    if unknown:
        raise DataFileError(f"{source}: column(s) {unknown} are not in the policy (features: "
                            f"{list(policy.features)}, target: {policy.target.name!r}); remove them from the file, "
                            "or declare them under features:")
    missing = [name for name, spec in policy.features.items() if spec.required and name not in table.columns]
    if missing:
        raise DataFileError(f"{source}: required feature column(s) {missing} are missing; the file has "
                            f"{list(table.columns)}")
    raw = {name: table[name] if name in table.columns else pd.Series([None] * len(table)) for name in policy.features}
    prepared = {}
    for name, spec in policy.features.items():
        column = raw[name].reset_index(drop=True)
        if spec.required and column.isna().any():
            row = int(column.isna().to_numpy().argmax())
            raise DataFileError(f"{source}: required feature column {name!r} has {int(column.isna().sum())} empty "
                                f"value(s), the first in row {row}; fill them, or declare the feature "
                                "{type: ..., required: false}")
        if spec.type == "numeric":
            prepared[name] = _numbers(column, f"{source}: column {name!r}", allow_nan=spec.allow_nan)
        elif spec.type == "categorical":
            prepared[name] = _texts(column, f"{source}: column {name!r}")
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
        raise DataFileError(f"{source}: target column {name!r} has {int(target.isna().sum())} empty value(s), the "
                            f"first in row {int(target.isna().to_numpy().argmax())}")
    if policy.task == "regression":
        return _numbers(target, f"{source}: target column {name!r}", allow_nan=False)
    classes = policy.target.classes
    if classes is not None:
        # Files carry text; map each value to the class it spells (so "1" becomes 1 when classes are [0, 1]).
        by_text = {str(c): c for c in classes}
        unknown = sorted({str(v) for v in target if str(v) not in by_text})
        if unknown:
            raise DataFileError(f"{source}: target values {[v[:40] for v in unknown[:10]]} are not in "
                                f"target.classes {classes}")
        return target.map(lambda v: by_text[str(v)]).astype(object)
    labels = target.map(lambda v: v.item() if hasattr(v, "item") else v)
    _texts(labels.map(lambda v: v if isinstance(v, str) else None), f"{source}: target column {name!r}")
    return labels.astype(object)


def times_from_column(column: pd.Series, source: str) -> pd.Series:
    """Event times from a file column (text pandas can parse, or datetimes), as UTC; naive times are taken as UTC.
    An empty or unreadable value, or a time outside pandas' range (1677-2262), is refused naming its row."""
    column = column.reset_index(drop=True)
    try:
        times = pd.Series(pd.to_datetime(column, utc=True))
    except (ValueError, OverflowError, TypeError):
        times = pd.Series([_time_or_none(v) for v in column])
    if times.isna().any():
        row = int(times.isna().to_numpy().argmax())
        raise DataFileError(f"{source}: row {row} has {_short(column[row])}, not an event time driftpilot can hold; "
                            "use ISO 8601 times such as 2026-01-31T12:00:00Z, between 1678 and 2261")
    return times


def _time_or_none(value: object) -> pd.Timestamp | None:
    try:
        stamp = pd.to_datetime(value, utc=True)
    except (ValueError, OverflowError, TypeError):
        return None
    return None if pd.isna(stamp) else stamp


def _numbers(column: pd.Series, where: str, *, allow_nan: bool) -> pd.Series:
    """A column as float64; a value that is not a number, beyond a 64-bit float, or NaN/infinity where not allowed
    is refused naming its row."""
    column = column.reset_index(drop=True)
    try:
        numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    except (OverflowError, TypeError, ValueError):  # e.g. Python integers beyond int64 in an object column
        numbers = pd.Series([_float_or_nan(v) for v in column], dtype="float64")
    # Numeric text beyond a float ("1e400") comes back as NaN from to_numeric: it is caught below as unreadable.
    unreadable = column.notna() & numbers.isna()
    if unreadable.any():
        row = int(unreadable.to_numpy().argmax())
        value = column[row]
        if not (isinstance(value, float) and math.isnan(value)):
            if _beyond_float(value):
                raise DataFileError(f"{where}: row {row} has {_short(value)}, too large for a 64-bit float (at most "
                                    "about 1.8e308)")
            raise DataFileError(f"{where} must be numeric; row {row} has {_short(value)}")
    non_finite = ~np.isfinite(numbers.to_numpy()) & column.notna().to_numpy()
    if not allow_nan and non_finite.any():
        row = int(non_finite.argmax())
        raise DataFileError(f"{where}: row {row} has {_short(column[row])}, which is not a finite number (NaN, "
                            "infinity, or beyond a 64-bit float); fix the value, or set allow_nan: true on the "
                            "feature")
    return numbers


def _texts(column: pd.Series, where: str) -> pd.Series:
    """A column as str (None where empty); NUL characters, which the event store cannot keep, are refused."""
    texts = column.map(lambda v: None if pd.isna(v) else str(v))
    bad = texts.map(lambda v: v is not None and "\x00" in v)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataFileError(f"{where}: row {row} has a NUL character (\\x00), which the event store cannot keep; "
                            "remove it")
    return texts


def _float_or_nan(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _beyond_float(value: object) -> bool:
    """A number (or numeric text) a 64-bit float cannot hold: 10**400 or "1e400", but not "inf" itself."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        return True
    except (TypeError, ValueError):
        return False
    return math.isinf(number) and "inf" not in str(value).lower()


def _short(value: object, limit: int = 40) -> str:
    if isinstance(value, (float, np.floating)):
        return str(float(value))
    try:
        shown = str(value)
    except ValueError:  # an integer of more than 4300 digits
        return "<an integer of more than 4300 digits>"
    text = repr(value) if len(shown) < 4000 else f"<{len(shown)}-character value>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
