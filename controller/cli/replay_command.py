"""``driftpilot replay``: a labeled file played against a running server as live traffic.

Each row's features go to ``/predict`` now (the server scores them with its champion and logs the prediction), and
the row's label goes to ``/labels`` when it is due, all through :class:`controller.client.DriftpilotClient`. A label
is due ``--label-delay`` *rows* later (the label of row i is sent right after row i+N's prediction), so the replay
does the same at any ``--rate``: at 20 rows/s, a delay of 40 rows is two seconds. With ``--label-time-column`` the
file says when each label arrived: the replay's clock is the file's event time of the newest row sent
(``--time-column``), and a label is sent once that clock reaches its label time. Labels still pending when the file
ends are sent at the end.

The time between requests is kept by :class:`Pacer`, which is handed the clock and the sleep, so tests check the
pace on a :class:`~controller.clock.ManualClock` without waiting.
"""

from __future__ import annotations

import heapq
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from controller.cli.common import SINGLE_CONFIG, bad_input_file, clear_errors, fail, holdback_rows, load_one
from controller.cli.group import main
from controller.cli.import_commands import (
    BadRow,
    cells,
    feature_rows,
    missing_features,
    need_columns,
    note_unused,
    read_rows,
    target_reader,
)
from controller.clock import Clock

DEFAULT_LABEL_DELAY = 1


@dataclass
class Pacer:
    """Keeps traffic at ``rate`` rows per second (None: as fast as the server answers): row n is sent ``n / rate``
    seconds after row 0, whatever the requests in between took. ``clock`` and ``sleep`` are injected."""

    rate: float | None
    clock: Clock
    sleep: Callable[[float], None]
    started: datetime | None = field(default=None, init=False)

    def wait(self, row: int) -> float:
        """Sleep until row ``row`` (counting from 0) is due; returns the seconds slept."""
        if self.rate is None:
            return 0.0
        now = self.clock.now()
        if self.started is None:
            self.started = now
        ahead = row / self.rate - (now - self.started).total_seconds()
        if ahead <= 0:
            return 0.0
        self.sleep(ahead)
        return ahead


@dataclass(frozen=True)
class Traffic:
    """The rows to replay: per row its features, its label (None: the row has none), the replay position its label
    is due at, and the position the replay reaches once the row is sent (row numbers, or event times)."""

    features: list[dict[str, Any]]
    labels: list[Any]
    due: list[Any]
    position: list[Any]
    first_row: int = 0     # the file row of traffic row 0 (for messages)

    @classmethod
    def by_rows(cls, features: list[dict[str, Any]], labels: list[Any], delay: int, first_row: int = 0) -> Traffic:
        rows = range(len(features))
        return cls(features, labels, [i + delay for i in rows], list(rows), first_row)

    @classmethod
    def by_time(cls, features: list[dict[str, Any]], labels: list[Any], event_times: Sequence[Any],
                label_times: Sequence[Any], first_row: int = 0) -> Traffic:
        reached, newest = [], None
        for when in event_times:  # the replay's clock never goes back, even if the file's times do
            newest = when if newest is None or when > newest else newest
            reached.append(newest)
        return cls(features, labels, list(label_times), reached, first_row)


class ServedMetric:
    """The served predictions' accuracy (classification) or MAE (regression) on the labels sent so far."""

    def __init__(self, task: str) -> None:
        self.name = "accuracy" if task == "classification" else "MAE"
        self.task = task
        self.total = 0.0
        self.count = 0

    def add(self, prediction: Any, label: Any) -> None:
        if self.task == "classification":
            self.total += prediction == label
        else:
            self.total += abs(float(prediction) - float(label))
        self.count += 1

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None

    def __str__(self) -> str:
        if not self.count:
            return f"{self.name} -, no labels yet"
        return f"{self.name} {self.value:.4f} on {self.count:,} labels"


@dataclass
class ReplayResult:
    rows: int
    labels: int
    metric: ServedMetric
    versions: Counter = field(default_factory=Counter)  # version -> rows it served


