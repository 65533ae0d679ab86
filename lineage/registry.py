"""ModelRegistry: driftpilot's model versions, their lineage and the champion/challenger/previous aliases on MLflow.

One registered version = one MLflow run (named ``v<n>-<strategy>``) holding the params, the holdout metrics,
the lineage record as tags and the training window as a dataset input, plus the logged model, registered
with the same tags and a Markdown description linking its parent version and its run.

Aliases move so that the registered model has a ``champion`` at every instant once it had one: moving an alias
is a single MLflow call, ``previous`` is set before ``champion`` moves, and ``champion`` is never deleted.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import mlflow
import mlflow.data
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, LoggedModelInput, Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from lineage.errors import LineageError, LineageNotFound
from lineage.flavors import Flavor, flavor_for, flavor_named
from lineage.foreign import ForeignModel, load_foreign
from lineage.gateway import MlflowGateway, RegistrySettings, absolute_artifact_location, setup_lock
from lineage.record import (
    RECORD_ARTIFACT,
    SCHEMA_VERSION,
    STATEFUL_STRATEGIES,
    TAG_PREFIX,
    TAGS_SCHEMA,
    LineageRecord,
    record_schema,
    time_range,
)
from lineage.runs import (
    ALIAS_EVENT_KIND,
    COMPARISON_KIND,
    COMPARISONS,
    DECISIONS,
    NOTE_TAG,
    PARENT_RUN_TAG,
    AliasEvent,
    alias_event_from_run,
    alias_event_run,
    check_metrics,
    comparison_entry,
    comparison_metrics,
    comparison_note,
    ensure_kind,
    holdout_dataset_name,
    params_text,
    side_experiment,
    ui_link,
    with_comparison,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"

FLAVOR_TAG = TAG_PREFIX + "flavor"
KIND_TAG = TAG_PREFIX + "kind"
MODEL_TAG = TAG_PREFIX + "registered_model"
VERSION_TAG = TAG_PREFIX + "version"
DECISION_TAG = TAG_PREFIX + "decision_id"
COMPARISON_TAG = TAG_PREFIX + "comparison_id"
# Version tags of the old layout that kept only the latest alias move; the alias history replaces them, and a
# promote or rollback removes them from the versions it touches so no stale value is left.
STALE_ALIAS_TAGS = tuple(
    TAG_PREFIX + t
    for t in ("promoted_at", "promoted_from", "rolled_back_at", "rolled_back_from", "rolled_back_to")
)
_NOTE_TAG = NOTE_TAG  # the run's description in the MLflow UI
MODEL_DESCRIPTION = (
    "Managed by driftpilot. Each version's description names its parent, strategy, trigger and data window (event "
    "time and label arrival), links its training run and every comparison it took part in; its tags are a short "
    "summary (the full lineage record is `driftpilot-lineage.json` in the training run). The experiment "
    "`<experiment>/comparisons` scores champion and challenger on the same held-out rows; "
    "`<experiment>/decisions` holds drift checks and the alias history (every promote and rollback)."
)
_EXAMPLE_ROWS = 5
# MLflow hints that integer columns cannot hold missing values; class labels and counts are integers on purpose.
_INTEGER_HINT = "Hint: Inferred schema contains integer column"


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as driftpilot sees it. ``record`` is None for a version registered outside driftpilot."""

    name: str
    version: str
    record: LineageRecord | None
    aliases: tuple[str, ...]
    run_id: str | None
    created_at: datetime
    flavor: str | None
    description: str
    tags: Mapping[str, str]

    @property
    def parent_version(self) -> str | None:
        return self.record.parent_version if self.record is not None else None


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded from the registry: the native estimator (sklearn object or live River model) and its lineage."""

    model: Any
    version: str
    record: LineageRecord | None
    flavor: str


@dataclass(frozen=True)
class AliasChange:
    """What an alias operation did: the aliases (alias -> version) before and after it."""

    name: str
    action: str
    version: str
    before: Mapping[str, str]
    after: Mapping[str, str]


class ModelRegistry:
    """Versions, lineage and aliases of driftpilot models in one MLflow experiment and model registry."""

    def __init__(
        self, gateway: MlflowGateway, experiment_id: str, clock: Clock
    ) -> None:
        self._gateway = gateway
        self.experiment_id = experiment_id
        # Injected, never read from the wall here: the controller's clock is simulated in backtests.
        self._clock = clock
        self._side_experiments: dict[str, str] = {}
        self._records: dict[tuple[str, str, str], LineageRecord] = {}
        self._kind_checked = False

    @classmethod
    def connect(
        cls,
        settings: RegistrySettings,
        *,
        clock: Clock,
        client_class: type[MlflowClient] = MlflowClient,
    ) -> ModelRegistry:
        """Open (creating if needed) ``settings.experiment``; :class:`LineageUnavailable` if the store is unreachable.

        Safe when several processes open the same fresh local store at once: the set-up (MLflow's schema creation
        in the tracking and registry databases, the experiment) runs under :func:`lineage.gateway.setup_lock`.
        """
        with setup_lock(settings):
            return cls._connect(settings, clock, client_class)

    @classmethod
    def _connect(cls, settings: RegistrySettings, clock: Clock, client_class: type[MlflowClient]) -> ModelRegistry:
        gateway = MlflowGateway.from_settings(settings, client_class)
        with gateway.scope(f"open experiment {settings.experiment!r}") as client:
            # The registry store is opened lazily by MLflow; open it now, under the set-up lock, so a separate
            # registry database gets its schema here rather than at the first alias read of some later request.
            client.search_registered_models(max_results=1)
            experiment = client.get_experiment_by_name(settings.experiment)
            if experiment is None:
                try:
                    experiment_id = client.create_experiment(
                        settings.experiment,
                        artifact_location=absolute_artifact_location(settings.artifact_location),
                    )
                except MlflowException as exc:
                    # RESOURCE_ALREADY_EXISTS: another process created it in the meantime; use theirs.
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    experiment_id = client.get_experiment_by_name(settings.experiment).experiment_id
            elif experiment.lifecycle_stage == "deleted":
                raise LineageError(
                    f"experiment {settings.experiment!r} at {settings.tracking_uri} is deleted; restore it with "
                    f"`mlflow experiments restore --experiment-id {experiment.experiment_id}` or set another "
                    "mlflow.experiment name in the policy file"
                )
            else:
                experiment_id = experiment.experiment_id
        return cls(gateway, str(experiment_id), clock)

    @property
    def tracking_uri(self) -> str:
        return self._gateway.tracking_uri

    def check(self) -> None:
        """Raise :class:`LineageUnavailable` unless the store answers (a cheap read)."""
        with self._gateway.scope("check the MLflow store") as client:
            client.get_experiment(self.experiment_id)

    # ------------------------------------------------------------------------------------------------ register

    def register(
        self,
        name: str,
        model: Any,
        record: LineageRecord,
        *,
        params: Mapping[str, Any] | None = None,
        training_data: tuple[pd.DataFrame, pd.Series] | None = None,
        input_example: Any = None,
    ) -> VersionInfo:
        """Log ``model`` with its lineage in a new run and register it as the next version of ``name``.

        ``training_data`` (features, labels) is recorded as the run's dataset input named
        ``window-<fingerprint[:12]>``; its first rows also serve as ``input_example`` (which gives the model a
        signature) unless one is passed. The new version gets no alias; see :meth:`set_challenger`.
        """
        flavor = flavor_for(model)
        with self._gateway.scope(f"register a new version of {name!r}") as client:
            self._ensure_main_kind(client)
            self._ensure_registered_model(client, name)
            self._check_parent(client, name, record)
            record_tags = record.summary_tags()
            run = client.create_run(
                self.experiment_id,
                run_name=f"pending-{record.strategy}",
                start_time=self._now_ms(),
                tags={
                    **record_tags,
                    KIND_TAG: "training",
                    MODEL_TAG: name,
                    FLAVOR_TAG: flavor.name,
                },
            )
            run_id = run.info.run_id
            try:
                version = self._log_and_register(
                    client,
                    name,
                    model,
                    record,
                    flavor,
                    run_id,
                    params,
                    training_data,
                    input_example,
                )
            except BaseException as exc:
                try:
                    client.set_terminated(run_id, "FAILED", end_time=self._now_ms())
                except Exception as cleanup:  # noqa: BLE001 - the store may be what failed; keep the first error
                    exc.add_note(f"driftpilot could not mark run {run_id} FAILED either: {cleanup}")
                raise
            return self._version_info(client, name, self._model_version(client, name, version))

    def _log_and_register(
        self,
        client: MlflowClient,
        name: str,
        model: Any,
        record: LineageRecord,
        flavor: Flavor,
        run_id: str,
        params: Mapping[str, Any] | None,
        training_data: tuple[pd.DataFrame, pd.Series] | None,
        input_example: Any,
    ) -> str:
        now = self._now_ms()
        # "holdout." says these numbers are this version's own holdout: different versions' holdouts differ, so
        # they are not comparable across training runs. The fair pair is a comparison run (log_comparison).
        metrics = [Metric(f"holdout.{k}", v, now, 0) for k, v in record.holdout_metrics.items()]
        run_params = {**dict(params or {}), "strategy": record.strategy, "trigger": record.trigger}
        client.log_batch(
            run_id, metrics=metrics, params=[Param(k, v) for k, v in params_text(run_params).items()]
        )
        # The full record; the version and the run carry only its summary tags.
        client.log_text(run_id, record.to_json(), RECORD_ARTIFACT)
        record_tags = record.summary_tags()
        window_tags = {
            "window_start": record.window_start.isoformat(),
            "window_end": record.window_end.isoformat(),
            "maturity_cut": record.maturity_cut.isoformat(),
        }
        if record.event_time_start is not None:
            window_tags["event_time_start"] = record.event_time_start.isoformat()
            window_tags["event_time_end"] = record.event_time_end.isoformat()
        # Metrics logged above are copied onto the LoggedModel by log_model, so the model page shows them too.
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_INTEGER_HINT)
            if training_data is not None:
                mlflow.log_input(
                    _window_dataset(record, *training_data), context="training", tags=window_tags
                )
            if input_example is None and training_data is not None:
                # A few real rows give the logged model a signature (input schema) in the MLflow UI.
                input_example = training_data[0].head(_EXAMPLE_ROWS)
            info = flavor.log(model, input_example=input_example, tags=record_tags)
        client.set_terminated(run_id, "FINISHED", end_time=self._now_ms())
        description = _describe(name, record, self.experiment_id, run_id)
        mv = client.create_model_version(
            name,
            source=info.model_uri,
            run_id=run_id,
            model_id=info.model_id,
            description=description,
            tags={**record_tags, FLAVOR_TAG: flavor.name},
        )
        version = str(mv.version)
        client.update_run(run_id, name=f"v{version}-{record.strategy}")
        client.log_batch(
            run_id, tags=[RunTag(VERSION_TAG, version), RunTag(_NOTE_TAG, description)]
        )
        return version

    def _ensure_registered_model(self, client: MlflowClient, name: str) -> None:
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if not _not_found(exc):
                raise
            try:
                client.create_registered_model(
                    name,
                    tags={KIND_TAG: "driftpilot"},
                    description=MODEL_DESCRIPTION,
                )
            except MlflowException as again:
                if again.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

    def _check_parent(self, client: MlflowClient, name: str, record: LineageRecord) -> None:
        if record.parent_version is None:
            return
        parent = self._model_version(client, name, record.parent_version, role="parent version")
        if record.strategy not in STATEFUL_STRATEGIES:
            return
        # Both tag layouts carry chain_depth; a version registered outside driftpilot starts a chain.
        parent_depth = int((parent.tags or {}).get(TAG_PREFIX + "chain_depth", 0))
        if record.chain_depth != parent_depth + 1:
            raise LineageError(
                f"chain_depth {record.chain_depth} does not continue parent version {record.parent_version} of "
                f"{name!r} (chain_depth {parent_depth}): a {record.strategy} child must have chain_depth "
                f"{parent_depth + 1}"
            )

    # ------------------------------------------------------------------------------------------------- aliases

    def set_challenger(self, name: str, version: str | int) -> AliasChange:
        """Point ``challenger`` at ``version`` (it replaces any earlier challenger)."""
        version = _version_str(version)
        with self._gateway.scope(f"set the challenger of {name!r}") as client:
            before = self._aliases(client, name, must_exist=True)
            self._model_version(client, name, version)
            if before.get(CHAMPION) == version:
                raise LineageError(
                    f"version {version} of {name!r} is the champion, it cannot also be the "
                    "challenger; register a new version to challenge it"
                )
            client.set_registered_model_alias(name, CHALLENGER, version)
            return AliasChange(name, "set_challenger", version, before, self._aliases(client, name))

    def promote(
        self,
        name: str,
        version: str | int | None = None,
        *,
        decision_id: str | None = None,
        reason: str | None = None,
    ) -> AliasChange:
        """Make ``version`` (default: the challenger) the champion; the old champion becomes ``previous``.

        ``challenger`` is cleared if it pointed at the promoted version. Promoting the current champion again
        changes nothing (safe to retry after a crash). Every call appends an alias event (a run in the decisions
        experiment, carrying ``decision_id`` and ``reason``); see :meth:`alias_history`.
        """
        with self._gateway.scope(f"promote a version of {name!r}") as client:
            before = self._aliases(client, name, must_exist=True)
            target = _version_str(version) if version is not None else before.get(CHALLENGER)
            if target is None:
                raise LineageError(
                    f"{name!r} has no challenger to promote (aliases: {_show(before)}); call "
                    "set_challenger(name, version) first, or promote(name, version=...) explicitly"
                )
            target_mv = self._model_version(client, name, target)
            old = before.get(CHAMPION)
            if old != target:
                # previous first, champion second: champion exists throughout, and each move is one call.
                if old is not None:
                    client.set_registered_model_alias(name, PREVIOUS, old)
                client.set_registered_model_alias(name, CHAMPION, target)
            if before.get(CHALLENGER) == target:
                client.delete_registered_model_alias(name, CHALLENGER)
            self._drop_stale_alias_tags(client, name, [target_mv] + ([] if old in (None, target) else [old]))
            change = AliasChange(name, "promote", target, before, self._aliases(client, name))
            self._log_alias_event(client, change, decision_id, reason)
            return change

    def advance(
        self, name: str, version: str | int, *, decision_id: str | None = None, reason: str | None = None
    ) -> AliasChange:
        """Move ``champion`` to ``version``, a checkpoint of the champion's own learner (its continuation), leaving
        ``previous`` as it is: a rollback still returns to the champion before the last real change. Appends an alias
        event like :meth:`promote`."""
        target = _version_str(version)
        with self._gateway.scope(f"advance the champion of {name!r}") as client:
            before = self._aliases(client, name, must_exist=True)
            target_mv = self._model_version(client, name, target)
            old = before.get(CHAMPION)
            if old != target:
                client.set_registered_model_alias(name, CHAMPION, target)
            if before.get(CHALLENGER) == target:
                client.delete_registered_model_alias(name, CHALLENGER)
            self._drop_stale_alias_tags(client, name, [target_mv] + ([] if old in (None, target) else [old]))
            change = AliasChange(name, "advance", target, before, self._aliases(client, name))
            self._log_alias_event(client, change, decision_id, reason)
            return change

    def rollback(
        self, name: str, *, decision_id: str | None = None, reason: str | None = None
    ) -> AliasChange:
        """Make ``previous`` the champion again and clear ``previous``; appends an alias event like :meth:`promote`."""
        with self._gateway.scope(f"roll back {name!r}") as client:
            before = self._aliases(client, name, must_exist=True)
            target = before.get(PREVIOUS)
            if target is None:
                raise LineageError(
                    f"cannot roll back {name!r}: it has no 'previous' version (aliases: {_show(before)}). "
                    "'previous' is set by promote() and cleared by a rollback, so a rollback cannot be repeated; "
                    "use promote(name, version=...) to make a chosen version the champion"
                )
            bad = before.get(CHAMPION)
            client.set_registered_model_alias(name, CHAMPION, target)
            client.delete_registered_model_alias(name, PREVIOUS)
            self._drop_stale_alias_tags(client, name, [target] + ([] if bad in (None, target) else [bad]))
            change = AliasChange(name, "rollback", target, before, self._aliases(client, name))
            self._log_alias_event(client, change, decision_id, reason)
            return change

    def alias_history(self, name: str) -> list[AliasEvent]:
        """Every promote/rollback of ``name`` (oldest first): when, what moved (aliases before/after), why."""
        with self._gateway.scope(f"read the alias history of {name!r}") as client:
            experiment_id = self._side_experiment(client, DECISIONS, create=False)
            if experiment_id is None:
                return []
            runs = self._search_runs(
                client,
                experiment_id,
                f"tags.`{KIND_TAG}` = '{ALIAS_EVENT_KIND}' and tags.`{MODEL_TAG}` = '{_escape(name)}'",
            )
            events = [alias_event_from_run(run) for run in runs]
            return sorted(events, key=lambda e: e.at)

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version; empty for a model that has no version yet."""
        with self._gateway.scope(f"read the aliases of {name!r}") as client:
            return self._aliases(client, name)

    def champion_version(self, name: str) -> str | None:
        """The champion's version, or None when there is none yet (no bootstrap so far)."""
        return self.aliases(name).get(CHAMPION)

    # ------------------------------------------------------------------------------------------------- reading

    def load(
        self, name: str, alias: str = CHAMPION, *, version: str | int | None = None
    ) -> LoadedModel:
        """Load the version behind ``alias`` (or the explicit ``version``) as its native object."""
        with self._gateway.scope(f"load {name!r}") as client:
            if version is None:
                aliases = self._aliases(client, name, must_exist=True)
                if alias not in aliases:
                    raise LineageNotFound(
                        f"{name!r} has no {alias!r} alias; its aliases are: {_show(aliases)}. "
                        f"Load one of those, or a version with load(name, version=...)"
                    )
                version = aliases[alias]
            mv = self._model_version(client, name, _version_str(version))
            info = self._version_info(client, name, mv)
            # A version registered by hand (no flavor tag) is most likely a plain scikit-learn model.
            flavor = flavor_named(info.flavor or "sklearn")
            model = flavor.load(f"models:/{name}/{info.version}")
            return LoadedModel(
                model=model, version=info.version, record=info.record, flavor=flavor.name
            )

    def load_foreign(self, uri: str, *, tracking_uri: str | None = None) -> ForeignModel:
        """Load a model logged outside driftpilot (``models:/NAME/3``, ``runs:/<run>/<path>``, a local MLflow model
        folder) with what its signature says; ``tracking_uri``: another MLflow store to resolve it in (default this
        registry's). See :mod:`lineage.foreign`."""
        gateway = self._gateway
        if tracking_uri is not None and tracking_uri != self.tracking_uri:
            gateway = MlflowGateway.from_settings(RegistrySettings(tracking_uri=tracking_uri), type(gateway.client))
        with gateway.scope(f"load the model {uri}"):
            return load_foreign(uri)

    def get(self, name: str, version: str | int) -> VersionInfo:
        with self._gateway.scope(f"read version {version} of {name!r}") as client:
            return self._version_info(
                client, name, self._model_version(client, name, _version_str(version))
            )

    def ancestors(self, name: str, version: str | int) -> list[VersionInfo]:
        """The parent, grandparent, ... up to the root (nearest first); empty for a root version."""
        with self._gateway.scope(f"walk the ancestors of version {version} of {name!r}") as client:
            aliases = self._aliases(client, name)
            current = self._version_info(
                client, name, self._model_version(client, name, _version_str(version)), aliases
            )
            chain: list[VersionInfo] = []
            seen = {current.version}
            while current.parent_version is not None:
                if current.parent_version in seen:
                    raise LineageError(
                        f"lineage of {name!r} has a cycle through version {current.parent_version}; "
                        f"fix the {TAG_PREFIX}parent_version tags"
                    )
                seen.add(current.parent_version)
                current = self._version_info(
                    client,
                    name,
                    self._model_version(
                        client, name, current.parent_version, role="parent version"
                    ),
                    aliases,
                )
                chain.append(current)
            return chain

    def tree(self, name: str) -> list[VersionInfo]:
        """Every version of ``name`` (oldest first) with its record, aliases, creation time and run."""
        with self._gateway.scope(f"list the versions of {name!r}") as client:
            aliases = self._aliases(client, name, must_exist=True)
            return [
                self._version_info(client, name, mv, aliases)
                for mv in self._all_versions(client, name)
            ]

    # ------------------------------------------------------------------------------------------- runs, artifacts

    def log_artifact(
        self, run_id: str, local_path: str | Path, artifact_path: str | None = None
    ) -> None:
        """Attach a file (e.g. an Evidently HTML report) to a run, under ``artifact_path`` if given."""
        path = Path(local_path)
        if not path.is_file():
            raise LineageError(f"cannot attach {str(path)!r} to run {run_id}: no such file")
        with self._gateway.scope(f"attach {path.name} to run {run_id}") as client:
            client.log_artifact(run_id, str(path), artifact_path)

    def log_decision(
        self,
        name: str,
        *,
        decision_id: str,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        artifacts: Sequence[str | Path] = (),
    ) -> str:
        """Record one controller decision as a finished run (``decision-<id>``); returns the run id.

        The controller decides the content; this adds ``driftpilot.kind=decision``, the model name and the id.
        The run goes to ``<experiment>/decisions``, apart from the training runs.
        """
        _check_files(decision_id, artifacts)
        with self.decision_run(name, decision_id=decision_id, tags=tags) as run:
            run.log(metrics=metrics, params=params, artifacts=artifacts)
        return run.run_id

    @contextmanager
    def decision_run(
        self,
        name: str,
        *,
        decision_id: str,
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
    ) -> Iterator[DecisionRun]:
        """A decision run that is open while the decision is being made: FINISHED when the block ends, FAILED (with
        the error as tag ``driftpilot.error``) when it raises. Log to it with :meth:`DecisionRun.log`."""
        with self._gateway.scope(f"start decision {decision_id} of {name!r}") as client:
            run_id = client.create_run(
                self._side_experiment(client, DECISIONS),
                run_name=run_name or f"decision-{decision_id}",
                start_time=self._now_ms(),
                tags={
                    **{k: str(v) for k, v in (tags or {}).items()},
                    KIND_TAG: "decision",
                    MODEL_TAG: name,
                    DECISION_TAG: decision_id,
                },
            ).info.run_id
        run = DecisionRun(self, name, decision_id, run_id)
        try:
            yield run
        except BaseException as exc:
            try:
                with self._gateway.scope(f"mark decision {decision_id} of {name!r} failed") as client:
                    client.set_tag(run_id, TAG_PREFIX + "error", _clip(f"{type(exc).__name__}: {exc}", 5000))
                    client.set_terminated(run_id, "FAILED", end_time=self._now_ms())
            except Exception as cleanup:  # noqa: BLE001 - the store may be what failed; keep the first error
                exc.add_note(f"driftpilot could not mark run {run_id} FAILED either: {cleanup}")
            raise
        with self._gateway.scope(f"finish decision {decision_id} of {name!r}") as client:
            client.set_terminated(run_id, "FINISHED", end_time=self._now_ms())

    def log_comparison(
        self,
        name: str,
        *,
        comparison_id: str,
        champion_version: str,
        challenger_version: str,
        champion_metrics: Mapping[str, float],
        challenger_metrics: Mapping[str, float],
        holdout_rows: int,
        holdout_fingerprint: str,
        verdict: str | None = None,
        p_value: float | None = None,
        test: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Record one champion/challenger comparison on one holdout as an evaluation run; returns its run id.

        The run (in ``<experiment>/comparisons``, named ``v<challenger> vs champion v<champion>``) carries
        ``champion.<m>``, ``challenger.<m>`` and ``delta.<m>`` (challenger minus champion), both versions, the
        holdout's row count and fingerprint as params, and the verdict; it has one child run per model with the
        SAME metric keys (``accuracy``...), linked to that version's logged model and to the holdout as a dataset.
        Both versions' descriptions get a line linking the run. Logging the same ``comparison_id`` again (a retry)
        returns the finished run instead of a second one.
        """
        champion = check_metrics("champion_metrics", champion_metrics)
        challenger = check_metrics("challenger_metrics", challenger_metrics)
        champion_version, challenger_version = _version_str(champion_version), _version_str(challenger_version)
        if champion_version == challenger_version:
            raise LineageError(
                f"comparison {comparison_id}: champion and challenger are both version {champion_version}; "
                "compare two different versions"
            )
        if not isinstance(holdout_rows, int) or holdout_rows < 0 or not holdout_fingerprint:
            raise LineageError(
                f"comparison {comparison_id}: holdout_rows must be an int >= 0 and holdout_fingerprint non-empty, "
                f"got {holdout_rows!r} and {holdout_fingerprint!r}"
            )
        with self._gateway.scope(f"record comparison {comparison_id} of {name!r}") as client:
            versions = {
                "champion": self._model_version(client, name, champion_version),
                "challenger": self._model_version(client, name, challenger_version),
            }
            experiment_id = self._side_experiment(client, COMPARISONS)
            done = self._search_runs(
                client,
                experiment_id,
                f"tags.`{COMPARISON_TAG}` = '{_escape(comparison_id)}' and tags.`{MODEL_TAG}` = '{_escape(name)}'"
                f" and tags.`{KIND_TAG}` = '{COMPARISON_KIND}' and attributes.status = 'FINISHED'",
            )
            if done:
                return done[0].info.run_id
            shared = {
                "holdout_rows": holdout_rows,
                "holdout_fingerprint": holdout_fingerprint,
                "champion_version": champion_version,
                "challenger_version": challenger_version,
                "comparison_id": comparison_id,
            }
            run_params = {
                **dict(params or {}),
                **shared,
                **({"verdict": verdict} if verdict else {}),
                **({"test": test} if test else {}),
            }
            metrics = comparison_metrics(champion, challenger)
            if p_value is not None:
                metrics["p_value"] = float(p_value)
            note = comparison_note(
                name, champion_version, challenger_version, champion, challenger, holdout_rows,
                holdout_fingerprint, verdict, test, p_value,
            )
            base_tags = {MODEL_TAG: name, COMPARISON_TAG: comparison_id}
            parent_tags = {
                **{k: str(v) for k, v in (tags or {}).items()},
                **base_tags,
                KIND_TAG: COMPARISON_KIND,
                TAG_PREFIX + "champion_version": champion_version,
                TAG_PREFIX + "challenger_version": challenger_version,
                TAG_PREFIX + "holdout_fingerprint": holdout_fingerprint,
                **({TAG_PREFIX + "verdict": verdict} if verdict else {}),
                NOTE_TAG: note,
            }
            now = self._now_ms()
            created: list[str] = []
            try:
                parent = client.create_run(
                    experiment_id,
                    start_time=now,
                    run_name=f"v{challenger_version} vs champion v{champion_version}",
                    tags=parent_tags,
                ).info.run_id
                created.append(parent)
                client.log_batch(
                    parent,
                    metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                    params=[Param(k, v) for k, v in params_text(run_params).items()],
                )
                dataset = Dataset(
                    name=holdout_dataset_name(holdout_fingerprint),
                    digest=holdout_fingerprint[:36],
                    source_type="driftpilot",
                    source=json.dumps({"model": name, "holdout_fingerprint": holdout_fingerprint}),
                    profile=json.dumps({"num_rows": holdout_rows}),
                )
                client.log_inputs(parent, datasets=[DatasetInput(dataset)])
                for role, scores in (("champion", champion), ("challenger", challenger)):
                    mv = versions[role]
                    child = client.create_run(
                        experiment_id,
                        start_time=now,
                        run_name=f"v{mv.version} ({role})",
                        tags={
                            **base_tags,
                            KIND_TAG: "comparison_model",
                            PARENT_RUN_TAG: parent,
                            VERSION_TAG: str(mv.version),
                            TAG_PREFIX + "role": role,
                            NOTE_TAG: f"[Version {mv.version}]({_version_link(name, mv.version)}) as {role}, "
                            f"scored on the {holdout_rows:,} held-out rows "
                            f"`{holdout_fingerprint[:12]}` of comparison {comparison_id}.",
                        },
                    ).info.run_id
                    created.append(child)
                    model_id = _logged_model_id(mv)
                    client.log_batch(
                        child,
                        metrics=[
                            Metric(
                                k, v, now, 0, model_id=model_id,
                                dataset_name=dataset.name, dataset_digest=dataset.digest,
                            )
                            for k, v in scores.items()
                        ],
                        params=[
                            Param(k, v)
                            for k, v in params_text({**shared, "version": mv.version, "role": role}).items()
                        ],
                    )
                    client.log_inputs(
                        child,
                        datasets=[DatasetInput(dataset)],
                        models=[LoggedModelInput(model_id)] if model_id else None,
                    )
                    client.set_terminated(child, "FINISHED", end_time=self._now_ms())
                when = datetime.fromtimestamp(now / 1000, UTC)
                for role, own, other, other_version in (
                    ("champion", champion, challenger, challenger_version),
                    ("challenger", challenger, champion, champion_version),
                ):
                    mv = versions[role]
                    entry = comparison_entry(
                        role, other_version, experiment_id, parent, own, other, holdout_rows,
                        holdout_fingerprint, verdict, when,
                    )
                    client.update_model_version(
                        name, str(mv.version), description=with_comparison(mv.description or "", entry)
                    )
                client.set_terminated(parent, "FINISHED", end_time=self._now_ms())
            except BaseException as exc:
                self._mark_failed(client, created, exc)
                raise
            return parent

    # ---------------------------------------------------------------------------------------------- internals

    def _ensure_main_kind(self, client: MlflowClient) -> None:
        if not self._kind_checked:
            ensure_kind(client, client.get_experiment(self.experiment_id))
            self._kind_checked = True

    def _side_experiment(self, client: MlflowClient, role: str, *, create: bool = True) -> str | None:
        """The id of this model's ``<experiment>/<role>`` experiment (created on first use)."""
        if role in self._side_experiments:
            return self._side_experiments[role]
        if create:
            self._ensure_main_kind(client)
        experiment_id = side_experiment(
            client, client.get_experiment(self.experiment_id), role, create=create,
            tracking_uri=self.tracking_uri,
        )
        if experiment_id is not None:
            self._side_experiments[role] = experiment_id
        return experiment_id

    def _search_runs(self, client: MlflowClient, experiment_id: str, filter_string: str) -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            page = client.search_runs(
                [experiment_id], filter_string, max_results=1000,
                order_by=["attributes.start_time ASC"], page_token=token,
            )
            found.extend(page)
            token = page.token
            if not token:
                return found

    def _log_alias_event(
        self, client: MlflowClient, change: AliasChange, decision_id: str | None, reason: str | None
    ) -> str:
        run_name, tags, params = alias_event_run(
            change.name, change.action, change.version, change.before, change.after, decision_id, reason
        )
        now = self._now_ms()
        run_id = client.create_run(
            self._side_experiment(client, DECISIONS), start_time=now, run_name=run_name, tags=tags
        ).info.run_id
        try:
            client.log_batch(run_id, params=[Param(k, v) for k, v in params_text(params).items()])
        except BaseException as exc:
            self._mark_failed(client, [run_id], exc)
            raise
        client.set_terminated(run_id, "FINISHED", end_time=now)
        return run_id

    def _drop_stale_alias_tags(self, client: MlflowClient, name: str, versions: Sequence[Any]) -> None:
        for item in versions:
            mv = item if isinstance(item, ModelVersion) else self._model_version(client, name, str(item))
            for key in STALE_ALIAS_TAGS:
                if key in (mv.tags or {}):
                    client.delete_model_version_tag(name, str(mv.version), key)

    def _mark_failed(self, client: MlflowClient, run_ids: Sequence[str], exc: BaseException) -> None:
        for run_id in run_ids:
            try:
                client.set_terminated(run_id, "FAILED", end_time=self._now_ms())
            except Exception as cleanup:  # noqa: BLE001 - the store may be what failed; keep the first error
                exc.add_note(f"driftpilot could not mark run {run_id} FAILED either: {cleanup}")


    def _aliases(
        self, client: MlflowClient, name: str, *, must_exist: bool = False
    ) -> dict[str, str]:
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if not _not_found(exc):
                raise
            if must_exist:
                raise self._unknown_model(client, name) from None
            return {}
        return {str(alias): str(version) for alias, version in (model.aliases or {}).items()}

    def _model_version(
        self, client: MlflowClient, name: str, version: str, role: str = "version"
    ) -> ModelVersion:
        try:
            return client.get_model_version(name, version)
        except MlflowException as exc:
            if not _not_found(exc):
                raise
        self._aliases(
            client, name, must_exist=True
        )  # an unknown model gets the more useful message
        existing = ", ".join(str(mv.version) for mv in self._all_versions(client, name)) or "(none)"
        raise LineageNotFound(f"{name!r} has no {role} {version}; its versions are: {existing}")

    def _all_versions(self, client: MlflowClient, name: str) -> list[ModelVersion]:
        found: list[ModelVersion] = []
        token = None
        escaped = name.replace("'", "\\'")
        while True:
            page = client.search_model_versions(
                f"name='{escaped}'", max_results=1000, page_token=token
            )
            found.extend(page)
            token = page.token
            if not token:
                return sorted(found, key=lambda mv: int(mv.version))

    def _unknown_model(self, client: MlflowClient, name: str) -> LineageNotFound:
        names = sorted(m.name for m in client.search_registered_models(max_results=100))
        return LineageNotFound(
            f"no registered model {name!r} at {self.tracking_uri}; registered models: {', '.join(names) or '(none)'}. "
            "A model appears with its first register() (the bootstrap)"
        )

    def _version_info(
        self,
        client: MlflowClient,
        name: str,
        mv: ModelVersion,
        aliases: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        # search_model_versions leaves ModelVersion.aliases empty, so aliases come from the registered model.
        if aliases is None:
            aliases = self._aliases(client, name)
        version = str(mv.version)
        tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
        try:
            record = self._record(client, name, mv, tags)
        except LineageError as exc:
            raise LineageError(f"version {version} of {name!r}: {exc}") from exc
        return VersionInfo(
            name=name,
            version=version,
            record=record,
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
            run_id=mv.run_id or None,
            created_at=datetime.fromtimestamp(int(mv.creation_timestamp) / 1000, UTC),
            flavor=tags.get(FLAVOR_TAG),
            description=mv.description or "",
            tags=tags,
        )

    def _record(
        self, client: MlflowClient, name: str, mv: ModelVersion, tags: Mapping[str, str]
    ) -> LineageRecord | None:
        schema = record_schema(tags)
        if schema is None:
            return None  # registered outside driftpilot
        if schema == TAGS_SCHEMA:
            return LineageRecord.from_tags(tags)  # registered by an older driftpilot: the record is the tags
        if schema != SCHEMA_VERSION:
            raise LineageError(
                f"its lineage schema {schema!r} is unknown to this driftpilot (it reads {TAGS_SCHEMA} and "
                f"{SCHEMA_VERSION}); upgrade driftpilot"
            )
        key = (name, str(mv.version), str(mv.run_id))
        if key not in self._records:  # a registered version's record never changes
            if not mv.run_id:
                raise LineageError(f"it has no run, so its lineage record {RECORD_ARTIFACT} cannot be read")
            with tempfile.TemporaryDirectory(prefix="driftpilot-lineage-") as tmp:
                try:
                    path = client.download_artifacts(mv.run_id, RECORD_ARTIFACT, tmp)
                except MlflowException as exc:
                    raise LineageError(
                        f"its lineage record {RECORD_ARTIFACT} is missing from run {mv.run_id}: {exc.message}"
                    ) from exc
                self._records[key] = LineageRecord.from_json(Path(path).read_text(encoding="utf-8"))
        return self._records[key]

    def _now_ms(self) -> int:
        return int(self._clock.now().timestamp() * 1000)

    def _now_iso(self) -> str:
        return self._clock.now().astimezone(UTC).isoformat()


class DecisionRun:
    """An open decision run (see :meth:`ModelRegistry.decision_run`): log metrics, params, tags, files, versions."""

    def __init__(self, registry: ModelRegistry, name: str, decision_id: str, run_id: str) -> None:
        self._registry = registry
        self.name = name
        self.decision_id = decision_id
        self.run_id = run_id

    def log(
        self,
        *,
        metrics: Mapping[str, float | None] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        artifacts: Sequence[str | Path] = (),
        versions: Sequence[str] = (),
    ) -> None:
        """Add to the run. ``None`` metrics are skipped (undefined); ``versions`` link those versions' logged models
        as the run's model inputs, so the run page shows which model it judged."""
        _check_files(self.decision_id, artifacts)
        registry = self._registry
        with registry._gateway.scope(f"record decision {self.decision_id} of {self.name!r}") as client:
            now = registry._now_ms()
            client.log_batch(
                self.run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None],
                params=[Param(k, v) for k, v in params_text(params or {}).items()],
                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
            )
            for f in artifacts:
                client.log_artifact(self.run_id, str(f))
            model_ids = [
                _logged_model_id(registry._model_version(client, self.name, _version_str(v))) for v in versions
            ]
            if any(model_ids):
                client.log_inputs(self.run_id, models=[LoggedModelInput(m) for m in model_ids if m])


def _check_files(decision_id: str, artifacts: Sequence[str | Path]) -> None:
    missing = [str(a) for a in artifacts if not Path(a).is_file()]
    if missing:
        raise LineageError(f"decision {decision_id}: artifact file(s) not found: {', '.join(missing)}")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _window_dataset(record: LineageRecord, features: pd.DataFrame, labels: pd.Series) -> Any:
    target = (
        labels.name
        if isinstance(labels.name, str) and labels.name not in features.columns
        else "target"
    )
    while target in features.columns:
        target = "_" + target
    frame = features.reset_index(drop=True).assign(**{target: labels.reset_index(drop=True)})
    return mlflow.data.from_pandas(
        frame, targets=target, name=f"window-{record.window_fingerprint[:12]}"
    )


def _describe(name: str, record: LineageRecord, experiment_id: str, run_id: str) -> str:
    if record.parent_version is None:
        origin = f"**{record.strategy}** (no parent)"
    else:
        origin = (
            f"**{record.strategy}** from parent [version {record.parent_version}]"
            f"({_version_link(name, record.parent_version)})"
        )
    holdout_rows = record.extra.get("holdout_rows")
    own = ", ".join(f"{k} {v:.4f}" for k, v in sorted(record.holdout_metrics.items())) or "none"
    holdout = f"Holdout{f' ({holdout_rows:,} rows)' if isinstance(holdout_rows, int) else ''}: {own}"
    if record.champion_metrics and record.parent_version is not None:
        theirs = ", ".join(f"{k} {v:.4f}" for k, v in sorted(record.champion_metrics.items()))
        holdout += f" · champion v{record.parent_version} at the time, on the same rows: {theirs}"
    if record.event_time_start is not None:
        events = f"events {time_range(record.event_time_start, record.event_time_end)} (the data's own time)"
    else:
        events = "event times not recorded"
    arrival = time_range(record.window_start, record.window_end)
    return "\n\n".join(
        [
            f"{origin} · trigger `{record.trigger}` · chain depth {record.chain_depth}",
            f"Training run: [{run_id}]({ui_link(f'experiments/{experiment_id}/runs/{run_id}')})",
            (
                f"Data window: {record.window_rows:,} rows · {events} · labels arrived {arrival} "
                f"({_span(record.window_end - record.window_start)}) · fingerprint `{record.window_fingerprint[:12]}`"
                f" · labels as of {record.maturity_cut.isoformat(timespec='seconds')}"
            ),
            holdout,
            (
                f"Decision `{record.decision_id}` · policy `{record.policy_hash[:12]}` · full lineage record: "
                f"`{RECORD_ARTIFACT}` in the training run"
            ),
        ]
    )


def _version_link(name: str, version: str | int) -> str:
    return ui_link(f"models/{quote(name, safe='')}/versions/{version}")


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _version_str(version: str | int) -> str:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise LineageError(
            f"model version must be a positive integer like 3 or '3', got {version!r}"
        )
    return str(int(text))


def _logged_model_id(mv: ModelVersion) -> str | None:
    """The version's LoggedModel id: MLflow 3 fills ``model_id`` on some stores only; the source names it too."""
    model_id = getattr(mv, "model_id", None)
    if model_id:
        return str(model_id)
    source = str(mv.source or "")
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def _escape(value: str) -> str:
    return value.replace("'", "\\'")


def _not_found(exc: MlflowException) -> bool:
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _show(aliases: Mapping[str, str]) -> str:
    return ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())) or "(none)"
