"""What the command modules share: the ``--config`` options, loading policy files, ending a command with a message
instead of a traceback, and reading a labeled file's rows and event times (bootstrap, adopt, replay)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from controller.errors import ConfigError, DriftpilotError
from controller.policy_loader import load_policy

CONFIG_OPTION = click.option("--config", "config_paths", required=True, multiple=True,
                             type=click.Path(dir_okay=False, path_type=Path),
                             help="Policy file (YAML). Repeat for several models.")

SINGLE_CONFIG = click.option("--config", "config_path", required=True,
                             type=click.Path(dir_okay=False, path_type=Path), help="Policy file (YAML).")


@contextmanager
def clear_errors() -> Iterator[None]:
    """driftpilot's own errors (and the packages') end the command with their message, not a traceback."""
    from lineage import LineageError
    from trainers import TrainerError

    try:
        yield
    except (DriftpilotError, LineageError, TrainerError) as exc:
        fail(str(exc))


@contextmanager
def bad_input_file() -> Iterator[None]:
    """For the commands that read a data file (bootstrap, predict): a file that cannot be used (corrupt, truncated,
    unknown or missing columns, values out of range) ends the command with one line and exit code 2, like a bad policy
    file. Anything else unexpected ends it with one line and exit code 1, its traceback logged at DEBUG, never a
    traceback on the terminal. Used inside ``clear_errors()``, which handles driftpilot's other errors."""
    from controller.actions.datafiles import DataFileError
    from controller.api.serving import NoChampion
    from lineage import LineageError
    from trainers import TrainerError

    try:
        yield
    except DataFileError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except NoChampion as exc:
        fail(str(exc))
    except (DriftpilotError, LineageError, TrainerError, click.ClickException, click.exceptions.Exit):
        raise
    except Exception as exc:  # a user-facing command ends in one line; the traceback goes to the log
        logging.getLogger("driftpilot").debug("unexpected failure", exc_info=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"error: unexpected {type(exc).__name__}{': ' + reason if reason else ''}; this is a bug, please "
                   "report it (rerun with --log-level DEBUG for the traceback)", err=True)
        sys.exit(1)


def load_one(path: Path):
    return load_all((path,))[0]


def load_all(paths: tuple[Path, ...]):
    """Every policy file loaded, or every problem of every file printed and exit code 2."""
    loaded, problems = [], []
    for path in paths:
        try:
            loaded.append(load_policy(path))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        sys.exit(2)
    return loaded


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def labeled_rows(path: Path, policy, time_column: str | None, time_start: str | None, time_step: str | None):
    """A labeled file read for the policy: (table, features, target, event times) — bootstrap's and adopt's rows."""
    from controller.actions.datafiles import features_from_table, read_table, target_from_table

    table = read_table(path)
    features = features_from_table(table, policy, str(path), extra_columns=[time_column] if time_column else ())
    target = target_from_table(table, policy, str(path))
    return table, features, target, event_times(table, time_column, time_start, time_step)


def event_times(table, time_column: str | None, time_start: str | None, time_step: str | None):
    """Each row's event time from a column, or from a start and a fixed step; None: the rows get 'now'."""
    import pandas as pd

    if time_column and (time_start or time_step):
        raise DriftpilotError("--time-column and --time-start/--time-step both give event times; pass one of them")
    if time_column:
        if time_column not in table.columns:
            raise DriftpilotError(f"--time-column {time_column!r} is not a column of the file; its columns are "
                                  f"{list(table.columns)}")
        return pd_to_utc(table[time_column])
    if bool(time_start) != bool(time_step):
        raise DriftpilotError("--time-start and --time-step go together (e.g. --time-start 1996-05-07 "
                              "--time-step 30min)")
    if not time_start:
        return None
    try:
        start, step = pd.Timestamp(time_start), pd.Timedelta(time_step)
    except ValueError as exc:
        raise DriftpilotError(f"cannot read --time-start {time_start!r} / --time-step {time_step!r}: {exc}; use an "
                              "ISO date like 1996-05-07 and a step like 30min, 1h or 1D") from None
    if step <= pd.Timedelta(0):
        raise DriftpilotError(f"--time-step must be positive, got {time_step!r}")
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    return pd.Series(start + step * pd.RangeIndex(len(table)))


def holdback_rows(text: str, rows: int) -> int:
    """--holdback as rows: a fraction in [0, 1) of the file, or a whole number of rows."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or (value >= 1 and not value.is_integer()):
        raise DriftpilotError(f"--holdback must be a fraction in [0, 1) (0.5 = the newer half) or a whole number of "
                              f"rows, got {text!r}")
    return round(rows * value) if value < 1 else int(value)


def pd_to_utc(column):
    from controller.actions.datafiles import times_from_column

    return times_from_column(column, f"time column {column.name!r}")
