"""A model with a toy concept, a champion serving it, and natural labels that arrive later: the controller's tests
drive `Controller.tick(now)` on a ManualClock through this (real store, real MLflow on SQLite, real models)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pandas as pd

from controller.actions.bootstrap import bootstrap
from controller.actions.datafiles import features_from_table, target_from_table
from controller.actions.model_registry import open_registry
from controller.clock import ManualClock
from controller.config import LoadedPolicy
from controller.loop.controller import Controller
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from lineage import ModelRegistry
from tests.toy import toy_table, write_policy

LOOP = """
loop: {{cooldown: 1h, min_matured_rows: 100, data_drift_every_rows: 100, max_retrains_per_day: 4}}
gate: {gate}
probation: {probation}
monitors:
  data_drift: {{current: {{last_rows: 200}}, sample_cap: 1000}}
  concept_drift: {{detector: adwin}}
  performance: {{window_rows: 200, min_labels: 60, max_drop: 0.1}}
rules:
{rules}
"""

DRIFT_RULE = """\
  - name: drift
    when: {concept_drift: drift}
    do: {strategy: auto}
"""


@dataclass
class ToyModel:
    """One model under test: its policy, store, registry, clock, and a stream that logs champion predictions."""

    loaded: LoadedPolicy
    store: EventStore
    registry: ModelRegistry
    clock: ManualClock
    ids: itertools.count = field(default_factory=itertools.count)

    @property
    def name(self) -> str:
        return self.loaded.config.model

    def controller(self, **kwargs) -> Controller:
        return Controller(self.loaded, self.store, self.registry, self.clock, **kwargs)

    def serve(self, table: pd.DataFrame, version: str | None = None) -> list[tuple[str, int]]:
        """Log the champion's predictions for ``table`` (like /predict would); return (id, label) pairs."""
        version = version or self.registry.champion_version(self.name)
        model = self.registry.load(self.name, version=version).model
        features = table[["x1", "x2", "color"]]
        predicted = model.predict(features)
        ids = [f"live-{next(self.ids)}" for _ in range(len(table))]
        self.store.add_predictions(self.name, [
            PredictionRecord({"x1": float(r.x1), "x2": float(r.x2), "color": r.color}, self.clock.now(),
                             prediction=int(p), prediction_id=pid, model_version=version)
            for pid, r, p in zip(ids, table.itertuples(), predicted, strict=True)])
        return list(zip(ids, table.y.astype(int).tolist(), strict=True))

    def label(self, pairs: list[tuple[str, int]]) -> None:
        self.store.add_labels(self.name, [LabelRecord(pid, y) for pid, y in pairs])

    def traffic(self, table: pd.DataFrame, *, batch: int = 100, delay: timedelta = timedelta(minutes=30),
                gap: timedelta = timedelta(minutes=10), controller: Controller | None = None) -> list:
        """Serve ``table`` in batches; each batch's labels arrive ``delay`` later; tick after each batch."""
        reports = []
        for start in range(0, len(table), batch):
            self.clock.advance(seconds=gap.total_seconds())
            pairs = self.serve(table.iloc[start:start + batch])
            self.clock.advance(seconds=delay.total_seconds())
            self.label(pairs)
            if controller is not None:
                reports.append(controller.tick(self.clock.now()))
        return reports


def toy_model(tmp_path: Path, mlflow_dir: Path, name: str, clock: ManualClock, *, rules: str = DRIFT_RULE,
              extra: str = "", estimator: tuple[str, str] | None = None, bootstrap_rows: int = 400,
              gate: str = "{min_rows: 60}",
              probation: str = "{min_rows: 60, window_rows: 100, duration: 1d, max_drop: 0.02}") -> ToyModel:
    path = write_policy(tmp_path, mlflow_dir, name, *(estimator or ()))
    path.write_text(path.read_text() + LOOP.format(rules=rules, gate=gate, probation=probation) + extra)
    loaded = load_policy(path, environ={})
    store = EventStore.from_url(loaded.config.storage.url, clock)
    registry = open_registry(loaded.config, clock)
    table = toy_table(bootstrap_rows, seed=0)
    bootstrap(loaded, features_from_table(table, loaded.config, "t"), target_from_table(table, loaded.config, "t"),
              store=store, registry=registry, clock=clock)
    return ToyModel(loaded, store, registry, clock)
