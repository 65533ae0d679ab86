"""``driftpilot config validate`` and ``driftpilot config schema``: policy files checked, and their JSON Schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from controller.cli.group import main
from controller.config import policy_json_schema
from controller.errors import ConfigError
from controller.policy_loader import load_policy


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
