"""The ``driftpilot`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import click

from controller.config import load_policy, policy_json_schema
from controller.errors import ConfigError, DriftpilotError, StoreUnavailable

CONFIG_OPTION = click.option("--config", "config_paths", required=True, multiple=True,
                             type=click.Path(dir_okay=False, path_type=Path),
                             help="Policy file (YAML). Repeat for several models.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(log_level: str) -> None:
    """driftpilot keeps machine-learning models fresh in production."""
    from controller.logs import configure

    configure(log_level)


@main.group()
def config() -> None:
    """Check policy files and print their schema."""


@config.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def config_validate(files: tuple[Path, ...]) -> None:
    """Print OK for each valid FILE, or every problem with file:line; exit code 2 on any error."""
    failed = False
    for path in files:
        try:
            loaded = load_policy(path)
        except ConfigError as exc:
            failed = True
            for problem in exc.problems:
                click.echo(problem, err=True)
            continue
        click.echo(f"{path}: OK (model {loaded.config.model}, {loaded.config.task}, "
                   f"{len(loaded.config.features)} features)")
    if failed:
        sys.exit(2)


@config.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of a policy file (point your editor's YAML plugin at it)."""
    click.echo(json.dumps(policy_json_schema(), indent=2))


@main.group()
def db() -> None:
    """Manage the event store's schema."""


@db.command("upgrade")
@CONFIG_OPTION
def db_upgrade(config_paths: tuple[Path, ...]) -> None:
    """Apply pending migrations to each policy's store (also done automatically on start)."""
    from controller.store.db import create_store_engine, current_revision, upgrade

    for loaded in _load_all(config_paths):
        engine = create_store_engine(loaded.config.storage.url)
        try:
            upgrade(engine)
            click.echo(f"{engine.url.render_as_string(hide_password=True)}: at revision {current_revision(engine)}")
        except StoreUnavailable as exc:
            _fail(str(exc))
        finally:
            engine.dispose()


@main.command()
@CONFIG_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="API processes sharing the port; each has its own store connections and champion.")
@click.pass_context
def serve(ctx: click.Context, config_paths: tuple[Path, ...], host: str, port: int, workers: int) -> None:
    """Run the HTTP API for the models of the given policy files."""
    import uvicorn

    from controller.api.service import WORKERS_ENV, serving_app
    from controller.clock import SystemClock

    clock = SystemClock()
    policies = _load_all(config_paths)
    level = ctx.find_root().params["log_level"].lower()
    # uvicorn's access log follows --log-level: one line per request only when asked for (DEBUG/INFO).
    options = {"host": host, "port": port, "log_level": level, "access_log": level in ("debug", "info")}
    with _clear_errors():
        app, watcher = serving_app(policies, clock)  # opens (and migrates) every store once, before any worker
    log = logging.getLogger("driftpilot")
    log.info("serving models %s on http://%s:%d with %d worker(s)", sorted(p.config.model for p in policies),
             host, port, workers)
    if workers > 1:
        # Each worker process builds its own app (uvicorn calls the factory there); this one only supervises.
        os.environ[WORKERS_ENV] = json.dumps({"config": [str(p.resolve()) for p in config_paths],
                                              "log_level": level})
        # uvicorn kills a worker that misses its health ping for timeout_worker_healthcheck (default 5 s); a worker
        # answers only once Python has imported driftpilot, which took 17 s on a loaded 2-core host and made
        # `serve --workers N` restart its workers in a loop. A hung worker is still replaced, after a minute.
        uvicorn.run("controller.api.service:worker_app", factory=True, workers=workers,
                    timeout_worker_healthcheck=60, **options)
        return
    watcher.start()
    try:
        uvicorn.run(app, **options)
    finally:
        watcher.stop()


@main.command()
@CONFIG_OPTION
def stats(config_paths: tuple[Path, ...]) -> None:
    """Print label statistics (coverage, pending, label delay) for each model, as JSON."""
    from controller.clock import SystemClock
    from controller.store import EventStore

    for loaded in _load_all(config_paths):
        try:
            store = EventStore.from_url(loaded.config.storage.url, SystemClock())
            click.echo(json.dumps(store.label_stats(loaded.config.model).to_dict(), indent=2))
        except StoreUnavailable as exc:
            _fail(str(exc))


SINGLE_CONFIG = click.option("--config", "config_path", required=True,
                             type=click.Path(dir_okay=False, path_type=Path), help="Policy file (YAML).")


@main.command("bootstrap")
@SINGLE_CONFIG
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Labeled training file: .csv, .parquet, or .arff / .zip holding one .arff.")
@click.option("--time-column", default=None, help="Column with each row's event time (default: now).")
@click.option("--time-start", default=None,
              help="Event time of the file's first row, for files without a time column whose rows come at a fixed "
                   "step (with --time-step), e.g. Elec2: --time-start 1996-05-07 --time-step 30min.")
