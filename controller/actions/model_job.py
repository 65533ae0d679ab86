"""The collaborators every per-model verb of the controller works with (retrain, learn, monitor)."""

from __future__ import annotations

from controller.actions.training import training_context
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.store import EventStore
from lineage import ModelRegistry
from trainers import EstimatorSpec, TrainingContext


class ModelJob:
    """One model's policy, its event store, its registry and the injected clock; subclasses add one verb."""

    def __init__(self, loaded: LoadedPolicy, store: EventStore, registry: ModelRegistry, clock: Clock) -> None:
        self.loaded = loaded
        self.policy = loaded.config
        self.store = store
        self.registry = registry
        self.clock = clock

    def training_context(self, estimator: EstimatorSpec | None = None) -> TrainingContext:
        return training_context(self.policy, str(self.loaded.path), estimator)
