"""The ``driftpilot`` click group, alone in its module: every command module imports it and registers its commands
on it; :mod:`controller.cli.main` imports every command module, so the group it hands the console script is
complete. Importing this module alone gives the group without its commands."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(log_level: str) -> None:
    """driftpilot keeps machine-learning models fresh in production."""
    from controller.logs import configure

    configure(log_level)