def replay(client: Any, model: str, task: str, traffic: Traffic, *, pacer: Pacer, batch_size: int = 1,
           progress: Callable[[int, str], Any] = lambda rows, status: None) -> ReplayResult:
    """Send ``traffic`` to ``/predict`` ``batch_size`` rows per request at the pacer's rate, and each label when it
    is due. A row the server refuses raises :class:`BadRow` (the rows before it were served and logged)."""
    from controller.client import ValidationFailed

    result = ReplayResult(rows=0, labels=0, metric=ServedMetric(task))
    pending: list[tuple[Any, int]] = []  # (due, row): a heap
    served: dict[int, Any] = {}           # row -> its Prediction, until its label is sent
    version = "-"

    def send_due(position: Any) -> None:
        rows = []
        while pending and (position is None or pending[0][0] <= position):
            rows.append(heapq.heappop(pending)[1])
        if not rows:
            return
        items = [{"prediction_id": served[i].prediction_id, "label": traffic.labels[i]} for i in rows]
        try:
            client.log_labels(model, items)
        except ValidationFailed as exc:
            raise _bad_row(exc, [traffic.first_row + i for i in rows]) from None
        for i in rows:
            result.metric.add(served.pop(i).prediction, traffic.labels[i])
        result.labels += len(rows)

    for start in range(0, len(traffic.features), batch_size):
        end = min(start + batch_size, len(traffic.features))
        pacer.wait(start)
        try:
            answers = client.predict(model, traffic.features[start:end])
        except ValidationFailed as exc:
            raise _bad_row(exc, [traffic.first_row + i for i in range(start, end)]) from None
        for i, answer in zip(range(start, end), answers, strict=True):
            result.versions[answer.model_version] += 1
            version = answer.model_version
            if traffic.labels[i] is not None:
                served[i] = answer
                heapq.heappush(pending, (traffic.due[i], i))
        result.rows = end
        send_due(traffic.position[end - 1])
        progress(end - start, f"v{version} serving, {result.metric}")
    send_due(None)
    progress(0, f"v{version} serving, {result.metric}")
    return result


def _bad_row(exc: Any, rows: list[int]) -> BadRow:
    """The first problem of a refused request, at its file row."""
    first = min(exc.problems, key=lambda p: (p.index is None, p.index or 0)) if exc.problems else None
    row = rows[first.index] if first is not None and first.index is not None and first.index < len(rows) else None
    return BadRow(row, first.field if first else "request", first.problem if first else str(exc), rows[0],
                  rows[-1] + 1, max(len(exc.problems) - 1, 0), False)


