"""Feature views from the command line: ``driftpilot features materialize`` (batch views into the online store),
``driftpilot features get`` (one entity's record and its age) and ``driftpilot stream`` (the stream processor)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import click

from controller.cli.common import CONFIG_OPTION, SINGLE_CONFIG, clear_errors, load_all, load_one
from controller.cli.group import main

log = logging.getLogger("driftpilot.features")


@main.group("features")
def features_group() -> None:
    """Feature views: materialize batch views into the online store, read records back."""


@features_group.command("materialize")
@CONFIG_OPTION
@click.option("--view", "views", multiple=True, help="Only this batch view (repeat for several); default: all.")
def materialize_command(config_paths: tuple[Path, ...], views: tuple[str, ...]) -> None:
    """Compute each batch view from its source (file or SQL query) and load it into the online store. A source that
    does not fit the view: one line on stderr, exit code 2, nothing of that view written."""
    from controller.clock import SystemClock
    from controller.features.materialize import MaterializeError, materialize_view
    from controller.features.serving import open_store

    clock = SystemClock()
    failed = False
    for loaded in load_all(config_paths):
        policy = loaded.config
        chosen = [v for v in policy.feature_views.batch_views if not views or v.name in views]
        unknown = sorted(set(views) - {v.name for v in policy.feature_views.batch_views})
        if unknown:
            _exit_bad(f"{loaded.path}: no batch view {unknown}; the policy's batch views are "
                      f"{[v.name for v in policy.feature_views.batch_views] or '(none)'}")
        if not chosen:
            click.echo(f"{policy.model}: no batch views to materialize", err=True)
            continue
        with clear_errors():
            store = open_store(policy)
            try:
                for view in chosen:
                    try:
                        report = materialize_view(view, policy.feature_types, store, clock)
                    except MaterializeError as exc:
                        click.echo(f"error: {exc}", err=True)
                        failed = True
                        continue
                    click.echo(f"{policy.model}/{view.name}: {report.entities} entities from {report.rows} rows in "
                               f"{report.seconds:.2f} s -> {policy.feature_views.online_store.url}")
            finally:
                store.close()
    if failed:
        sys.exit(2)


@features_group.command("get")
@SINGLE_CONFIG
@click.option("--view", required=True, help="The feature view.")
@click.option("--key", required=True, help="The entity key.")
def get_command(config_path: Path, view: str, key: str) -> None:
    """Print one entity's record of a view as JSON: values, timestamp and age in seconds."""
    from controller.clock import SystemClock
    from controller.features.config import StreamView
    from controller.features.online_store import meta_watermark
    from controller.features.serving import open_store

    policy = load_one(config_path).config
    try:
        spec = policy.feature_views.view(view)
    except KeyError as exc:
        _exit_bad(str(exc.args[0]))
    with clear_errors():
        store = open_store(policy)
        meta = [meta_watermark(view)] if isinstance(spec, StreamView) else []
        (record,), metas = store.read([(view, key)], meta)
        now = SystemClock().now().timestamp()
        as_of = float(metas[meta[0]]) if meta and metas.get(meta[0]) else (record.timestamp if record else None)
        click.echo(json.dumps({"view": view, "key": key, "values": dict(record.values) if record else None,
                               "as_of": as_of, "age_s": None if as_of is None else round(now - as_of, 3)}))


@main.command("stream")
@SINGLE_CONFIG
@click.option("--consumer", default=None, help="Consumer name in the group (default: host:pid).")
@click.option("--report-every", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between progress log lines.")
def stream_command(config_path: Path, consumer: str | None, report_every: float) -> None:
    """Run the stream processor of the policy's stream views: raw events from the Redis Stream (consumer group) ->
    per-entity rolling aggregates -> the online store. Resumes after its last checkpoint without double counting.
    SIGTERM or Ctrl-C stops it after the current batch (and saves a checkpoint)."""
    from controller.features.serving import open_event_stream, open_store
    from controller.features.stream import StreamProcessor

    loaded = load_one(config_path)
    policy = loaded.config
    views = policy.feature_views
    if not views.stream_views:
        _exit_bad(f"{loaded.path}: the policy has no stream views (feature_views.views with kind: stream); nothing "
                  "to process")
    events = views.events
    assert events is not None  # the config requires it with stream views
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with clear_errors():
        processor = StreamProcessor(views.stream_views, open_event_stream(policy), open_store(policy),
                                    consumer=consumer or f"{socket.gethostname()}:{os.getpid()}",
                                    batch_size=events.batch_size, block_ms=events.block_ms,
                                    checkpoint_every=events.checkpoint_every)
        recovery = processor.start()
        log.info("stream processor for %s on %s (group %s): resumed after %s, %d event(s) folded again",
                 policy.model, events.stream, processor.events.group, recovery.checkpoint_id, recovery.replayed)
        last = time.monotonic()
        while not stop.is_set():
            processor.step()
            if time.monotonic() - last >= report_every:
                last = time.monotonic()
                log.info("stream %s: %s", policy.model, json.dumps(processor.counters()))
        processor.checkpoint()
        log.info("stream processor stopped: %s", json.dumps(processor.counters()))


def _exit_bad(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)

