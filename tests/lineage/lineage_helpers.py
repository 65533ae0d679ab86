"""Shared test helpers for the lineage tests (plain functions and classes; fixtures live in conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from lineage import LineageRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class StepClock:
    """Advances one second on every reading, so every stamp is distinct and predictable."""

    def __init__(self, start: datetime = T0) -> None:
        self._next = start

    def now(self) -> datetime:
        current = self._next
        self._next += timedelta(seconds=1)
        return current


class AliasWatchingClient(MlflowClient):
    """A real client that records the aliases right after each alias call (set or delete)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.alias_states: list[dict[str, str]] = []

    def _record(self, name: str) -> None:
        aliases = self.get_registered_model(name).aliases or {}
        self.alias_states.append({str(a): str(v) for a, v in aliases.items()})

    def set_registered_model_alias(self, name, alias, version):
        super().set_registered_model_alias(name, alias, version)
        self._record(name)

    def delete_registered_model_alias(self, name, alias):
        super().delete_registered_model_alias(name, alias)
        self._record(name)


# ------------------------------------------------------------------------------------------------ data


def make_record(**overrides) -> LineageRecord:
    fields: dict = {
        "parent_version": None,
        "strategy": "bootstrap",
        "trigger": "bootstrap",
        "window_start": T0 - timedelta(days=7),
        "window_end": T0 - timedelta(hours=1, microseconds=250),
        "window_rows": 300,
        "window_fingerprint": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "maturity_cut": T0,
        "holdout_metrics": {"accuracy": 0.8125, "log_loss": 0.1 + 0.2},
        "champion_metrics": {},
        "chain_depth": 0,
        "policy_hash": "3b5d5c3712955042212316173ccf37be",
        "decision_id": "dec-0001",
        "extra": {"method": "full_refit"},
    }
    fields.update(overrides)
    return LineageRecord(**fields)


def make_data(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["f0", "f1", "f2", "f3"])
    y = pd.Series(
        (X["f0"] + 0.5 * X["f1"] - 0.25 * X["f2"] + rng.normal(scale=0.3, size=n) > 0).astype(int),
        name="label",
    )
    return X, y
