"""What every part of the registry shares: the alias and tag names, the clock, and :class:`RegistryStore`.

:class:`RegistryStore` is one driftpilot experiment in one MLflow store (tracking and registry), as the parts of
:class:`lineage.ModelRegistry` (versions, aliases, comparisons, decision runs) use it: the gateway scope every
MLflow call runs in, the injected clock, the side experiments (``<experiment>/comparisons``, ``/decisions``) and
the reads they all need (a registered model's aliases, one version, a paged run search). It holds no model logic.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from lineage.errors import LineageError, LineageNotFound
from lineage.gateway import MlflowGateway, RegistrySettings, absolute_artifact_location, setup_lock
from lineage.record import TAG_PREFIX
from lineage.runs import ensure_kind, side_experiment

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"

FLAVOR_TAG = TAG_PREFIX + "flavor"
KIND_TAG = TAG_PREFIX + "kind"
MODEL_TAG = TAG_PREFIX + "registered_model"
VERSION_TAG = TAG_PREFIX + "version"
DECISION_TAG = TAG_PREFIX + "decision_id"
COMPARISON_TAG = TAG_PREFIX + "comparison_id"


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class RegistryStore:
    """One driftpilot experiment in one MLflow store, shared by the parts of :class:`lineage.ModelRegistry`."""

    def __init__(self, gateway: MlflowGateway, experiment_id: str, clock: Clock) -> None:
        self.gateway = gateway
        self.experiment_id = experiment_id
        # Injected, never read from the wall here: the controller's clock is simulated in backtests.
        self.clock = clock
        self._side_experiments: dict[str, str] = {}
        self._kind_checked = False

    @classmethod
    def open(
        cls, settings: RegistrySettings, *, clock: Clock, client_class: type[MlflowClient] = MlflowClient
    ) -> RegistryStore:
        """Open (creating if needed) ``settings.experiment``; :class:`LineageUnavailable` if the store is unreachable.

        Safe when several processes open the same fresh local store at once: the set-up (MLflow's schema creation
        in the tracking and registry databases, the experiment) runs under :func:`lineage.gateway.setup_lock`.
        """
        with setup_lock(settings):
            gateway = MlflowGateway.from_settings(settings, client_class)
            return cls(gateway, _open_experiment(gateway, settings), clock)

    @property
    def tracking_uri(self) -> str:
        return self.gateway.tracking_uri

    @contextmanager
    def scope(self, doing: str) -> Iterator[MlflowClient]:
        """The gateway's scope: MLflow calls for ``doing``, their errors as :class:`LineageError`."""
        with self.gateway.scope(doing) as client:
            yield client

    def now_ms(self) -> int:
        return int(self.clock.now().timestamp() * 1000)

    # ------------------------------------------------------------------------------------------------ experiments

    def ensure_main_kind(self, client: MlflowClient) -> None:
        if not self._kind_checked:
            ensure_kind(client, client.get_experiment(self.experiment_id))
            self._kind_checked = True

    def side_experiment(self, client: MlflowClient, role: str, *, create: bool = True) -> str | None:
        """The id of this model's ``<experiment>/<role>`` experiment (created on first use)."""
        if role in self._side_experiments:
            return self._side_experiments[role]
        if create:
            self.ensure_main_kind(client)
        experiment_id = side_experiment(
            client, client.get_experiment(self.experiment_id), role, create=create,
            tracking_uri=self.tracking_uri,
        )
        if experiment_id is not None:
            self._side_experiments[role] = experiment_id
        return experiment_id

    def search_runs(self, client: MlflowClient, experiment_id: str, filter_string: str) -> list[Any]:
        """Every run matching ``filter_string``, oldest first (all pages)."""
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

    def mark_failed(self, client: MlflowClient, run_ids: Sequence[str], exc: BaseException) -> None:
        """Mark runs FAILED after ``exc``; a failure to do so is added to ``exc`` as a note, never raised."""
        for run_id in run_ids:
            try:
                client.set_terminated(run_id, "FAILED", end_time=self.now_ms())
            except Exception as cleanup:  # noqa: BLE001 - the store may be what failed; keep the first error
                exc.add_note(f"driftpilot could not mark run {run_id} FAILED either: {cleanup}")

    # ------------------------------------------------------------------------------------------- registry reads

    def aliases(self, client: MlflowClient, name: str, *, must_exist: bool = False) -> dict[str, str]:
        """alias -> version of ``name``; empty for an unknown model unless ``must_exist`` (then LineageNotFound)."""
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if not not_found(exc):
                raise
            if must_exist:
                raise self.unknown_model(client, name) from None
            return {}
        return {str(alias): str(version) for alias, version in (model.aliases or {}).items()}

    def model_version(self, client: MlflowClient, name: str, version: str, role: str = "version") -> ModelVersion:
        """One version of ``name``; :class:`LineageNotFound` naming the versions there are when it is missing."""
        try:
            return client.get_model_version(name, version)
        except MlflowException as exc:
            if not not_found(exc):
                raise
        self.aliases(client, name, must_exist=True)  # an unknown model gets the more useful message
        existing = ", ".join(str(mv.version) for mv in self.all_versions(client, name)) or "(none)"
        raise LineageNotFound(f"{name!r} has no {role} {version}; its versions are: {existing}")

    def all_versions(self, client: MlflowClient, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first (``aliases`` is empty on these: MLflow's search leaves it out)."""
        found: list[ModelVersion] = []
        token = None
        while True:
            page = client.search_model_versions(f"name='{escape(name)}'", max_results=1000, page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                return sorted(found, key=lambda mv: int(mv.version))

    def unknown_model(self, client: MlflowClient, name: str) -> LineageNotFound:
        names = sorted(m.name for m in client.search_registered_models(max_results=100))
        return LineageNotFound(
            f"no registered model {name!r} at {self.tracking_uri}; registered models: {', '.join(names) or '(none)'}. "
            "A model appears with its first register() (the bootstrap)"
        )


def _open_experiment(gateway: MlflowGateway, settings: RegistrySettings) -> str:
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
    return str(experiment_id)


# ---------------------------------------------------------------------------------------------------- helpers


def version_str(version: str | int) -> str:
    """A version number as MLflow's registry takes it (``"3"``); :class:`LineageError` for anything else."""
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise LineageError(f"model version must be a positive integer like 3 or '3', got {version!r}")
    return str(int(text))


def logged_model_id(mv: ModelVersion) -> str | None:
    """The version's LoggedModel id: MLflow 3 fills ``model_id`` on some stores only; the source names it too."""
    model_id = getattr(mv, "model_id", None)
    if model_id:
        return str(model_id)
    source = str(mv.source or "")
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def show_aliases(aliases: Mapping[str, str]) -> str:
    """``champion=v3, previous=v2`` (sorted), or ``(none)``."""
    return ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())) or "(none)"


def escape(value: str) -> str:
    """``value`` quoted for an MLflow search filter."""
    return value.replace("'", "\\'")


def not_found(exc: MlflowException) -> bool:
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST"
