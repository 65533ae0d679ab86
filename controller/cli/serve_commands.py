"""``driftpilot serve`` (the HTTP API of the models of some policy files) and ``driftpilot stats`` (their label
statistics)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import click

from controller.cli.common import CONFIG_OPTION, clear_errors, fail, load_all
from controller.cli.group import main
from controller.errors import StoreUnavailable


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
    policies = load_all(config_paths)
    level = ctx.find_root().params["log_level"].lower()
    # uvicorn's access log follows --log-level: one line per request only when asked for (DEBUG/INFO).
    options = {"host": host, "port": port, "log_level": level, "access_log": level in ("debug", "info")}
    with clear_errors():
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

    for loaded in load_all(config_paths):
        try:
            store = EventStore.from_url(loaded.config.storage.url, SystemClock())
            click.echo(json.dumps(store.label_stats(loaded.config.model).to_dict(), indent=2))
        except StoreUnavailable as exc:
            fail(str(exc))
