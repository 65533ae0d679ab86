"""The ``driftpilot`` command line: the console script's entry point (``controller.cli.main:main``).

The click group lives in :mod:`controller.cli.group` and every command module registers its commands on it when it
is imported; this module imports them all, so ``main`` here is the whole command line. The helpers the command
modules share (loading policy files, clear error messages, labeled files) are in :mod:`controller.cli.common`.
"""

from __future__ import annotations

from controller.cli import (  # noqa: F401 - imported to register their commands on `main`
    adopt_command,  # adopt
    backtest_commands,  # backtest
    config_commands,  # config validate, config schema
    db_commands,  # db upgrade, db prune, db compact
    features_commands,  # features materialize, features get, stream
    import_commands,  # predictions import, labels import
    loop_commands,  # run, status, decisions, retrain, promote, rollback
    model_commands,  # bootstrap, lineage, predict, learn, report drift
    replay_command,  # replay
    serve_commands,  # serve, stats
)
from controller.cli.demo import command as demo_command  # noqa: F401 - demo
from controller.cli.group import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
