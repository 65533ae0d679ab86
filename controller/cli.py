"""The ``driftpilot`` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from controller.config import load_policy, policy_json_schema
from controller.errors import ConfigError, StoreUnavailable

CONFIG_OPTION = click.option("--config", "config_paths", required=True, multiple=True,
                             type=click.Path(dir_okay=False, path_type=Path),
                             help="Policy file (YAML). Repeat for several models.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(log_level: str) -> None:
    """driftpilot keeps machine-learning models fresh in production."""
    logging.basicConfig(level=log_level.upper(),
                        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
                               '"message":"%(message)s"}')


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
    from controller.db import create_store_engine, current_revision, upgrade

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
def serve(config_paths: tuple[Path, ...], host: str, port: int) -> None:
    """Run the HTTP API for the models of the given policy files."""
    import uvicorn

    from controller.api import create_app
    from controller.clock import SystemClock
    from controller.service import build_runtimes

    clock = SystemClock()
    try:
        runtimes = build_runtimes(_load_all(config_paths), clock)
    except (ConfigError, StoreUnavailable) as exc:
        _fail(str(exc))
    logging.getLogger("driftpilot").info("serving models %s on http://%s:%d", sorted(runtimes), host, port)
    uvicorn.run(create_app(runtimes, clock), host=host, port=port, log_level="info")


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
