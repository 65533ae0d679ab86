"""How an online champion's learned state reaches the processes that serve it, once per tick that changed it.

The champion's *registered* version moves only at a promotion or a checkpoint (``race.checkpoint``); between them
the learner keeps learning every matured label. :class:`StorePublisher` writes the served state to the event store
(``race.served``: the version it continues, the racer, the newest label seq it learned, the model's bytes), where
every API process's :class:`~controller.api.serving.ChampionHolder` picks it up (hot swap, no MLflow version per
refresh). :class:`InProcessPublisher` hands the live learner to a caller in the same thread (the backtest serves the
next rows from it, exactly the state an API process would load after this tick). :class:`NoPublisher` does nothing.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Protocol

from controller.store import EventStore

SERVED_KEY = "race.served"
SERVED_FORMAT = "driftpilot.served_state/1"


@dataclass(frozen=True)
class ServedState:
    """What serves now: a registered ``version`` continued by ``racer`` through label seq ``through_seq``."""

    version: str
    racer: str
    through_seq: int | None
    model: Any                   # a RiverModel or a scikit-learn pipeline (what predictor_for takes)

    def dumps(self) -> bytes:
        return pickle.dumps({"format": SERVED_FORMAT, "version": self.version, "racer": self.racer,
                             "through_seq": self.through_seq, "model": self.model}, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def loads(cls, data: bytes) -> ServedState:
        body = pickle.loads(data)
        if not isinstance(body, dict) or body.get("format") != SERVED_FORMAT:
            raise ValueError(f"these bytes are not a driftpilot served state (expected {SERVED_FORMAT!r})")
        return cls(version=body["version"], racer=body["racer"], through_seq=body["through_seq"], model=body["model"])


class ServedStatePublisher(Protocol):
    def publish(self, model: str, state: ServedState) -> None: ...


class NoPublisher:
    """Nothing serves from the live state (a one-off CLI tick)."""

    def publish(self, model: str, state: ServedState) -> None:
        return None


class StorePublisher:
    """Writes the served state to the store for every API process (one row per model, replaced each time)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def publish(self, model: str, state: ServedState) -> None:
        self.store.put_state(model, SERVED_KEY, state.dumps())


class InProcessPublisher:
    """Keeps the newest served state in memory, for a caller in the same thread (no copy: read it between ticks)."""

    def __init__(self) -> None:
        self.latest: dict[str, ServedState] = {}

    def publish(self, model: str, state: ServedState) -> None:
        self.latest[model] = state


def read_served(store: EventStore, model: str) -> ServedState | None:
    """The served state the controller last published for ``model``, or None."""
    raw = store.get_state(model, SERVED_KEY)
    return ServedState.loads(raw) if raw else None