@main.command("replay")
@SINGLE_CONFIG
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A labeled file: .csv, .parquet, or .arff / .zip holding one .arff (as bootstrap reads).")
@click.option("--url", required=True, help="The running server (driftpilot serve or run), e.g. http://127.0.0.1:8080.")
@click.option("--rate", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Rows per second sent to /predict.  [default: as fast as the server answers]")
@click.option("--label-delay", default=None, type=click.IntRange(min=0),
              help=f"Rows between a row's prediction and its label: its label is sent right after row i+N's "
                   f"prediction (0: right after its own).  [default: {DEFAULT_LABEL_DELAY}]")
@click.option("--label-time-column", default=None,
              help="Column with each label's arrival time: it is sent once the replay reaches that time in the "
                   "file's event times (--time-column). Instead of --label-delay.")
@click.option("--time-column", default=None, help="Column with each row's event time (for --label-time-column).")
@click.option("--label-column", default=None, help="Column with the label.  [default: the policy's target.name]")
@click.option("--holdback", default=None,
              help="Replay only the file's newest rows, the ones `bootstrap --holdback` kept back: the same value "
                   "(0.5 = the newer half, or a number of rows).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Rows per /predict request.")
@click.option("--token", default=None,
              help="Bearer token of the server's write endpoints.  [default: the variable the policy's api.token_env "
                   "names, if set]")
def replay_command(config_path: Path, input_path: Path, url: str, rate: float | None, label_delay: int | None,
                   label_time_column: str | None, time_column: str | None, label_column: str | None,
                   holdback: str | None, batch_size: int, token: str | None) -> None:
    """Replay a labeled file as live traffic: each row's features to /predict now, its label to /labels when due;
    a progress bar with the served accuracy (or MAE) on the labels sent so far."""
    import time

    from tqdm import tqdm

    from controller.actions.datafiles import times_from_column
    from controller.client import DriftpilotClient, Unauthorized
    from controller.client import DriftpilotError as ClientError
    from controller.clock import SystemClock
    from controller.errors import DriftpilotError

    policy = load_one(config_path).config
    if label_time_column and label_delay is not None:
        fail("--label-delay and --label-time-column both say when labels are sent; pass one of them")
    if label_time_column and not time_column:
        fail("--label-time-column needs --time-column: a label is sent once the replay reaches its time in the "
              "rows' event times")
    label_column = label_column or policy.target.name
    mapped = {"--label-column": label_column, **({"--time-column": time_column} if time_column else {}),
              **({"--label-time-column": label_time_column} if label_time_column else {})}
    with clear_errors(), bad_input_file():
        table = read_rows(input_path)
        first_row = 0
        if holdback is not None:
            kept = holdback_rows(holdback, len(table))
            if not 0 < kept <= len(table):
                raise DriftpilotError(f"--holdback {holdback} selects {kept} of the file's {len(table)} rows; give a "
                                      "fraction in (0, 1) or a number of rows up to the file's length")
            first_row = len(table) - kept
            table = table.iloc[first_row:].reset_index(drop=True)
        need_columns(table, input_path, mapped)
        missing_features(table, input_path, policy)
        note_unused(table, [*policy.features, *mapped.values()])
        features = feature_rows(table, policy)
        labels = cells(table, label_column, target_reader(policy))
        if label_time_column:
            event_times = times_from_column(table[time_column], f"{input_path}: column {time_column!r}")
            label_times = times_from_column(table[label_time_column],
                                            f"{input_path}: column {label_time_column!r}")
            traffic = Traffic.by_time(features, labels, list(event_times), list(label_times), first_row)
            when = f"each label at its {label_time_column} in the file's {time_column}"
        else:
            delay = DEFAULT_LABEL_DELAY if label_delay is None else label_delay
            traffic = Traffic.by_rows(features, labels, delay, first_row)
            when = f"each label {delay} row(s) after its prediction"
        if token is None and policy.api.token_env:
            token = os.environ.get(policy.api.token_env) or None
        pace = f"{rate:g} rows/s" if rate else "as fast as the server answers"
        click.echo(f"replaying rows {first_row:,}..{first_row + len(table) - 1:,} of {input_path} to {url} for model "
                   f"{policy.model!r}: {pace}, {when}")
        try:
            with DriftpilotClient(url, token=token) as client:
                served = client.ready().champions
                if policy.model not in served:
                    raise DriftpilotError(f"the server at {url} has no policy for model {policy.model!r} (it serves "
                                          f"{sorted(served)}); start it with this policy file")
                if served[policy.model] is None:
                    raise DriftpilotError(f"the server at {url} has no champion for {policy.model!r} yet, so "
                                          "/predict cannot answer; run `driftpilot bootstrap` first")
                pacer = Pacer(rate, SystemClock(), time.sleep)
                with tqdm(total=len(table), desc="replay", unit="row", dynamic_ncols=True, disable=None) as bar:
                    def progress(rows: int, status: str) -> None:
                        bar.update(rows)
                        bar.set_postfix_str(status, refresh=False)

                    result = replay(client, policy.model, policy.task, traffic, pacer=pacer, batch_size=batch_size,
                                    progress=progress)
        except BadRow as bad:
            click.echo(f"error: {_served_before(bad, input_path)}", err=True)
            sys.exit(2)
        except Unauthorized as exc:
            raise DriftpilotError(f"{exc} (replay: pass --token, or set the variable the policy's api.token_env "
                                  "names)") from None
        except ClientError as exc:
            raise DriftpilotError(str(exc)) from None
    versions = ", ".join(f"v{v}: {n:,} rows" for v, n in sorted(result.versions.items(), key=lambda kv: kv[0]))
    click.echo(f"replayed {result.rows:,} rows ({versions}) and sent {result.labels:,} labels; served "
               f"{result.metric}")


def _served_before(bad: BadRow, path: Path) -> str:
    """The refused row; unlike an import, the rows before it were served live and stay logged."""
    return (f"{bad.where(path)}; the server stored nothing of that request, and the rows before it were served and "
            "logged (a replay is live traffic: running it again sends them again as new predictions)")

