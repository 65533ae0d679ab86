"""Sealed segments' codec: a model's labeled rows as compressed columnar blocks, and :class:`Part`, the columnar
form every window read takes (sealed blocks and the row tables' newest rows alike).

A block holds label rows in seq order, each with a copy of its prediction (features, prediction, scores, times,
version, source). It is an Arrow IPC stream compressed with zstd. Values keep their exact JSON types: a column is
typed when its values allow it (strings, booleans, numbers) and JSON text otherwise, so what comes out of a block is
what the row tables would have returned:

* ``num``: numbers as float64, plus a tag column when some were ints (exact below 2**53) or one of the strings
  "NaN"/"Infinity"/"-Infinity" the store writes for non-finite floats;
* ``str`` (dictionary-encoded when values repeat), ``bool``, ``null``;
* ``json``: JSON text of each value (mixed types, lists, objects, ints beyond 2**53).

Dict-valued columns (features, scores) get one such column per key, the keys each row had in its order (an index
into a short list of key orders: rows of one model nearly always share one), and a ``null`` column when the whole
dict is None for some rows.

:class:`Part` is a filtered block or a batch of row-table rows in the same form, read column by column
(:class:`ValueColumn`, :class:`DictColumn`); :mod:`controller.store.frames` assembles parts into a window's pandas
columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

# Re-exported: the window fingerprint lived here before it got a module of its own.
from controller.store.fingerprint import fingerprint_columns  # noqa: F401

FORMAT = "arrow-ipc-zstd/1"
# zstd level 6: about 4 % smaller blocks than the default 3 for about 30 % more sealing time; reads are unchanged.
_WRITE_OPTIONS = ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=6))
_LAYOUT_KEY = b"driftpilot.layout"
# Beyond this many distinct keys a dict column is stored as JSON text per row (no column per key).
MAX_KEYS = 512
_SPECIAL = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_TAG_FLOAT, _TAG_INT, _TAG_SPECIAL = 0, 1, 2
_EXACT_INT = 2**53

# The fixed columns of a block, in order. Times are int64 microseconds since the epoch, UTC.
FIXED = ("seq", "prediction_id", "arrived_at", "superseded_at", "owner", "event_time", "received_at",
         "model_version", "source")


@dataclass
class RowBlock:
    """Labeled rows in columnar Python form: what sealing writes and what a read of the row tables produces.

    One entry per label row; ``owner`` marks the row that carries its prediction as *the* stored prediction (a
    prediction's later label rows carry a copy). Times are int64 microseconds since the epoch (UTC)."""

    seq: np.ndarray
    prediction_id: list[str]
    value: list[Any]
    arrived_at: np.ndarray
    superseded_at: np.ndarray  # int64 with SUPERSEDED_NEVER where the label is still in force
    owner: np.ndarray
    event_time: np.ndarray
    received_at: np.ndarray
    model_version: list[str | None]
    source: list[str]
    prediction: list[Any]
    scores: list[Mapping[str, Any] | None]
    features: list[Mapping[str, Any]]

    def __len__(self) -> int:
        return len(self.seq)

    def column(self, name: str) -> np.ndarray:
        """A fixed column as numpy: int64 microseconds for times, objects for strings."""
        values = getattr(self, name)
        return values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)


# "Not superseded": larger than any real time, so `superseded_at > as_of` is one comparison.
SUPERSEDED_NEVER = np.iinfo(np.int64).max


# ---------------------------------------------------------------------------------------------------- encoding


def encode(block: RowBlock) -> pa.Table:
    """``block`` as an Arrow table whose schema metadata describes how to read each logical column back."""
    arrays: list[pa.Array] = []
    names: list[str] = []

    def add(name: str, array: pa.Array) -> str:
        names.append(name)
        arrays.append(array)
        return name

    add("seq", pa.array(np.asarray(block.seq, dtype=np.int64)))
    add("prediction_id", pa.array(block.prediction_id, pa.string()))
    add("arrived_at", pa.array(np.asarray(block.arrived_at, dtype=np.int64)))
    superseded = np.asarray(block.superseded_at, dtype=np.int64)
    add("superseded_at", pa.array(superseded, mask=superseded == SUPERSEDED_NEVER))
    add("owner", pa.array(np.asarray(block.owner, dtype=bool)))
    add("event_time", pa.array(np.asarray(block.event_time, dtype=np.int64)))
    add("received_at", pa.array(np.asarray(block.received_at, dtype=np.int64)))
    add("model_version", _strings(block.model_version))
    add("source", _strings(block.source))
    layout = {
        "v": 1,
        "value": _encode_values("value", block.value, add),
        "prediction": _encode_values("prediction", block.prediction, add),
        "scores": _encode_dicts("scores", block.scores, add),
        "features": _encode_dicts("features", block.features, add),
    }
    schema = pa.schema([pa.field(n, a.type) for n, a in zip(names, arrays, strict=True)],
                       metadata={_LAYOUT_KEY: json.dumps(layout).encode()})
    return pa.Table.from_arrays(arrays, schema=schema)


