"""A model whose race the tests drive tick by tick: real event store (SQLite), real MLflow registry, real River and
scikit-learn models, a ManualClock, and a toy stream whose labels arrive later."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from controller.actions.bootstrap import bootstrap
from controller.actions.datafiles import features_from_table, target_from_table
from controller.actions.model_registry import open_registry
from controller.clock import ManualClock
from controller.config import LoadedPolicy
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from lineage import ModelRegistry
from tests.policy_kit import write_policy_file

REGRESSION = """\
model: {name}
task: regression
target: y
features: {{x1: numeric, x2: numeric}}
storage: {{url: "sqlite:///{tmp}/events.db"}}
mlflow: {{tracking_uri: "sqlite:///{tmp}/mlflow.db", artifact_location: "{tmp}/artifacts"}}
estimator: {{class: sklearn.linear_model.LinearRegression}}
bootstrap: {{holdout_fraction: 0.25}}
monitors: {{data_drift: {{enabled: false}}}}
race:
{race}
"""

NO_CHANGE = """\
  racers:
    - name: no-change
      estimator:
        class: river.dummy.StatisticRegressor
        params: {statistic: {class: river.stats.Shift, params: {amount: 0}}}
    - name: linear
      estimator: {pipeline: [{class: river.preprocessing.StandardScaler}, {class: river.linear_model.LinearRegression}]}
  persist_every: 50
  warm_start_rows: 100
"""


@dataclass
class RaceModel:
    loaded: LoadedPolicy
    store: EventStore
    registry: ModelRegistry
    clock: ManualClock
    ids: itertools.count = field(default_factory=itertools.count)

    @property
    def name(self) -> str:
        return self.loaded.config.model

    def log(self, table: pd.DataFrame) -> list[str]:
        """Log predictions of ``table``'s rows now (the champion's answer does not matter to the race)."""
        ids = [f"p{next(self.ids)}" for _ in range(len(table))]
        self.store.add_predictions(self.name, [
            PredictionRecord({"x1": float(r.x1), "x2": float(r.x2)}, self.clock.now(), prediction=0.0,
                             prediction_id=pid, model_version="1") for pid, r in zip(ids, table.itertuples())])
        return ids

    def label(self, pairs: list[tuple[str, float]]) -> None:
        self.store.add_labels(self.name, [LabelRecord(pid, y) for pid, y in pairs])


def regression_table(n: int, seed: int, slope: float = 1.0) -> pd.DataFrame:
    """Unique targets (a continuous y), so a no-change prediction names the row whose label it repeats."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame({"x1": x1, "x2": x2, "y": slope * x1 - x2 + rng.normal(scale=0.1, size=n)})


def race_model(tmp_path: Path, clock: ManualClock, *, race: str = NO_CHANGE, name: str = "racer-toy",
               bootstrap_rows: int = 200) -> RaceModel:
    path = write_policy_file(tmp_path, name, REGRESSION.format(name=name, tmp=tmp_path, race=race))
    loaded = load_policy(path, environ={})
    store = EventStore.from_url(loaded.config.storage.url, clock)
    registry = open_registry(loaded.config, clock)
    table = regression_table(bootstrap_rows, seed=0)
    bootstrap(loaded, features_from_table(table, loaded.config, "t"), target_from_table(table, loaded.config, "t"),
              store=store, registry=registry, clock=clock)
    clock.advance(seconds=60)
    return RaceModel(loaded, store, registry, clock)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
