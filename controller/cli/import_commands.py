"""``driftpilot predictions import`` and ``driftpilot labels import``: a CSV or Parquet file straight into the policy's
event store, with no server, through the API's own write path.

Each batch of rows becomes the body a client would POST (``{"items": [...]}``), is checked as the API checks a request
body (:func:`controller.api.ingest.parse_batch`), then by :class:`controller.api.ingest.Ingestor` (the policy's
feature, target, id and score rules) and written in one transaction, all or nothing. So a file is refused exactly where
the API would refuse the same items, and a re-run is a no-op by prediction id, as a retried request is.

A file has no JSON types, so a cell is first read as the value a client would send for it, by the column's role and
the feature's declared type: numbers from numeric text, ``true/false/1/0/yes/no`` for booleans, text for categories
and ids, a target value as the class of ``target.classes`` it spells. Empty cells (in Parquet also NaN, NaT and
null) are nulls. What is left unreadable is passed on unchanged, and the API's checks refuse it naming the field.

Batches are committed one after the other: when a row is refused, the batches before it stay stored (each was
complete and valid) and nothing of the refused batch is. Fix the file and run the same command again: the stored
rows are no-ops, the rest goes in.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from controller.cli.common import SINGLE_CONFIG, bad_input_file, clear_errors, load_one
from controller.cli.group import main

TRUE_TEXT, FALSE_TEXT = {"true", "1", "yes"}, {"false", "0", "no"}
DEFAULT_BATCH = 1_000

# ------------------------------------------------------------------------------------------------ reading a file


def read_rows(path: Path) -> Any:
    """The file as a DataFrame of raw cells: CSV as text (so ``007`` stays an id, ``2`` a category), Parquet and ARFF
    with their own types. Unreadable files raise DataFileError (exit code 2)."""
    import pandas as pd

    from controller.actions.datafiles import UNREADABLE, DataFileError, read_table

    if path.suffix.lower() != ".csv":
        return read_table(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except UNREADABLE as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataFileError(f"{path}: cannot read it as CSV ({reason}); check that the file is complete (not "
                            "truncated) and really in that format") from None
    return table.replace("", None)


def need_columns(table: Any, path: Path, columns: Mapping[str, str]) -> None:
    """Every column the command maps (flag -> column) is in the file, or one line saying which flag to change."""
    from controller.actions.datafiles import DataFileError

    for flag, column in columns.items():
        if column not in table.columns:
            raise DataFileError(f"{path}: no column {column!r} ({flag}); the file has {list(table.columns)}; name "
                                f"the right one with {flag}")


def missing_features(table: Any, path: Path, policy: Any) -> None:
    from controller.actions.datafiles import DataFileError

    missing = [name for name, spec in policy.features.items() if spec.required and name not in table.columns]
    if missing:
        raise DataFileError(f"{path}: required feature column(s) {missing} are missing; the file has "
                            f"{list(table.columns)} (features are read from the columns named as in the policy)")


def note_unused(table: Any, used: Iterable[str]) -> None:
    """A column nothing reads is usually a misspelt feature: said on stderr, not refused (files carry other
    columns)."""
    unused = [str(c) for c in table.columns if c not in set(used)]
    if unused:
        click.echo(f"note: column(s) {unused} are not read (not a feature of the policy, nor a mapped column)",
                   err=True)


def cells(table: Any, column: str | None, convert: Callable[[Any], Any]) -> list[Any]:
    """A column's cells as JSON values (None for a column the file does not have)."""
    if column is None or column not in table.columns:
        return [None] * len(table)
    return [convert(_plain(v)) for v in table[column].tolist()]


def feature_rows(table: Any, policy: Any) -> list[dict[str, Any]]:
    """Per row: feature -> the value a client would send (absent columns of optional features are left out)."""
    columns = {name: cells(table, name, _FEATURE[spec.type]) for name, spec in policy.features.items()
               if name in table.columns}
    return [{name: values[i] for name, values in columns.items()} for i in range(len(table))]


def target_reader(policy: Any) -> Callable[[Any], Any]:
    """A label or prediction cell as the API takes it: a number for regression; the class it spells when
    ``target.classes`` is given ("1" -> 1 for classes [0, 1]); else an integer for integer text, or the text."""
    if policy.task == "regression":
        return _number
    classes = policy.target.classes
    if classes is not None:
        by_text = {str(c): c for c in classes}
        return lambda v: by_text.get(str(v), v) if v is not None else None
    return lambda v: _integer_or_text(v) if isinstance(v, str) else v