@click.option("--time-step", default=None, help="Time between consecutive rows (pandas syntax: 30min, 1h, 1D).")
@click.option("--holdback", default="0", show_default=True,
              help="Keep the file's newest rows out of the bootstrap, for traffic to replay later: a fraction "
                   "(0.5 = the newer half) or a number of rows.")
@click.option("--force", is_flag=True, help="Bootstrap even if the model already has a champion.")
@click.option("--if-missing", is_flag=True, help="Do nothing (exit 0) if the model already has a champion.")
def bootstrap_command(config_path: Path, data_path: Path, time_column: str | None, time_start: str | None,
                      time_step: str | None, holdback: str, force: bool, if_missing: bool) -> None:
    """Train the first version from a labeled file, register it with lineage and make it champion."""
    from tqdm import tqdm

    from controller.actions.bootstrap import bootstrap
    from controller.actions.model_registry import open_registry
    from controller.clock import SystemClock
    from controller.store import EventStore

    loaded = _load_one(config_path)
    policy = loaded.config
    clock = SystemClock()
    with _clear_errors(), _bad_input_file():
        table, features, target, times = _labeled_rows(data_path, policy, time_column, time_start, time_step)
        holdback_rows = _holdback_rows(holdback, len(table))
        store = EventStore.from_url(policy.storage.url, clock)
        registry = open_registry(policy, clock)
        champion = registry.champion_version(policy.registered_model)
        if if_missing and champion is not None:
            click.echo(f"{policy.registered_model} already has a champion (version {champion}); nothing to do")
            return
        with tqdm(total=len(features), desc="storing reference rows", unit="row", disable=None) as bar:
            result = bootstrap(loaded, features, target, store=store, registry=registry, clock=clock,
                               event_times=times, force=force, holdback_rows=holdback_rows, progress=bar.update)
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in result.holdout_metrics.items())
    click.echo(f"{policy.registered_model} version {result.version} is champion: trained on {result.train_rows} "
               f"rows, holdout {result.holdout_rows} rows ({metrics}); {result.rows_stored} reference rows stored")
    if result.holdback_rows:
        click.echo(f"held back the newest {result.holdback_rows} rows of {data_path} (rows {result.rows_stored} to "
                   f"{result.rows_stored + result.holdback_rows - 1}, counting from 0) for traffic to replay")


@main.command("lineage")
@SINGLE_CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a tree.")
def lineage_command(config_path: Path, as_json: bool) -> None:
    """Print the lineage tree (version, parent, strategy, trigger, event-time and arrival windows, rows, holdout
    metrics beside the champion's at the time, aliases) and the alias history (every promote and rollback)."""
    from controller.actions.model_registry import open_registry
    from controller.cli.lineage_view import lineage_document, render_document
    from controller.clock import SystemClock

    policy = _load_one(config_path).config
    with _clear_errors():
        registry = open_registry(policy, SystemClock())
        document = lineage_document(registry, policy.registered_model)
    click.echo(json.dumps(document, indent=2) if as_json else render_document(document))


@main.command("predict")
@SINGLE_CONFIG
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to score: .csv or .parquet with the policy's feature columns.")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the input plus prediction_id, prediction, model_version and score columns.")
@click.option("--log", "log_predictions", is_flag=True,
              help="Also log every prediction to the event store, so natural labels can be joined later.")
@click.option("--batch-size", default=10_000, show_default=True, type=click.IntRange(min=1))
def predict_command(config_path: Path, input_path: Path, output_path: Path, log_predictions: bool,
                    batch_size: int) -> None:
    """Offline batch prediction with the champion."""
    from tqdm import tqdm

    from controller.actions.batch_predict import predict_file
    from controller.actions.model_registry import open_registry
    from controller.clock import SystemClock
    from controller.store import EventStore

    policy = _load_one(config_path).config
    clock = SystemClock()
    with _clear_errors(), _bad_input_file():
        registry = open_registry(policy, clock)
        store = EventStore.from_url(policy.storage.url, clock) if log_predictions else None
        with tqdm(desc="scoring", unit="row", disable=None) as bar:
            summary = predict_file(policy, registry, input_path, output_path, store=store, clock=clock,
                                   batch_size=batch_size, progress=bar.update, total=lambda n: bar.reset(total=n))
    logged = " and logged them to the event store" if log_predictions else ""
    click.echo(f"scored {summary.rows} rows with {policy.registered_model} version {summary.version} into "
               f"{output_path}{logged}")