def to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_bytes(data: bytes | memoryview, columns: Sequence[str] | None = None) -> pa.Table:
    """A block back as a table; ``columns`` (physical names) reads only those (the others are not decompressed)."""
    source = pa.BufferReader(data)
    if columns is None:
        return ipc.open_stream(source).read_all()
    schema = ipc.open_stream(pa.BufferReader(data)).schema
    wanted = [i for i, name in enumerate(schema.names) if name in set(columns)]
    reader = ipc.open_stream(source, options=ipc.IpcReadOptions(included_fields=wanted))
    table = reader.read_all()
    return table.replace_schema_metadata(schema.metadata)


def layout_of(table: pa.Table) -> dict[str, Any]:
    return json.loads(table.schema.metadata[_LAYOUT_KEY])


def physical_columns(layout: Mapping[str, Any], logical: Iterable[str]) -> list[str]:
    """The physical column names behind logical ones (fixed names, "value", "prediction", "scores", "features")."""
    out: list[str] = []
    for name in logical:
        spec = layout.get(name)
        if spec is None:
            out.append(name)
        elif "keys" in spec:
            out += [f for f in (spec.get("null"), spec.get("json"), spec.get("order")) if f]
            for key in spec["keys"]:
                out += [f for f in (key.get("field"), key.get("tag")) if f]
        else:
            out += [f for f in (spec.get("field"), spec.get("tag")) if f]
    return out


def _strings(values: Sequence[str | None]) -> pa.Array:
    array = pa.array(values, pa.string())
    return array.dictionary_encode() if len(values) > 16 else array


def _kind(values: Sequence[Any]) -> str:
    types = set(map(type, values))
    types.discard(type(None))
    if not types:
        return "null"
    if types <= {str}:
        return "str"
    if types <= {bool}:
        return "bool"
    if types <= {float, int, str}:
        if str in types and not all(v in _SPECIAL for v in values if type(v) is str):
            return "json"
        if int in types and not all(-_EXACT_INT <= v <= _EXACT_INT for v in values if type(v) is int):
            return "json"
        return "num"
    return "json"


def _encode_values(name: str, values: Sequence[Any], add: Any) -> dict[str, Any]:
    kind = _kind(values)
    spec: dict[str, Any] = {"kind": kind, "field": None, "tag": None}
    if kind == "null":
        return spec
    if kind == "str":
        array = pa.array(values, pa.string())
        if len(values) > 16 and len(set(values)) * 2 <= len(values):
            array = array.dictionary_encode()
        spec["field"] = add(name, array)
    elif kind == "bool":
        spec["field"] = add(name, pa.array(values, pa.bool_()))
    elif kind == "num":
        types = set(map(type, values))
        floats = [_SPECIAL[v] if type(v) is str else v for v in values] if str in types else values
        spec["field"] = add(name, pa.array(floats, pa.float64()))
        if int in types or str in types:
            tags = [_TAG_INT if type(v) is int else _TAG_SPECIAL if type(v) is str else _TAG_FLOAT for v in values]
            spec["tag"] = add(name + ".tag", pa.array(tags, pa.uint8()))
    else:
        spec["field"] = add(name, pa.array([None if v is None else json.dumps(v) for v in values], pa.string()))
    return spec


