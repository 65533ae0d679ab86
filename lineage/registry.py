"""ModelRegistry: the front of driftpilot's lineage on MLflow, one object for the controller to hold.

It opens the experiment (:class:`lineage.base.RegistryStore`) and hands each call to the part that does that job:

* :mod:`lineage.versions` — register a version with its lineage, read versions back, walk the lineage, load a model;
* :mod:`lineage.aliases` — move champion / challenger / previous, and the alias history;
* :mod:`lineage.comparisons` — log a :class:`lineage.Comparison` as an evaluation run;
* :mod:`lineage.decision_runs` — decision runs and the files attached to them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from lineage.aliases import AliasChange, Aliases, AliasEvent
from lineage.base import CHAMPION, Clock, RegistryStore
from lineage.comparisons import Comparison, Comparisons
from lineage.decision_runs import DecisionRun, DecisionRuns
from lineage.foreign import ForeignModel
from lineage.gateway import MlflowGateway, RegistrySettings
from lineage.record import LineageRecord
from lineage.versions import LoadedModel, VersionInfo, Versions


class ModelRegistry:
    """Versions, lineage and aliases of driftpilot models in one MLflow experiment and model registry."""

    def __init__(self, gateway: MlflowGateway, experiment_id: str, clock: Clock) -> None:
        self._gateway = gateway
        self.experiment_id = experiment_id
        self._store = store = RegistryStore(gateway, experiment_id, clock)
        self._versions = Versions(store)
        self._aliases = Aliases(store)
        self._comparisons = Comparisons(store)
        self._decisions = DecisionRuns(store)

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
        store = RegistryStore.open(settings, clock=clock, client_class=client_class)
        return cls(store.gateway, store.experiment_id, clock)

    @property
    def tracking_uri(self) -> str:
        return self._store.tracking_uri

    def check(self) -> None:
        """Raise :class:`LineageUnavailable` unless the store answers (a cheap read)."""
        with self._store.scope("check the MLflow store") as client:
            client.get_experiment(self.experiment_id)

    # ------------------------------------------------------------------------------------------------ versions

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
        return self._versions.register(
            name, model, record, params=params, training_data=training_data, input_example=input_example
        )

    def load(self, name: str, alias: str = CHAMPION, *, version: str | int | None = None) -> LoadedModel:
        """Load the version behind ``alias`` (or the explicit ``version``) as its native object."""
        return self._versions.load(name, alias, version=version)

    def load_foreign(self, uri: str, *, tracking_uri: str | None = None) -> ForeignModel:
        """Load a model logged outside driftpilot (``models:/NAME/3``, ``runs:/<run>/<path>``, a local MLflow model
        folder) with what its signature says; ``tracking_uri``: another MLflow store to resolve it in (default this
        registry's). See :mod:`lineage.foreign`."""
        return self._versions.load_foreign(uri, tracking_uri=tracking_uri)

    def get(self, name: str, version: str | int) -> VersionInfo:
        return self._versions.get(name, version)

    def ancestors(self, name: str, version: str | int) -> list[VersionInfo]:
        """The parent, grandparent, ... up to the root (nearest first); empty for a root version."""
        return self._versions.ancestors(name, version)

    def tree(self, name: str) -> list[VersionInfo]:
        """Every version of ``name`` (oldest first) with its record, aliases, creation time and run."""
        return self._versions.tree(name)

    # ------------------------------------------------------------------------------------------------- aliases

    def set_challenger(self, name: str, version: str | int) -> AliasChange:
        """Point ``challenger`` at ``version`` (it replaces any earlier challenger)."""
        return self._aliases.set_challenger(name, version)

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
        return self._aliases.promote(name, version, decision_id=decision_id, reason=reason)

    def advance(
        self, name: str, version: str | int, *, decision_id: str | None = None, reason: str | None = None
    ) -> AliasChange:
        """Move ``champion`` to ``version``, a checkpoint of the champion's own learner (its continuation), leaving
        ``previous`` as it is: a rollback still returns to the champion before the last real change. Appends an alias
        event like :meth:`promote`."""
        return self._aliases.advance(name, version, decision_id=decision_id, reason=reason)

    def rollback(self, name: str, *, decision_id: str | None = None, reason: str | None = None) -> AliasChange:
        """Make ``previous`` the champion again and clear ``previous``; appends an alias event like :meth:`promote`."""
        return self._aliases.rollback(name, decision_id=decision_id, reason=reason)

    def alias_history(self, name: str) -> list[AliasEvent]:
        """Every promote/rollback of ``name`` (oldest first): when, what moved (aliases before/after), why."""
        return self._aliases.history(name)

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version; empty for a model that has no version yet."""
        return self._aliases.current(name)

    def champion_version(self, name: str) -> str | None:
        """The champion's version, or None when there is none yet (no bootstrap so far)."""
        return self.aliases(name).get(CHAMPION)

    # ------------------------------------------------------------------------------- comparisons, decisions

    def log_comparison(self, comparison: Comparison) -> str:
        """Record one champion/challenger comparison on one holdout as an evaluation run; returns its run id.

        The run (in ``<experiment>/comparisons``, named ``v<challenger> vs champion v<champion>``) carries
        ``champion.<m>``, ``challenger.<m>`` and ``delta.<m>`` (challenger minus champion), both versions, the
        holdout's row count and fingerprint as params, and the verdict; it has one child run per model with the
        SAME metric keys (``accuracy``...), linked to that version's logged model and to the holdout as a dataset.
        Both versions' descriptions get a line linking the run. Logging the same ``comparison_id`` again (a retry)
        returns the finished run instead of a second one. See :class:`lineage.Comparison`.
        """
        return self._comparisons.log(comparison)

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Attach a file (e.g. an Evidently HTML report) to a run, under ``artifact_path`` if given."""
        self._decisions.log_artifact(run_id, local_path, artifact_path)

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
        return self._decisions.log_decision(
            name, decision_id=decision_id, metrics=metrics, tags=tags, params=params, artifacts=artifacts
        )

    def decision_run(
        self,
        name: str,
        *,
        decision_id: str,
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
    ) -> AbstractContextManager[DecisionRun]:
        """A decision run that is open while the decision is being made: FINISHED when the block ends, FAILED (with
        the error as tag ``driftpilot.error``) when it raises. Log to it with :meth:`DecisionRun.log`."""
        return self._decisions.open(name, decision_id=decision_id, tags=tags, run_name=run_name)