def text(value: Any) -> Any:
    """Ids and versions: text; an integer (a Parquet column of numbers) as its digits."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _plain(value: Any) -> Any:
    """A cell as a Python value: None for missing (empty text, NaN, NaT, None), datetimes for timestamps, Python
    scalars."""
    import pandas as pd

    if value is None or value == "" or (not isinstance(value, str) and pd.api.types.is_scalar(value)
                                        and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value


def _number(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return int(value)  # exact, and an integer beyond a float is refused as such by the API's check
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value  # refused by the API's check, which names the field


def _integer_or_text(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        return value


def _category(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else str(value)


def _boolean(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    spelled = str(value).strip().lower()
    return True if spelled in TRUE_TEXT else False if spelled in FALSE_TEXT else value


_FEATURE: dict[str, Callable[[Any], Any]] = {"numeric": _number, "categorical": _category, "boolean": _boolean}


def row_name(path: Path, row: int) -> str:
    """``row 1060 (line 1062)`` for a CSV (header on line 1), ``row 1060`` otherwise; rows count from 0."""
    return f"row {row} (line {row + 2})" if path.suffix.lower() == ".csv" else f"row {row}"


# ---------------------------------------------------------------------------------------------- writing batches


@dataclass(frozen=True)
class BadRow(Exception):
    """A row the API's checks refused; ``start``/``end`` bound the batch that was not stored."""

    row: int | None
    field: str
    problem: str
    start: int
    end: int
    more: int
    conflict: bool

    def where(self, path: Path, hint: str = "") -> str:
        """``FILE: row 163 (line 165): features.x1: what is wrong``."""
        where = row_name(path, self.row) if self.row is not None else f"rows {self.start}-{self.end - 1}"
        more = f" (+{self.more} more problem(s) in that batch)" if self.more else ""
        return f"{path}: {where}: {self.field}: {self.problem}{hint}{more}"

    def line(self, path: Path, hint: str = "") -> str:
        """The import's message: the row, and what was stored of the file."""
        kept = (f"; rows 0-{self.start - 1} were stored before it, and re-running the fixed file skips them (no-ops)"
                if self.start else "")
        batch = f"row {self.start}" if self.end - self.start == 1 else f"rows {self.start}-{self.end - 1}"
        return f"{self.where(path, hint)}; nothing of {batch} was stored{kept}"


def write_batches(items: Sequence[dict[str, Any]], write: Callable[[Sequence[dict[str, Any]]], None], *,
                  batch_size: int, progress: Callable[[int], Any]) -> None:
    """``write`` each batch of ``items`` in order; a batch the API's checks refuse raises :class:`BadRow` naming
    its first refused row (in the whole file)."""
    from controller.errors import InvalidBatch, LabelConflict, PredictionConflict

    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        try:
            write(batch)
        except InvalidBatch as exc:
            first = min(exc.problems, key=lambda p: (p.index is None, p.index or 0))
            raise BadRow(start + first.index if first.index is not None else None, first.field, first.problem,
                         start, start + len(batch), len(exc.problems) - 1,
                         isinstance(exc, (LabelConflict, PredictionConflict))) from None
        progress(len(batch))


def _open(policy: Any) -> tuple[Any, Any]:
    from controller.api.ingest import Ingestor
    from controller.clock import SystemClock
    from controller.store import EventStore

    clock = SystemClock()
    store = EventStore.from_url(policy.storage.url, clock)
    return store, Ingestor(policy, store, clock)


def _refuse(bad: BadRow, path: Path, hint: str = "") -> None:
    click.echo(f"error: {bad.line(path, hint)}", err=True)
    sys.exit(2)


def _shown_url(store: Any) -> str:
    return store.engine.url.render_as_string(hide_password=True)


# ----------------------------------------------------------------------------------------------------- commands

INPUT = click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="A .csv or .parquet file, one row per event.")
ID_COLUMN = click.option("--id-column", default="prediction_id", show_default=True,
                         help="Column with each row's prediction id (labels join predictions by it).")
BATCH_SIZE = click.option("--batch-size", default=DEFAULT_BATCH, show_default=True, type=click.IntRange(min=1),
                          help="Rows per batch; each batch is validated and stored atomically.")


@main.group("predictions")
def predictions_group() -> None:
    """Predictions made elsewhere, from files."""


@main.group("labels")
def labels_group() -> None:
    """Natural labels, from files."""


@predictions_group.command("import")
@SINGLE_CONFIG
@INPUT
@ID_COLUMN
@click.option("--prediction-column", default="prediction", show_default=True, help="Column with the prediction.")
@click.option("--time-column", default=None,
              help="Column with each prediction's event time (RFC 3339, e.g. 2026-01-31T12:00:00Z; no offset = UTC). "
                   "Without it the store stamps the time of the import.")
