"""The event store from the command line: ``driftpilot db upgrade`` applies pending migrations, ``driftpilot db
prune`` applies each policy's ``storage.retention`` (``--dry-run`` says what would go), ``driftpilot db compact`` seals
what is due now."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from controller.cli.common import CONFIG_OPTION, clear_errors, fail, load_all
from controller.cli.group import main


@main.group()
def db() -> None:
    """Manage the event store's schema."""


@db.command("upgrade")
@CONFIG_OPTION
def db_upgrade(config_paths: tuple[Path, ...]) -> None:
    """Apply pending migrations to each policy's store (also done automatically on start)."""
    from controller.errors import StoreUnavailable
    from controller.store.db import create_store_engine, current_revision, upgrade

    for loaded in load_all(config_paths):
        engine = create_store_engine(loaded.config.storage.url)
        try:
            upgrade(engine)
            click.echo(f"{engine.url.render_as_string(hide_password=True)}: at revision {current_revision(engine)}")
        except StoreUnavailable as exc:
            fail(str(exc))
        finally:
            engine.dispose()


@db.command("prune")
@CONFIG_OPTION
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="One JSON report per model instead of text.")
def db_prune(config_paths: tuple[Path, ...], dry_run: bool, as_json: bool) -> None:
    """Delete (or archive) events older than each policy's storage.retention. Rows a registered version's lineage
    points at (its training window and holdout) and the rows of an in-flight decision are never deleted."""
    from controller.clock import SystemClock
    from controller.errors import StoreUnavailable
    from controller.store import EventStore
    from controller.store.retention import prune

    clock = SystemClock()
    policies = load_all(config_paths)
    failed = False
    with clear_errors():
        for loaded in policies:
            config = loaded.config
            retention = config.storage.retention
            if retention is None:
                _say(as_json, {"model": config.model, "skipped": "no storage.retention in the policy"},
                     f"{config.model}: nothing pruned: the policy has no storage.retention section (add one, e.g. "
                     "`storage: {retention: {max_age: 90d}}`)")
                continue
            store = EventStore.from_url(config.storage.url, clock)
            try:
                protected = _protected(loaded, clock, store)
            except _RegistryDown as exc:
                failed = True
                store.dispose()
                _say(as_json, {"model": config.model, "skipped": str(exc)}, f"{config.model}: not pruned: {exc}")
                continue
            try:
                archive = Path(retention.archive) if retention.archive else None
                report = prune(store, config.model, max_age=retention.max_age, max_rows=retention.max_rows,
                               protected=protected, now=clock.now(), dry_run=dry_run, archive=archive)
            except StoreUnavailable as exc:
                fail(str(exc))
            finally:
                store.dispose()
            _say(as_json, report.to_dict(), "\n".join(report.lines()))
    if failed:
        raise SystemExit(1)


@db.command("compact")
@CONFIG_OPTION
@click.option("--all", "everything", is_flag=True,
              help="Seal every labeled row, also the newest ones the store keeps in its row tables.")
def db_compact(config_paths: tuple[Path, ...], everything: bool) -> None:
    """Seal each model's older labeled rows into compressed segments now (the store also does it by itself after
    label writes). Reads answer the same before and after."""
    from controller.clock import SystemClock
    from controller.errors import StoreUnavailable
    from controller.store import EventStore

    clock = SystemClock()
    with clear_errors():
        for loaded in load_all(config_paths):
            store = EventStore.from_url(loaded.config.storage.url, clock)
            try:
                results = store.seal(loaded.config.model, keep_rows=0 if everything else None,
                                     min_rows=1 if everything else None)
            except StoreUnavailable as exc:
                fail(str(exc))
            finally:
                store.dispose()
            rows = sum(r.rows for r in results)
            size = sum(r.bytes for r in results)
            click.echo(f"{loaded.config.model}: sealed {rows:,} label rows into {len(results)} segments"
                       + (f" ({size / max(rows, 1):.0f} bytes per row)" if rows else ""))


class _RegistryDown(Exception):
    pass


def _protected(loaded: Any, clock: Any, store: Any) -> list[Any]:
    """The label-seq ranges of the model's registered versions; an unreachable registry stops the prune (what it
    protects is unknown)."""
    from controller.actions.model_registry import open_registry
    from controller.store.retention import protected_by_versions
    from lineage.errors import LineageNotFound, LineageUnavailable

    try:
        registry = open_registry(loaded.config, clock)
        versions = registry.tree(loaded.config.registered_model)
    except LineageNotFound:
        return []  # no version registered yet: nothing is protected by lineage
    except LineageUnavailable as exc:
        raise _RegistryDown(f"the model registry is unreachable, so the rows its versions need are unknown ({exc}); "
                            "prune again once MLflow answers") from exc
    return protected_by_versions(versions, store, loaded.config.model)


def _say(as_json: bool, document: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(document) if as_json else text)
