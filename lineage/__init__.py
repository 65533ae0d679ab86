"""Lineage on MLflow: the only driftpilot package that talks to MLflow.

Public API::

    settings = RegistrySettings(tracking_uri="sqlite:////abs/mlflow.db", artifact_location="/abs/artifacts")
    registry = ModelRegistry.connect(settings, clock=clock)
    info = registry.register("fraud", model, record, params={...}, training_data=(X, y))
    registry.set_challenger("fraud", info.version); registry.promote("fraud"); registry.rollback("fraud")
    foreign = registry.load_foreign("models:/mine/3")  # a model logged outside driftpilot (driftpilot adopt)
    loaded = registry.load("fraud")            # LoadedModel(model=<sklearn or River object>, version, record)
    registry.tree("fraud"); registry.ancestors("fraud", "3"); registry.aliases("fraud")
    registry.log_comparison(Comparison(name="fraud", comparison_id=..., champion_version="3", challenger_version="4",
                                       champion_metrics={...}, challenger_metrics={...}, holdout_rows=..., ...))
    registry.alias_history("fraud")            # every promote / rollback, oldest first
    registry.log_decision("fraud", decision_id=..., metrics={...}, tags={...}, artifacts=[...])

Where runs go (training, comparisons, decisions) and what the MLflow UI shows: see :mod:`lineage.runs`.
The parts behind ModelRegistry: :mod:`lineage.base` (the shared store), :mod:`lineage.versions`,
:mod:`lineage.aliases`, :mod:`lineage.comparisons`, :mod:`lineage.decision_runs`, :mod:`lineage.descriptions`.
"""

from lineage.aliases import AliasChange, AliasEvent
from lineage.base import CHALLENGER, CHAMPION, PREVIOUS, Clock
from lineage.comparisons import Comparison
from lineage.decision_runs import DecisionRun
from lineage.errors import LineageError, LineageNotFound, LineageUnavailable
from lineage.flavors import (
    FLAVORS,
    Flavor,
    RiverFlavor,
    SklearnFlavor,
    flavor_for,
    pinned_requirements,
)
from lineage.foreign import ForeignModel
from lineage.gateway import HttpLimits, MlflowGateway, RegistrySettings
from lineage.record import (
    RECORD_ARTIFACT,
    STRATEGIES,
    TAG_PREFIX,
    TRIGGERS,
    LineageRecord,
    installed_library_versions,
)
from lineage.registry import ModelRegistry
from lineage.versions import LoadedModel, VersionInfo

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "FLAVORS",
    "PREVIOUS",
    "RECORD_ARTIFACT",
    "STRATEGIES",
    "TAG_PREFIX",
    "TRIGGERS",
    "AliasChange",
    "AliasEvent",
    "Clock",
    "Comparison",
    "DecisionRun",
    "Flavor",
    "ForeignModel",
    "HttpLimits",
    "LineageError",
    "LineageNotFound",
    "LineageRecord",
    "LineageUnavailable",
    "LoadedModel",
    "MlflowGateway",
    "ModelRegistry",
    "RegistrySettings",
    "RiverFlavor",
    "SklearnFlavor",
    "VersionInfo",
    "flavor_for",
    "installed_library_versions",
    "pinned_requirements",
]
