"""One model's commands: ``driftpilot bootstrap`` (the first version from a labeled file), ``lineage`` (its version
tree), ``predict`` (offline batch scoring), ``learn`` (one incremental step), ``report drift`` (the monitors once)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from controller.cli.common import SINGLE_CONFIG, bad_input_file, clear_errors, holdback_rows, labeled_rows, load_one
from controller.cli.group import main


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

    loaded = load_one(config_path)
    policy = loaded.config
    clock = SystemClock()
    with clear_errors(), bad_input_file():
        table, features, target, times = labeled_rows(data_path, policy, time_column, time_start, time_step)
        held_back = holdback_rows(holdback, len(table))
        store = EventStore.from_url(policy.storage.url, clock)
        registry = open_registry(policy, clock)
        champion = registry.champion_version(policy.registered_model)
        if if_missing and champion is not None:
            click.echo(f"{policy.registered_model} already has a champion (version {champion}); nothing to do")
            return
        with tqdm(total=len(features), desc="storing reference rows", unit="row", disable=None) as bar:
            result = bootstrap(loaded, features, target, store=store, registry=registry, clock=clock,
                               event_times=times, force=force, holdback_rows=held_back, progress=bar.update)
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

    policy = load_one(config_path).config
    with clear_errors():
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

    policy = load_one(config_path).config
    clock = SystemClock()
    with clear_errors(), bad_input_file():
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

    loaded = load_one(config_path)
    clock = SystemClock()
    with clear_errors():
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

    loaded = load_one(config_path)
    clock = SystemClock()
    with clear_errors():
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
