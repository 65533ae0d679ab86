"""The champion / challenger / previous aliases: how they move, and the append-only history of every move.

Aliases move so that the registered model has a ``champion`` at every instant once it had one: moving an alias
is a single MLflow call, ``previous`` is set before ``champion`` moves, and ``champion`` is never deleted.
Every promote, advance and rollback appends an alias event: a run in ``<experiment>/decisions``
(``kind=alias_change``) holding the aliases before and after, the decision id and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.entities.model_registry import ModelVersion

from lineage.base import (
    CHALLENGER,
    CHAMPION,
    KIND_TAG,
    MODEL_TAG,
    PREVIOUS,
    RegistryStore,
    escape,
    show_aliases,
    version_str,
)
from lineage.errors import LineageError
from lineage.record import TAG_PREFIX
from lineage.runs import DECISIONS, NOTE_TAG, clip, params_text

ALIAS_EVENT_KIND = "alias_change"
# Version tags of the old layout that kept only the latest alias move; the alias history replaces them, and a
# promote or rollback removes them from the versions it touches so no stale value is left.
STALE_ALIAS_TAGS = tuple(
    TAG_PREFIX + t
    for t in ("promoted_at", "promoted_from", "rolled_back_at", "rolled_back_from", "rolled_back_to")
)


@dataclass(frozen=True)
class AliasChange:
    """What an alias operation did: the aliases (alias -> version) before and after it."""

    name: str
    action: str
    version: str
    before: Mapping[str, str]
    after: Mapping[str, str]


@dataclass(frozen=True)
class AliasEvent:
    """One promote or rollback call, as recorded in the decisions experiment (oldest first from ``alias_history``)."""

    name: str
    at: datetime
    action: str
    version: str
    before: Mapping[str, str]
    after: Mapping[str, str]
    decision_id: str | None
    reason: str | None
    run_id: str

    @property
    def changed(self) -> bool:
        return dict(self.before) != dict(self.after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "action": self.action,
            "version": self.version,
            "before": dict(self.before),
            "after": dict(self.after),
            "decision_id": self.decision_id,
            "reason": self.reason,
            "run_id": self.run_id,
        }


class Aliases:
    """Moves the aliases of driftpilot models in one :class:`RegistryStore` and records each move."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def set_challenger(self, name: str, version: str | int) -> AliasChange:
        """See :meth:`lineage.ModelRegistry.set_challenger`."""
        store = self.store
        version = version_str(version)
        with store.scope(f"set the challenger of {name!r}") as client:
            before = store.aliases(client, name, must_exist=True)
            store.model_version(client, name, version)
            if before.get(CHAMPION) == version:
                raise LineageError(
                    f"version {version} of {name!r} is the champion, it cannot also be the "
                    "challenger; register a new version to challenge it"
                )
            client.set_registered_model_alias(name, CHALLENGER, version)
            return AliasChange(name, "set_challenger", version, before, store.aliases(client, name))

    def promote(
        self, name: str, version: str | int | None = None, *, decision_id: str | None = None, reason: str | None = None
    ) -> AliasChange:
        """See :meth:`lineage.ModelRegistry.promote`."""
        store = self.store
        with store.scope(f"promote a version of {name!r}") as client:
            before = store.aliases(client, name, must_exist=True)
            target = version_str(version) if version is not None else before.get(CHALLENGER)
            if target is None:
                raise LineageError(
                    f"{name!r} has no challenger to promote (aliases: {show_aliases(before)}); call "
                    "set_challenger(name, version) first, or promote(name, version=...) explicitly"
                )
            target_mv = store.model_version(client, name, target)
            old = before.get(CHAMPION)
            if old != target:
                # previous first, champion second: champion exists throughout, and each move is one call.
                if old is not None:
                    client.set_registered_model_alias(name, PREVIOUS, old)
                client.set_registered_model_alias(name, CHAMPION, target)
            if before.get(CHALLENGER) == target:
                client.delete_registered_model_alias(name, CHALLENGER)
            self._drop_stale_alias_tags(client, name, [target_mv] + ([] if old in (None, target) else [old]))
            change = AliasChange(name, "promote", target, before, store.aliases(client, name))
            self._log_alias_event(client, change, decision_id, reason)
            return change

    def advance(
        self, name: str, version: str | int, *, decision_id: str | None = None, reason: str | None = None
    ) -> AliasChange:
        """See :meth:`lineage.ModelRegistry.advance`."""
        store = self.store
        target = version_str(version)
        with store.scope(f"advance the champion of {name!r}") as client:
            before = store.aliases(client, name, must_exist=True)
            target_mv = store.model_version(client, name, target)
            old = before.get(CHAMPION)
            if old != target:
                client.set_registered_model_alias(name, CHAMPION, target)
            if before.get(CHALLENGER) == target:
                client.delete_registered_model_alias(name, CHALLENGER)
            self._drop_stale_alias_tags(client, name, [target_mv] + ([] if old in (None, target) else [old]))
            change = AliasChange(name, "advance", target, before, store.aliases(client, name))
            self._log_alias_event(client, change, decision_id, reason)
            return change

    def rollback(self, name: str, *, decision_id: str | None = None, reason: str | None = None) -> AliasChange:
        """See :meth:`lineage.ModelRegistry.rollback`."""
        store = self.store
        with store.scope(f"roll back {name!r}") as client:
            before = store.aliases(client, name, must_exist=True)
            target = before.get(PREVIOUS)
            if target is None:
                raise LineageError(
                    f"cannot roll back {name!r}: it has no 'previous' version (aliases: {show_aliases(before)}). "
                    "'previous' is set by promote() and cleared by a rollback, so a rollback cannot be repeated; "
                    "use promote(name, version=...) to make a chosen version the champion"
                )
            bad = before.get(CHAMPION)
            client.set_registered_model_alias(name, CHAMPION, target)
            client.delete_registered_model_alias(name, PREVIOUS)
            self._drop_stale_alias_tags(client, name, [target] + ([] if bad in (None, target) else [bad]))
            change = AliasChange(name, "rollback", target, before, store.aliases(client, name))
            self._log_alias_event(client, change, decision_id, reason)
            return change

    def history(self, name: str) -> list[AliasEvent]:
        """Every promote/advance/rollback of ``name`` (oldest first): when, what moved (aliases before/after), why."""
        store = self.store
        with store.scope(f"read the alias history of {name!r}") as client:
            experiment_id = store.side_experiment(client, DECISIONS, create=False)
            if experiment_id is None:
                return []
            runs = store.search_runs(
                client,
                experiment_id,
                f"tags.`{KIND_TAG}` = '{ALIAS_EVENT_KIND}' and tags.`{MODEL_TAG}` = '{escape(name)}'",
            )
            events = [alias_event_from_run(run) for run in runs]
            return sorted(events, key=lambda e: e.at)

    def current(self, name: str) -> dict[str, str]:
        """alias -> version; empty for a model that has no version yet."""
        with self.store.scope(f"read the aliases of {name!r}") as client:
            return self.store.aliases(client, name)

    def _log_alias_event(
        self, client: MlflowClient, change: AliasChange, decision_id: str | None, reason: str | None
    ) -> str:
        store = self.store
        run_name, tags, params = alias_event_run(
            change.name, change.action, change.version, change.before, change.after, decision_id, reason
        )
        now = store.now_ms()
        run_id = client.create_run(
            store.side_experiment(client, DECISIONS), start_time=now, run_name=run_name, tags=tags
        ).info.run_id
        try:
            client.log_batch(run_id, params=[Param(k, v) for k, v in params_text(params).items()])
        except BaseException as exc:
            store.mark_failed(client, [run_id], exc)
            raise
        client.set_terminated(run_id, "FINISHED", end_time=now)
        return run_id

    def _drop_stale_alias_tags(self, client: MlflowClient, name: str, versions: Sequence[Any]) -> None:
        for item in versions:
            mv = item if isinstance(item, ModelVersion) else self.store.model_version(client, name, str(item))
            for key in STALE_ALIAS_TAGS:
                if key in (mv.tags or {}):
                    client.delete_model_version_tag(name, str(mv.version), key)