@main.command("learn")
@SINGLE_CONFIG
def learn_command(config_path: Path) -> None:
    """One incremental step: the River learner learns every label matured since its last step (test-then-train)."""
    from controller.actions.incremental import IncrementalRunner
    from controller.actions.model_registry import open_registry
    from controller.clock import SystemClock
    from controller.store import EventStore

    loaded = _load_one(config_path)
    clock = SystemClock()
    with _clear_errors():
        runner = IncrementalRunner(loaded, EventStore.from_url(loaded.config.storage.url, clock),
                                   open_registry(loaded.config, clock), clock)
        step = runner.step()
    click.echo(json.dumps(step.__dict__, indent=2, default=str))


@main.group()
def report() -> None:
    """Reports from the monitors."""


@report.command("drift")
@SINGLE_CONFIG
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to save the Evidently HTML report (default: .driftpilot/reports/...).")
def report_drift(config_path: Path, output_path: Path | None) -> None:
    """Run the monitors once now: data drift against the champion's training window (HTML saved), concept drift
    and live performance; print the signals as JSON."""
    from controller.actions.model_registry import open_registry
    from controller.actions.monitoring import MonitorCycle
    from controller.clock import SystemClock
    from controller.store import EventStore

    loaded = _load_one(config_path)
    clock = SystemClock()
    with _clear_errors():
        cycle = MonitorCycle(loaded, EventStore.from_url(loaded.config.storage.url, clock),
                             open_registry(loaded.config, clock), clock,
                             report_dir=output_path.parent if output_path else None)
        result = cycle.run(html=True)
    if output_path is not None and result.html_report and Path(result.html_report) != output_path:
        Path(result.html_report).replace(output_path)
        result = replace(result, html_report=str(output_path))
    click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    for note in result.notes:  # e.g. too little current traffic for a report: said plainly, not a traceback
        click.echo(f"note: {note}", err=True)
    if result.html_report is None:
        click.echo("no HTML report was written (see the notes above)", err=True)


def _labeled_rows(path: Path, policy, time_column: str | None, time_start: str | None, time_step: str | None):
    """A labeled file read for the policy: (table, features, target, event times) — bootstrap's and adopt's rows."""
    from controller.actions.datafiles import features_from_table, read_table, target_from_table

    table = read_table(path)
    features = features_from_table(table, policy, str(path), extra_columns=[time_column] if time_column else ())
    target = target_from_table(table, policy, str(path))
    return table, features, target, _event_times(table, time_column, time_start, time_step)


def _event_times(table, time_column: str | None, time_start: str | None, time_step: str | None):
    """Each row's event time from a column, or from a start and a fixed step; None: the rows get 'now'."""
    import pandas as pd

    from controller.errors import DriftpilotError

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


def _holdback_rows(text: str, rows: int) -> int:
    """--holdback as rows: a fraction in [0, 1) of the file, or a whole number of rows."""
    from controller.errors import DriftpilotError

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


@contextmanager
def _clear_errors() -> Iterator[None]:
    """driftpilot's own errors (and the packages') end the command with their message, not a traceback."""
    from lineage import LineageError
    from trainers import TrainerError

    try:
        yield
    except (DriftpilotError, LineageError, TrainerError) as exc:
        _fail(str(exc))


def _load_one(path: Path):
    return _load_all((path,))[0]


def _load_all(paths: tuple[Path, ...]):
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


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


# The decision loop's commands (run, status, decisions, retrain, promote, rollback) register on `main` too.
from controller.cli import loop_commands  # noqa: F401


@contextmanager
def _bad_input_file() -> Iterator[None]:
    """For the commands that read a data file (bootstrap, predict): a file that cannot be used (corrupt, truncated,
    unknown or missing columns, values out of range) ends the command with one line and exit code 2, like a bad policy
    file. Anything else unexpected ends it with one line and exit code 1, its traceback logged at DEBUG, never a
    traceback on the terminal. Used inside ``_clear_errors()``, which handles driftpilot's other errors."""
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
        _fail(str(exc))
    except (DriftpilotError, LineageError, TrainerError, click.ClickException, click.exceptions.Exit):
        raise
    except Exception as exc:  # a user-facing command ends in one line; the traceback goes to the log
        logging.getLogger("driftpilot").debug("unexpected failure", exc_info=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"error: unexpected {type(exc).__name__}{': ' + reason if reason else ''}; this is a bug, please "
                   "report it (rerun with --log-level DEBUG for the traceback)", err=True)
        sys.exit(1)
import controller.cli.backtest_commands  # noqa: F401 - registers `driftpilot backtest` on `main`
import controller.cli.db_commands  # noqa: F401 - registers `driftpilot db prune`, `db compact` on `db`
import controller.cli.features_commands as _features  # noqa: F401 - registers `driftpilot features`, `stream`
from controller.cli import demo  # noqa: F401
import controller.cli.import_commands  # noqa: F401,E402 - registers `driftpilot predictions import`, `labels import`
import controller.cli.replay_command  # noqa: F401,E402 - registers `driftpilot replay`
import controller.cli.adopt_command  # noqa: F401,E402 - registers `driftpilot adopt`