def _encode_dicts(name: str, dicts: Sequence[Mapping[str, Any] | None], add: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"keys": [], "null": None, "json": None, "orders": [[]], "order": None}
    if any(d is None for d in dicts):
        spec["null"] = add(name + ".null", pa.array([d is None for d in dicts], pa.bool_()))
    keys = dict.fromkeys(k for d in dicts if d for k in d)
    if len(keys) > MAX_KEYS or not all(isinstance(d, dict) or d is None for d in dicts):
        spec["json"] = add(name + ".json", pa.array([None if d is None else json.dumps(d) for d in dicts],
                                                    pa.string()))
        return spec
    # Each row's keys in its own order (dict order is what pandas builds columns from), as an index into `orders`.
    position = {key: i for i, key in enumerate(keys)}
    signatures: dict[tuple[str, ...], int] = {}
    row_orders = [signatures.setdefault(tuple(d) if d else (), len(signatures)) for d in dicts]
    spec["orders"] = [[position[k] for k in signature] for signature in signatures] or [[]]
    if len(signatures) > 1:
        spec["order"] = add(name + ".order", pa.array(row_orders, pa.int32()))
    missing = _Missing()
    for i, key in enumerate(keys):
        column = [None if d is None else d.get(key, missing) for d in dicts]
        key_spec = _encode_values(f"{name}.{i}", [None if v is missing else v for v in column], add)
        key_spec["key"] = key
        spec["keys"].append(key_spec)
    return spec


class _Missing:
    """A key absent from a dict (distinct from a present None)."""


# ---------------------------------------------------------------------------------------------------- decoding


@dataclass
class Part:
    """Rows of one block (or of the row tables) after a read's filters, with the layout to read them."""

    table: pa.Table
    layout: dict[str, Any]

    @classmethod
    def of(cls, table: pa.Table) -> Part:
        return cls(table, layout_of(table))

    def __len__(self) -> int:
        return self.table.num_rows

    def take(self, indices: np.ndarray) -> Part:
        return Part(self.table.take(pa.array(indices, pa.int64())), self.layout)

    def ints(self, name: str) -> np.ndarray:
        """A fixed int64 column (times in microseconds; SUPERSEDED_NEVER where superseded_at is null)."""
        column = self.table.column(name)
        if column.null_count:
            column = pc.fill_null(column, SUPERSEDED_NEVER)
        return column.to_numpy()

    def objects(self, name: str) -> np.ndarray:
        """A fixed column as Python objects (None where null)."""
        return _objects_of(self.table.column(name))

    def column(self, name: str) -> np.ndarray:
        """A fixed column as numpy: :meth:`ints` for int64 columns (seq, times), :meth:`objects` otherwise."""
        return self.ints(name) if pa.types.is_integer(self.table.schema.field(name).type) else self.objects(name)

    def value_column(self, name: str) -> ValueColumn:
        return ValueColumn(self.table, self.layout[name])

    def dict_column(self, name: str) -> DictColumn:
        return DictColumn(self.table, self.layout[name])


def _objects_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        dictionary = np.empty(len(column.dictionary) + 1, dtype=object)
        dictionary[:-1] = column.dictionary.to_pylist()
        indices = column.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return dictionary[indices]  # -1 -> the trailing None
    return _object_array(column.to_pylist())


