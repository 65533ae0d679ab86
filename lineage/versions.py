"""Registered versions: register a model with its lineage, read versions back, walk the lineage, load a model.

One registered version = one MLflow run (named ``v<n>-<strategy>``) holding the params, the holdout metrics,
the lineage record (the full JSON as an artifact, its summary as tags) and the training window as a dataset input,
plus the logged model, registered with the same tags and a Markdown description (:mod:`lineage.descriptions`)
linking its parent version and its run. MLflow has no parent field: the lineage lives in the record.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from lineage.base import (
    CHAMPION,
    FLAVOR_TAG,
    KIND_TAG,
    MODEL_TAG,
    VERSION_TAG,
    RegistryStore,
    not_found,
    show_aliases,
    version_str,
)
from lineage.descriptions import MODEL_DESCRIPTION, describe_version
from lineage.errors import LineageError, LineageNotFound
from lineage.flavors import Flavor, flavor_for, flavor_named
from lineage.foreign import ForeignModel, load_foreign
from lineage.gateway import MlflowGateway, RegistrySettings
from lineage.record import (
    RECORD_ARTIFACT,
    SCHEMA_VERSION,
    STATEFUL_STRATEGIES,
    TAG_PREFIX,
    TAGS_SCHEMA,
    LineageRecord,
    record_schema,
)
from lineage.runs import NOTE_TAG, params_text

_EXAMPLE_ROWS = 5
# MLflow hints that integer columns cannot hold missing values; class labels and counts are integers on purpose.
_INTEGER_HINT = "Hint: Inferred schema contains integer column"


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


class Versions:
    """Register, read and load the versions of driftpilot models in one :class:`RegistryStore`."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self._records: dict[tuple[str, str, str], LineageRecord] = {}

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
        """See :meth:`lineage.ModelRegistry.register`."""
        store = self.store
        flavor = flavor_for(model)
        with store.scope(f"register a new version of {name!r}") as client:
            store.ensure_main_kind(client)
            self._ensure_registered_model(client, name)
            self._check_parent(client, name, record)
            record_tags = record.summary_tags()
            run = client.create_run(
                store.experiment_id,
                run_name=f"pending-{record.strategy}",
                start_time=store.now_ms(),
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
                    client, name, model, record, flavor, run_id, params, training_data, input_example
                )
            except BaseException as exc:
                store.mark_failed(client, [run_id], exc)
                raise
            return self._version_info(client, name, store.model_version(client, name, version))

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
        store = self.store
        now = store.now_ms()
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
        client.set_terminated(run_id, "FINISHED", end_time=store.now_ms())
        description = describe_version(name, record, store.experiment_id, run_id)
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
            run_id, tags=[RunTag(VERSION_TAG, version), RunTag(NOTE_TAG, description)]
        )
        return version

    def _ensure_registered_model(self, client: MlflowClient, name: str) -> None:
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if not not_found(exc):
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
        parent = self.store.model_version(client, name, record.parent_version, role="parent version")
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

    # ------------------------------------------------------------------------------------------------- reading

    def load(self, name: str, alias: str = CHAMPION, *, version: str | int | None = None) -> LoadedModel:
        """See :meth:`lineage.ModelRegistry.load`."""
        store = self.store
        with store.scope(f"load {name!r}") as client:
            if version is None:
                aliases = store.aliases(client, name, must_exist=True)
                if alias not in aliases:
                    raise LineageNotFound(
                        f"{name!r} has no {alias!r} alias; its aliases are: {show_aliases(aliases)}. "
                        f"Load one of those, or a version with load(name, version=...)"
                    )
                version = aliases[alias]
            mv = store.model_version(client, name, version_str(version))
            info = self._version_info(client, name, mv)
            # A version registered by hand (no flavor tag) is most likely a plain scikit-learn model.
            flavor = flavor_named(info.flavor or "sklearn")
            model = flavor.load(f"models:/{name}/{info.version}")
            return LoadedModel(model=model, version=info.version, record=info.record, flavor=flavor.name)

    def load_foreign(self, uri: str, *, tracking_uri: str | None = None) -> ForeignModel:
        """See :meth:`lineage.ModelRegistry.load_foreign`."""
        gateway = self.store.gateway
        if tracking_uri is not None and tracking_uri != self.store.tracking_uri:
            gateway = MlflowGateway.from_settings(RegistrySettings(tracking_uri=tracking_uri), type(gateway.client))
        with gateway.scope(f"load the model {uri}"):
            return load_foreign(uri)

    def get(self, name: str, version: str | int) -> VersionInfo:
        store = self.store
        with store.scope(f"read version {version} of {name!r}") as client:
            return self._version_info(client, name, store.model_version(client, name, version_str(version)))

    def ancestors(self, name: str, version: str | int) -> list[VersionInfo]:
        """The parent, grandparent, ... up to the root (nearest first); empty for a root version."""
        store = self.store
        with store.scope(f"walk the ancestors of version {version} of {name!r}") as client:
            aliases = store.aliases(client, name)
            current = self._version_info(
                client, name, store.model_version(client, name, version_str(version)), aliases
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
                    store.model_version(client, name, current.parent_version, role="parent version"),
                    aliases,
                )
                chain.append(current)
            return chain

    def tree(self, name: str) -> list[VersionInfo]:
        """Every version of ``name`` (oldest first) with its record, aliases, creation time and run."""
        store = self.store
        with store.scope(f"list the versions of {name!r}") as client:
            aliases = store.aliases(client, name, must_exist=True)
            return [self._version_info(client, name, mv, aliases) for mv in store.all_versions(client, name)]

    # ---------------------------------------------------------------------------------------------- internals

    def _version_info(
        self,
        client: MlflowClient,
        name: str,
        mv: ModelVersion,
        aliases: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        # search_model_versions leaves ModelVersion.aliases empty, so aliases come from the registered model.
        if aliases is None:
            aliases = self.store.aliases(client, name)
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