# ------------------------------------------------------------------------------------------------ alias events


def parse_aliases(text: str) -> dict[str, str]:
    """The aliases :func:`lineage.base.show_aliases` wrote (``champion=v3, previous=v2``)."""
    if text.strip() in ("", "(none)"):
        return {}
    pairs = (item.split("=", 1) for item in text.split(", "))
    return {alias: version.removeprefix("v") for alias, version in pairs}


def alias_event_run(
    name: str,
    action: str,
    version: str,
    before: Mapping[str, str],
    after: Mapping[str, str],
    decision_id: str | None,
    reason: str | None,
) -> tuple[str, dict[str, str], dict[str, str]]:
    """Run name, tags and params of the decision run that records one alias change."""
    if dict(before) == dict(after):
        moved = "no change (already so)"
    else:
        moved = f"{show_aliases(before)} → {show_aliases(after)}"
    note = f"**{action}** v{version}: {moved}" + (f"\n\nReason: {reason}" if reason else "")
    tags = {
        TAG_PREFIX + "kind": ALIAS_EVENT_KIND,
        TAG_PREFIX + "registered_model": name,
        TAG_PREFIX + "action": action,
        TAG_PREFIX + "version": version,
        TAG_PREFIX + "champion": after.get("champion", ""),
        NOTE_TAG: note,
    }
    if decision_id:
        tags[TAG_PREFIX + "decision_id"] = decision_id
    if reason:
        tags[TAG_PREFIX + "reason"] = clip(reason, 5000)
    params = {"action": action, "version": version, "before": show_aliases(before), "after": show_aliases(after)}
    return f"{action}-v{version}", tags, params


def alias_event_from_run(run: Any) -> AliasEvent:
    """The alias event a run written by :func:`alias_event_run` records."""
    tags, params = run.data.tags, run.data.params
    return AliasEvent(
        name=tags.get(TAG_PREFIX + "registered_model", ""),
        at=datetime.fromtimestamp(run.info.start_time / 1000, UTC),
        action=params.get("action", tags.get(TAG_PREFIX + "action", "")),
        version=params.get("version", tags.get(TAG_PREFIX + "version", "")),
        before=parse_aliases(params.get("before", "")),
        after=parse_aliases(params.get("after", "")),
        decision_id=tags.get(TAG_PREFIX + "decision_id"),
        reason=tags.get(TAG_PREFIX + "reason"),
        run_id=run.info.run_id,
    )