def _object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of ``values`` (lists stay list objects; ``np.array`` would make them a dimension)."""
    return np.fromiter(values, dtype=object, count=len(values))


@dataclass
class ValueColumn:
    """One JSON-valued column of a part (a label, a prediction, one key of the features)."""

    table: pa.Table
    spec: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return self.spec["kind"]

    def _array(self, name: str | None) -> pa.Array:
        column = self.table.column(name)
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)

    def _tags(self) -> np.ndarray | None:
        return None if self.spec.get("tag") is None else self._array(self.spec["tag"]).to_numpy(zero_copy_only=False)

    def null_mask(self) -> np.ndarray:
        """Rows whose value is None (or missing)."""
        n = self.table.num_rows
        if self.kind == "null":
            return np.ones(n, dtype=bool)
        array = self._array(self.spec["field"])
        if pa.types.is_dictionary(array.type):
            array = array.indices
        mask = array.is_null().to_numpy(zero_copy_only=False) if array.null_count else np.zeros(n, dtype=bool)
        return mask

    def python_types(self) -> set[type]:
        """The Python types of the values (None included as NoneType): enough to pick a label dtype."""
        kind = self.kind
        types: set[type] = set()
        if self.table.num_rows == 0:
            return types
        nulls = self.null_mask()
        if nulls.any():
            types.add(type(None))
        if nulls.all():
            return types
        if kind == "str":
            types.add(str)
        elif kind == "bool":
            types.add(bool)
        elif kind == "num":
            tags = self._tags()
            if tags is None:
                types.add(float)
            else:
                present = tags[~nulls]
                types |= {t for tag, t in ((_TAG_FLOAT, float), (_TAG_INT, int), (_TAG_SPECIAL, str))
                          if (present == tag).any()}
        elif kind == "json":
            types |= {type(v) for v in self.objects() if v is not None}
        return types

    def floats(self) -> np.ndarray:
        """The values as float64, as ``float(v)`` would give them (None -> NaN)."""
        n = self.table.num_rows
        kind = self.kind
        if kind == "null":
            return np.full(n, np.nan)
        if kind == "num":
            return self._array(self.spec["field"]).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        if kind == "bool":
            return pc.cast(self._array(self.spec["field"]), pa.float64()).to_numpy(zero_copy_only=False)
        values = self.objects()
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

    def numbers(self, dtype: str) -> np.ndarray:
        """A column whose values are all floats (``float64``) or all ints (``int64``), without None."""
        values = self._array(self.spec["field"]).to_numpy(zero_copy_only=False)
        return values.astype(np.int64) if dtype == "int64" else values.astype(np.float64, copy=False)

    def objects(self) -> np.ndarray:
        """The values as Python objects, exactly as the row tables return them (None where null or missing)."""
        n = self.table.num_rows
        kind = self.kind
        if kind == "null":
            return np.full(n, None, dtype=object)
        array = self._array(self.spec["field"])
        if kind == "str" or kind == "bool":
            return _objects_of(array)
        if kind == "json":
            return _object_array([None if t is None else json.loads(t) for t in _objects_of(array)])
        values = array.to_numpy(zero_copy_only=False)
        out = values.astype(object)
        tags = self._tags()
        if tags is not None:
            ints = np.flatnonzero(tags == _TAG_INT)
            if ints.size:
                out[ints] = [int(v) for v in values[ints]]
            special = np.flatnonzero(tags == _TAG_SPECIAL)
            if special.size:
                out[special] = [_special_name(v) for v in values[special]]
        if array.null_count:
            out[array.is_null().to_numpy(zero_copy_only=False)] = None
        return out


def _special_name(value: float) -> str:
    if np.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


@dataclass
class DictColumn:
    """A dict-valued column of a part (features, scores)."""

    table: pa.Table
    spec: Mapping[str, Any]

    def none_mask(self) -> np.ndarray:
        """Rows whose whole dict is None."""
        name = self.spec.get("null")
        return self.table.column(name).to_numpy() if name else np.zeros(self.table.num_rows, dtype=bool)

    def row_orders(self) -> np.ndarray:
        """Per row, the index of its key order in ``spec["orders"]``."""
        name = self.spec.get("order")
        if name:
            return self.table.column(name).to_numpy().astype(np.int64, copy=False)
        return np.zeros(self.table.num_rows, dtype=np.int64)

    def keys(self) -> list[str]:
        if self.spec.get("json"):
            return list(dict.fromkeys(k for d in self.dicts() if d for k in d))
        return [k["key"] for k in self.spec["keys"]]

    def key_present(self, key: str) -> np.ndarray:
        """Rows whose dict has ``key``."""
        if self.spec.get("json"):
            return np.array([bool(d) and key in d for d in self.dicts()], dtype=bool)
        index = self._index(key)
        if index is None:
            return np.zeros(self.table.num_rows, dtype=bool)
        has = np.array([index in order for order in self.spec["orders"]], dtype=bool)
        return has[self.row_orders()]

    def first_appearances(self) -> dict[str, tuple[int, int]]:
        """For each key: (first row that has it, its position among that row's keys)."""
        out: dict[str, tuple[int, int]] = {}
        if self.spec.get("json"):
            for row, d in enumerate(self.dicts()):
                for rank, key in enumerate(d or ()):
                    out.setdefault(key, (row, rank))
            return out
        names = self.keys()
        row_orders = self.row_orders()
        for signature, order in enumerate(self.spec["orders"]):
            rows = np.flatnonzero(row_orders == signature)
            if rows.size and order:
                first = int(rows[0])
                for rank, index in enumerate(order):
                    candidate = (first, rank)
                    if names[index] not in out or candidate < out[names[index]]:
                        out[names[index]] = candidate
        return out

    def _index(self, key: str) -> int | None:
        for i, spec in enumerate(self.spec["keys"]):
            if spec["key"] == key:
                return i
        return None

    def value(self, key: str) -> ValueColumn | None:
        if self.spec.get("json"):
            return None
        index = self._index(key)
        return None if index is None else ValueColumn(self.table, self.spec["keys"][index])

    def floats(self, key: str) -> np.ndarray:
        column = self.value(key)
        if column is not None:
            return column.floats()
        if self.spec.get("json"):
            return np.array([np.nan if not d or d.get(key) is None else float(d[key]) for d in self.dicts()],
                            dtype=np.float64)
        return np.full(self.table.num_rows, np.nan)

    def objects(self, key: str) -> np.ndarray:
        column = self.value(key)
        if column is not None:
            return column.objects()
        if self.spec.get("json"):
            return _object_array([d.get(key) if d else None for d in self.dicts()])
        return np.full(self.table.num_rows, None, dtype=object)

    def dicts(self) -> list[dict[str, Any] | None]:
        """Each row's dict as stored, keys in its order (None where the dict was None)."""
        n = self.table.num_rows
        if self.spec.get("json"):
            texts = _objects_of(self.table.column(self.spec["json"]))
            return [None if t is None else json.loads(t) for t in texts]
        names = self.keys()
        values = [ValueColumn(self.table, spec).objects() for spec in self.spec["keys"]]
        nones = self.none_mask()
        row_orders = self.row_orders()
        out: list[dict[str, Any] | None] = [None] * n
        for signature, order in enumerate(self.spec["orders"]):
            for i in np.flatnonzero(row_orders == signature):
                out[i] = None if nones[i] else {names[k]: values[k][i] for k in order}
        return out


def features_part(dicts: Sequence[Mapping[str, Any]]) -> Part:
    """Feature dicts alone as a Part (the row tables' side of a predictions read)."""
    names: list[str] = ["rows"]
    arrays: list[pa.Array] = [pa.nulls(len(dicts))]

    def add(name: str, array: pa.Array) -> str:
        names.append(name)
        arrays.append(array)
        return name

    layout = {"features": _encode_dicts("features", dicts, add)}
    return Part(pa.Table.from_arrays(arrays, names=names), layout)


# --------------------------------------------------------------------------------------------- predictions


def prediction_records(part: Part) -> list[dict[str, Any]]:
    """Each row's prediction as the row table's mapping (``get_prediction``'s form, without ``model``)."""
    ids = part.objects("prediction_id")
    versions = part.objects("model_version")
    sources = part.objects("source")
    events = pd.to_datetime(part.ints("event_time"), unit="us", utc=True)
    received = pd.to_datetime(part.ints("received_at"), unit="us", utc=True)
    predictions = part.value_column("prediction").objects()
    scores = part.dict_column("scores").dicts()
    features = part.dict_column("features").dicts()
    return [
        {"prediction_id": ids[i], "model_version": versions[i], "event_time": events[i].to_pydatetime(),
         "received_at": received[i].to_pydatetime(), "features": features[i], "prediction": predictions[i],
         "scores": scores[i], "source": sources[i]}
        for i in range(len(ids))
    ]


def block_rows(part: Part) -> RowBlock:
    """A part back as a :class:`RowBlock` (sealing re-reads rows of older blocks this way)."""
    superseded = part.ints("superseded_at")
    return RowBlock(
        seq=part.ints("seq"), prediction_id=list(part.objects("prediction_id")),
        value=list(part.value_column("value").objects()), arrived_at=part.ints("arrived_at"),
        superseded_at=superseded, owner=part.table.column("owner").to_numpy(),
        event_time=part.ints("event_time"), received_at=part.ints("received_at"),
        model_version=list(part.objects("model_version")), source=list(part.objects("source")),
        prediction=list(part.value_column("prediction").objects()),
        scores=part.dict_column("scores").dicts(), features=part.dict_column("features").dicts(),
    )


def take_block(block: RowBlock, indices: np.ndarray) -> RowBlock:
    def pick(values: Any) -> Any:
        if isinstance(values, np.ndarray):
            return values[indices]
        return [values[i] for i in indices]

    return RowBlock(**{name: pick(getattr(block, name)) for name in RowBlock.__dataclass_fields__})
