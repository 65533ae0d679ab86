"""What a race leaves in the store between ticks and across restarts: its state (learners, duels, pending predictions,
cursors) and its standings.

* :func:`state_blobs`: a race and the driver's cursors → the two state blobs the driver saves in one transaction
  (``race.state``, pickled; ``race.standings``, JSON for ``driftpilot status``, the demo and the API);
* :func:`restore`: the saved state back into a :class:`~controller.race.race.Race` (None: nothing saved, another
  format, or its champion cannot be loaded any more — then the driver starts a new race);
* :func:`read_standings`: the standings as of the last save.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from controller.race.config import RaceConfig
from controller.race.race import Dropped, Duel, Race, Racer
from controller.store import EventStore
from trainers.online import loads as load_learner

log = logging.getLogger("driftpilot.race")

STATE_KEY = "race.state"
#: The standings as JSON, saved with the state (``driftpilot status``, the demo and the API read them).
STANDINGS_KEY = "race.standings"
STATE_FORMAT = "driftpilot.race_state/1"


@dataclass
class RacerMeta:
    """What the driver keeps per racer besides the race's own fields (for lineage when it is registered)."""

    since: datetime                       # when it started learning (its window's start)
    first_seq: int | None = None          # first label seq it learned since its last registration
    learned_at_version: int = 0           # racer.learned when it was last registered
    registered_at: datetime | None = None


@dataclass
class SavedRace:
    """A restored race and the driver's cursors as they were saved."""

    race: Race
    cut: datetime | None
    cursor: int | None
    ticks: int
    meta: dict[str, RacerMeta]


def state_blobs(race: Race, now: datetime, *, config: RaceConfig, metric: str, cut: datetime | None,
                cursor: int | None, ticks: int, meta: dict[str, RacerMeta]) -> dict[str, bytes]:
    """The race's state and standings as the two blobs the driver saves (keys :data:`STATE_KEY`,
    :data:`STANDINGS_KEY`)."""
    body = {
        "format": STATE_FORMAT, "cut": cut, "cursor": cursor, "ticks": ticks,
        "champion": race.champion, "rows": race.rows, "matured": race.matured, "unjudged": race.unjudged,
        "racers": [{"key": r.key, "kind": r.kind, "origin": r.origin, "version": r.version,
                    "joined_row": r.joined_row, "learned_through": r.learned_through, "learned": r.learned,
                    "scored": r.scored, "rolling": list(r.rolling), "note": r.note,
                    "learner": r.model.dumps() if r.online else None} for r in race.racers.values()],
        "duels": [d.to_dict() for d in race.duels.values()],
        "pending": list(race.pending.items()),
        "meta": {k: vars(m) for k, m in meta.items()},
        "dropped": [vars(d) for d in race.dropped[-50:]],
    }
    standings = {"as_of": now.isoformat(), "metric": metric, "champion": race.champion,
                 "threshold": race.threshold, "k": race.k, "alpha": config.alpha,
                 "racers": race.standings(), "left": [vars(d) for d in race.dropped[-10:]]}
    return {STATE_KEY: pickle.dumps(body, protocol=pickle.HIGHEST_PROTOCOL),
            STANDINGS_KEY: json.dumps(standings, default=json_safe).encode()}


def restore(raw: bytes | None, *, model: str, new_race: Callable[[], Race], frozen: Callable[[str], Any],
            rolling_rows: int) -> SavedRace | None:
    """The race saved in ``raw``; ``new_race`` builds the empty race to fill, ``frozen(version)`` loads a frozen
    racer's registered model (an exception: that racer leaves the race). None when there is nothing to resume."""
    if not raw:
        return None
    body = pickle.loads(raw)
    if body.get("format") != STATE_FORMAT:
        log.warning("%s: ignoring a race state of another format (%s); starting a new race", model,
                    body.get("format"))
        return None
    race = new_race()
    for item in body["racers"]:
        try:
            racing = load_learner(item["learner"]) if item["kind"] == "online" else None
            if racing is None:
                racing = frozen(item["version"])
        except Exception as exc:  # noqa: BLE001 - that racer is gone (its version deleted, say); the race goes on
            log.warning("%s: racer %s cannot be restored (%s); it leaves the race", model, item["key"], exc)
            if item["key"] == body["champion"]:
                return None  # without its champion the saved race is of no use: start again
            continue
        race.racers[item["key"]] = Racer(
            key=item["key"], kind=item["kind"], origin=item["origin"], model=racing, version=item["version"],
            joined_row=item["joined_row"], learned_through=item["learned_through"], learned=item["learned"],
            scored=item["scored"], rolling=deque(item["rolling"], maxlen=rolling_rows), note=item["note"])
    race.champion = body["champion"]
    race.rows, race.matured, race.unjudged = body["rows"], body["matured"], body["unjudged"]
    race.duels = {d["challenger"]: Duel.from_dict(d) for d in body["duels"] if d["challenger"] in race.racers}
    race.pending.update(body["pending"])
    race.dropped = [Dropped(**d) for d in body["dropped"]]
    return SavedRace(race=race, cut=body["cut"], cursor=body["cursor"], ticks=body["ticks"],
                     meta={k: RacerMeta(**m) for k, m in body["meta"].items()})


def read_standings(store: EventStore, model: str) -> dict[str, Any] | None:
    """The race standings of ``model`` as of its last save (None: the model has no race yet)."""
    raw = store.get_state(model, STANDINGS_KEY)
    return json.loads(raw) if raw else None


def json_safe(value: Any) -> Any:
    """``json.dumps``'s ``default`` for the standings: numpy scalars and datetimes as plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
