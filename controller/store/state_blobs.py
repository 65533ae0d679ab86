"""Small controller state kept per model beside the events: named blobs (detector and learner states, the race's
standings) and the race's outcome log, a block per save. Functions of a connection the caller opened
(:meth:`EventStore.put_states <controller.store.events.EventStore.put_states>` and its siblings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from controller.store.tables import controller_state, race_outcomes


def put(conn: sa.Connection, model: str, values: Mapping[str, bytes], now: datetime, *,
        outcome_block: Mapping[str, Any] | None = None) -> None:
    """Replace the named blobs; add ``outcome_block`` (``first_seq``, ``last_seq``, ``row_count``, ``racers``,
    ``data``) to the outcome log."""
    for key, value in values.items():
        conn.execute(controller_state.delete().where(controller_state.c.model == model,
                                                     controller_state.c.key == key))
        conn.execute(controller_state.insert().values(model=model, key=key, value=value, updated_at=now))
    if outcome_block is not None:
        conn.execute(race_outcomes.insert().values(model=model, created_at=now, **outcome_block))


def value(conn: sa.Connection, model: str, key: str) -> bytes | None:
    return conn.execute(
        sa.select(controller_state.c.value).where(controller_state.c.model == model, controller_state.c.key == key)
    ).scalar_one_or_none()


def values(conn: sa.Connection, model: str, keys: Sequence[str]) -> dict[str, bytes]:
    """The stored ones of ``keys`` (missing keys are left out), in one query."""
    rows = conn.execute(
        sa.select(controller_state.c.key, controller_state.c.value).where(
            controller_state.c.model == model, controller_state.c.key.in_(list(keys)))
    ).all()
    return {key: blob for key, blob in rows}


def updated_at(conn: sa.Connection, model: str, key: str) -> datetime | None:
    return conn.execute(sa.select(controller_state.c.updated_at).where(
        controller_state.c.model == model, controller_state.c.key == key)).scalar_one_or_none()


def outcome_blocks(conn: sa.Connection, model: str, after_seq: int | None) -> list[dict[str, Any]]:
    """The model's outcome log (blocks holding a label seq after ``after_seq``), oldest first."""
    query = sa.select(race_outcomes.c.first_seq, race_outcomes.c.last_seq, race_outcomes.c.row_count,
                      race_outcomes.c.racers, race_outcomes.c.created_at, race_outcomes.c.data).where(
        race_outcomes.c.model == model)
    if after_seq is not None:
        query = query.where(race_outcomes.c.last_seq > after_seq)
    return [dict(row._mapping) for row in conn.execute(query.order_by(race_outcomes.c.block_id))]
