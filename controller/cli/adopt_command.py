"""``driftpilot adopt``: a model you already have (logged to MLflow) becomes the policy's first champion.

See :mod:`controller.actions.adopt` for what is checked and recorded. A model that does not fit the policy, or a
reference file that cannot be used, ends the command with one line and exit code 2, nothing stored or registered.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from controller.cli.common import SINGLE_CONFIG, bad_input_file, clear_errors, labeled_rows, load_one
from controller.cli.group import main


@main.command("adopt")
@SINGLE_CONFIG
@click.option("--model-uri", required=True,
              help="The model: models:/NAME/3, models:/NAME@alias, runs:/<run id>/<path>, or a local MLflow model "
                   "folder (scikit-learn, or River logged as a pyfunc holding the estimator in `.model`).")
@click.option("--reference", "reference_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Labeled CSV/Parquet/ARFF(.zip) with the policy's features and target: the reference window for "
                   "data drift and the champion's reference metrics. Required.")
@click.option("--time-column", default=None, help="Column of the reference file with each row's event time.")
@click.option("--source-tracking-uri", default=None,
              help="MLflow tracking URI where the model URI is resolved (default: the policy's mlflow.tracking_uri).")
@click.option("--force", is_flag=True, help="Adopt even if the model already has a champion (a new lineage root).")
@click.option("--if-missing", is_flag=True, help="Do nothing (exit 0) if the model already has a champion.")
def adopt_command(config_path: Path, model_uri: str, reference_path: Path | None, time_column: str | None,
                  source_tracking_uri: str | None, force: bool, if_missing: bool) -> None:
    """Register a model trained outside driftpilot as the first version (strategy adopted) and make it champion."""
    from tqdm import tqdm

    from controller.actions.adopt import ModelMismatch, adopt
    from controller.actions.model_registry import open_registry
    from controller.clock import SystemClock
    from controller.store import EventStore

    loaded = load_one(config_path)
    policy = loaded.config
    if reference_path is None:
        click.echo("error: adopt needs --reference FILE, a labeled CSV/Parquet file with the policy's features and "
                   f"target ({policy.target.name!r}): driftpilot judges data drift and the live metric against it. "
                   "Export a few thousand recent rows with their labels (adopting without one, from the first "
                   "matured labels, is not supported yet)", err=True)
        sys.exit(2)
    clock = SystemClock()
    with clear_errors(), bad_input_file():
        table, features, target, times = labeled_rows(reference_path, policy, time_column, None, None)
        registry = open_registry(policy, clock)
        champion = registry.champion_version(policy.registered_model)
        if if_missing and champion is not None:
            click.echo(f"{policy.registered_model} already has a champion (version {champion}); nothing to do")
            return
        foreign = registry.load_foreign(model_uri, tracking_uri=source_tracking_uri)
        store = EventStore.from_url(policy.storage.url, clock)
        try:
            with tqdm(total=len(features), desc="storing reference rows", unit="row", disable=None) as bar:
                result = adopt(loaded, foreign, features, target, store=store, registry=registry, clock=clock,
                               reference_source=str(reference_path), event_times=times, force=force,
                               progress=bar.update)
        except ModelMismatch as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in result.reference_metrics.items())
    click.echo(f"{policy.registered_model} version {result.version} is champion: adopted {result.source} "
               f"({result.flavor}); scored on {result.reference_rows} reference rows ({metrics})")