@click.option("--version-column", default=None, help="Column with the model version that made each prediction.")
@BATCH_SIZE
def import_predictions(config_path: Path, input_path: Path, id_column: str, prediction_column: str,
                       time_column: str | None, version_column: str | None, batch_size: int) -> None:
    """Store the predictions of a file in the policy's event store (no server needed), checked and written batch by
    batch as the API's POST /predictions does. Features are the columns named as the policy's features."""
    from tqdm import tqdm

    from controller.actions.datafiles import DataFileError
    from controller.api.ingest import PredictionBatch, parse_batch

    policy = load_one(config_path).config
    mapped = {"--id-column": id_column, "--prediction-column": prediction_column}
    if time_column:
        mapped["--time-column"] = time_column
    if version_column:
        mapped["--version-column"] = version_column
    with clear_errors(), bad_input_file():
        table = read_rows(input_path)
        need_columns(table, input_path, mapped)
        missing_features(table, input_path, policy)
        note_unused(table, [*policy.features, *mapped.values()])
        ids = cells(table, id_column, text)
        if None in ids:
            row = ids.index(None)
            raise DataFileError(f"{input_path}: {row_name(input_path, row)}: {id_column}: empty prediction id; every "
                                "row needs one (labels join by it, and it makes a re-run a no-op)")
        features = feature_rows(table, policy)
        predicted = cells(table, prediction_column, target_reader(policy))
        times = cells(table, time_column, lambda v: v)
        versions = cells(table, version_column, text)
        items = [{"prediction_id": pid, "features": row, "prediction": value,
                  **({"event_time": when} if when is not None else {}),
                  **({"model_version": version} if version is not None else {})}
                 for pid, row, value, when, version in zip(ids, features, predicted, times, versions, strict=True)]
        store, ingestor = _open(policy)
        counts = {"new": 0, "stored": 0}

        def write(batch: Sequence[dict[str, Any]]) -> None:
            parsed = parse_batch(PredictionBatch, {"items": batch}).items
            known = store.known_prediction_ids(policy.model, [item.prediction_id for item in parsed])
            ingestor.add_predictions(parsed)
            counts["stored"] += len(known)
            counts["new"] += len(parsed) - len(known)

        try:
            with tqdm(total=len(items), desc="importing predictions", unit="row", disable=None) as bar:
                write_batches(items, write, batch_size=batch_size, progress=bar.update)
        except BadRow as bad:
            _refuse(bad, input_path)
    click.echo(f"imported {len(items):,} rows of {input_path} into model {policy.model!r} ({_shown_url(store)}): "
               f"{counts['new']:,} new predictions, {counts['stored']:,} already stored (no-ops)")


@labels_group.command("import")
@SINGLE_CONFIG
@INPUT
@ID_COLUMN
@click.option("--label-column", default=None, help="Column with the label.  [default: the policy's target.name]")
@click.option("--overwrite", is_flag=True,
              help="Replace a different label already stored for a prediction (the change is recorded); without it "
                   "such a row is refused.")
@BATCH_SIZE
def import_labels(config_path: Path, input_path: Path, id_column: str, label_column: str | None, overwrite: bool,
                  batch_size: int) -> None:
    """Store the natural labels of a file in the policy's event store (no server needed), checked and written batch
    by batch as the API's POST /labels does. A label whose prediction is not stored yet is kept and joins when the
    prediction arrives, as in the API."""
    from tqdm import tqdm

    from controller.api.ingest import LabelBatch, parse_batch

    policy = load_one(config_path).config
    label_column = label_column or policy.target.name
    mapped = {"--id-column": id_column, "--label-column": label_column}
    with clear_errors(), bad_input_file():
        table = read_rows(input_path)
        need_columns(table, input_path, mapped)
        note_unused(table, mapped.values())
        items = [{"prediction_id": pid, "label": label, **({"overwrite": True} if overwrite else {})}
                 for pid, label in zip(cells(table, id_column, text), cells(table, label_column, target_reader(policy)),
                                       strict=True)]
        store, ingestor = _open(policy)
        counts = dict.fromkeys(("inserted", "duplicates", "overwritten", "unmatched"), 0)

        def write(batch: Sequence[dict[str, Any]]) -> None:
            receipt = ingestor.add_labels(parse_batch(LabelBatch, {"items": batch}).items)
            for name, value in receipt.to_dict().items():
                counts[name] += value

        hint = "" if overwrite else " (with this command: --overwrite)"
        try:
            with tqdm(total=len(items), desc="importing labels", unit="row", disable=None) as bar:
                write_batches(items, write, batch_size=batch_size, progress=bar.update)
        except BadRow as bad:
            _refuse(bad, input_path, hint if bad.conflict else "")
    unmatched = (f"; {counts['unmatched']:,} for predictions not stored yet (kept: they join when their predictions "
                 "arrive, as in the API)" if counts["unmatched"] else "")
    click.echo(f"imported {len(items):,} rows of {input_path} into model {policy.model!r} ({_shown_url(store)}): "
               f"{counts['inserted']:,} new labels, {counts['duplicates']:,} already stored (no-ops), "
               f"{counts['overwritten']:,} overwritten{unmatched}")

