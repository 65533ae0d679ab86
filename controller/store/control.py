"""The controller's own tables: the decision log and the per-model leases.

* :class:`DecisionLog` — every decision the loop (or a person, through the CLI) takes, with its evidence. A decision
  that trains a challenger stays *in flight* (``training`` → ``held``/``promoting``) until it ends (``done`` or
  ``failed``); the database allows at most one in-flight decision per model (a partial unique index), so two
  processes can never start two retrains of one model.
* :class:`Leases` — one active controller per model: a daemon acts on a model only while it holds that model's
  unexpired lease row, renewed on every tick. A crashed daemon's lease expires and another one takes over.

Times come from the injected clock, like every other write of the store.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from controller.clock import Clock, ensure_utc
from controller.errors import DriftpilotError
from controller.store.events import EventStore
from controller.store.tables import IN_FLIGHT_STATUSES, decisions, leases
from monitors.signals import to_jsonable

# superseded: a routine decision cancelled in flight because a severe change started its own (controller/loop/rules.py).
STATUSES = ("training", "held", "promoting", "done", "failed", "skipped", "superseded")
TERMINAL_STATUSES = ("done", "failed", "skipped", "superseded")


class InFlightConflict(DriftpilotError):
    """The model already has an in-flight decision (single flight); the message names it."""


@dataclass(frozen=True)
class Decision:
    """One row of the decision log."""

    decision_id: str
    model: str
    created_at: datetime
    trigger: str
    action: str
    status: str
    rule: str | None = None
    strategy: str | None = None
    verdict: str | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    owner: str | None = None
    updated_at: datetime | None = None

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id, "model": self.model, "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None, "trigger": self.trigger,
            "rule": self.rule, "action": self.action, "strategy": self.strategy, "status": self.status,
            "verdict": self.verdict, "champion_version": self.champion_version,
            "challenger_version": self.challenger_version, "evidence": dict(self.evidence), "error": self.error,
            "owner": self.owner,
        }


class DecisionLog:
    """Append and update decisions of any number of models in the event store's database."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def open(self, model: str, *, trigger: str, action: str, status: str, rule: str | None = None,
             strategy: str | None = None, champion_version: str | None = None,
             evidence: Mapping[str, Any] | None = None, owner: str | None = None, error: str | None = None,
             verdict: str | None = None, challenger_version: str | None = None,
             decision_id: str | None = None) -> Decision:
        """Insert a decision. An in-flight status (``training``, ``held``, ``promoting``) fails with
        :class:`InFlightConflict` when the model already has one in flight."""
        if status not in STATUSES:
            raise ValueError(f"decision status {status!r} is not one of {', '.join(STATUSES)}")
        now = self.clock.now()
        row = {
            "decision_id": decision_id or new_decision_id(action), "model": model, "created_at": now,
            "updated_at": now, "trigger": trigger, "rule": rule, "action": action, "strategy": strategy,
            "verdict": verdict, "status": status, "champion_version": champion_version,
            "challenger_version": challenger_version, "evidence": to_jsonable(dict(evidence or {})),
            "error": error, "owner": owner,
        }
        try:
            with self.store.transaction() as conn:
                conn.execute(decisions.insert().values(**row))
        except sa.exc.IntegrityError:
            current = self.in_flight(model)
            raise InFlightConflict(
                f"model {model!r} already has an in-flight decision"
                + (f" {current.decision_id} ({current.action}, {current.status}, since "
                   f"{current.created_at.isoformat()})" if current else "")
                + "; one challenger at a time — wait for it to finish or see `driftpilot decisions`") from None
        return _decision(row)

    def update(self, decision_id: str, *, status: str | None = None, verdict: str | None = None,
               strategy: str | None = None, challenger_version: str | None = None,
               evidence: Mapping[str, Any] | None = None, error: str | None = None) -> Decision:
        """Change a decision; ``evidence`` is merged into the stored evidence (keys replaced, never dropped)."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"decision status {status!r} is not one of {', '.join(STATUSES)}")
        with self.store.transaction() as conn:
            current = conn.execute(sa.select(decisions).where(decisions.c.decision_id == decision_id)).first()
            if current is None:
                raise DriftpilotError(f"no decision {decision_id!r} in the decision log")
            values: dict[str, Any] = {"updated_at": self.clock.now()}
            for name, value in (("status", status), ("verdict", verdict), ("strategy", strategy),
                                ("challenger_version", challenger_version), ("error", error)):
                if value is not None:
                    values[name] = value
            if evidence:
                values["evidence"] = to_jsonable({**(current.evidence or {}), **dict(evidence)})
            conn.execute(decisions.update().where(decisions.c.decision_id == decision_id).values(**values))
            row = conn.execute(sa.select(decisions).where(decisions.c.decision_id == decision_id)).first()
        return _decision(row._mapping)

    def get(self, decision_id: str) -> Decision | None:
        with self.store.connection() as conn:
            row = conn.execute(sa.select(decisions).where(decisions.c.decision_id == decision_id)).first()
        return _decision(row._mapping) if row is not None else None

    def in_flight(self, model: str) -> Decision | None:
        with self.store.connection() as conn:
            row = conn.execute(sa.select(decisions).where(
                decisions.c.model == model, decisions.c.status.in_(IN_FLIGHT_STATUSES))).first()
        return _decision(row._mapping) if row is not None else None

    def list(self, model: str | None = None, *, since: datetime | None = None, limit: int | None = 100,
             actions: Sequence[str] | None = None) -> list[Decision]:
        """Decisions, newest first."""
        query = sa.select(decisions)
        if model is not None:
            query = query.where(decisions.c.model == model)
        if since is not None:
            query = query.where(decisions.c.created_at >= ensure_utc(since))
        if actions is not None:
            query = query.where(decisions.c.action.in_(list(actions)))
        query = query.order_by(decisions.c.created_at.desc(), decisions.c.decision_id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.store.connection() as conn:
            return [_decision(r._mapping) for r in conn.execute(query)]

    def newest_mark(self, model: str) -> tuple[str, str, datetime | None] | None:
        """(decision id, status, updated_at) of the model's newest decision: what tells a tick that someone else may
        have moved an alias, without reading (and decoding) a decision's evidence."""
        query = (sa.select(decisions.c.decision_id, decisions.c.status, decisions.c.updated_at)
                 .where(decisions.c.model == model)
                 .order_by(decisions.c.created_at.desc(), decisions.c.decision_id.desc()).limit(1))
        with self.store.connection() as conn:
            row = conn.execute(query).first()
        return (row.decision_id, row.status, row.updated_at) if row is not None else None

    def in_flight_and_recent(self, model: str, *, since: datetime,
                             actions: Sequence[str]) -> tuple[Decision | None, list[Decision]]:
        """The decision in flight (or None) and the ``actions`` decisions created since ``since``, newest first, in
        one query (what a tick's hygiene needs)."""
        since = ensure_utc(since)
        recent = sa.and_(decisions.c.created_at >= since, decisions.c.action.in_(list(actions)))
        query = (sa.select(decisions)
                 .where(decisions.c.model == model, sa.or_(decisions.c.status.in_(IN_FLIGHT_STATUSES), recent))
                 .order_by(decisions.c.created_at.desc(), decisions.c.decision_id.desc()))
        with self.store.connection() as conn:
            found = [_decision(row._mapping) for row in conn.execute(query)]
        flying = next((d for d in found if d.in_flight), None)
        return flying, [d for d in found if d.created_at >= since and d.action in actions]

    def count(self, model: str, *, since: datetime, actions: Sequence[str]) -> int:
        with self.store.connection() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(decisions).where(
                decisions.c.model == model, decisions.c.created_at >= ensure_utc(since),
                decisions.c.action.in_(list(actions)))).scalar_one()


def new_decision_id(action: str) -> str:
    return f"{action}-{uuid.uuid4().hex[:12]}"


def _decision(row: Mapping[str, Any]) -> Decision:
    return Decision(**{k: row[k] for k in (
        "decision_id", "model", "created_at", "trigger", "action", "status", "rule", "strategy", "verdict",
        "champion_version", "challenger_version", "error", "owner", "updated_at")}, evidence=row["evidence"] or {})


# ------------------------------------------------------------------------------------------------------------ leases


@dataclass(frozen=True)
class Lease:
    model: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


class Leases:
    """Per-model leases: at most one holder per model at a time, taken over only once expired."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        # (model, holder) -> the expiry this object last wrote. While half of it is left, acquire() answers from here:
        # nobody can take an unexpired lease, so an idle tick need not write (a write + fsync per model per tick).
        self._held: dict[tuple[str, str], datetime] = {}

    def acquire(self, model: str, holder: str, ttl: timedelta) -> bool:
        """Take or renew ``model``'s lease for ``ttl``; False while another holder's lease is unexpired.

        One UPDATE decides for an existing row (renewal by the holder, or takeover of an expired lease); the
        database's row lock makes concurrent acquirers see each other's result. A missing row is inserted, and
        the loser of an insert race gets False from the primary key. A lease this object took or renewed and that
        has at least half of ``ttl`` left is held without asking the database.
        """
        now = self.clock.now()
        written = self._held.get((model, holder))
        if written is not None and written - now >= ttl / 2:
            return True
        taken = self._take(model, holder, now, ttl)
        if taken:
            self._held[(model, holder)] = now + ttl
        else:
            self._held.pop((model, holder), None)
        return taken

    def _take(self, model: str, holder: str, now: datetime, ttl: timedelta) -> bool:
        expires = now + ttl
        with self.store.transaction() as conn:
            taken = conn.execute(
                leases.update()
                .where(leases.c.model == model, sa.or_(leases.c.holder == holder, leases.c.expires_at < now))
                .values(holder=holder, expires_at=expires,
                        acquired_at=sa.case((leases.c.holder == holder, leases.c.acquired_at), else_=now))
            ).rowcount
        if taken:
            return True
        try:
            with self.store.transaction() as conn:
                conn.execute(leases.insert().values(model=model, holder=holder, acquired_at=now, expires_at=expires))
        except sa.exc.IntegrityError:
            return False
        return True

    def renew(self, model: str, holder: str, ttl: timedelta) -> bool:
        """Extend ``holder``'s lease; False when it does not hold it (it never takes a lease)."""
        expires = self.clock.now() + ttl
        with self.store.transaction() as conn:
            renewed = bool(conn.execute(leases.update().where(leases.c.model == model, leases.c.holder == holder)
                                        .values(expires_at=expires)).rowcount)
        if renewed:
            self._held[(model, holder)] = expires
        else:
            self._held.pop((model, holder), None)
        return renewed

    def release(self, model: str, holder: str) -> None:
        """Give the lease up (graceful stop), so another daemon need not wait for it to expire."""
        self._held.pop((model, holder), None)
        with self.store.transaction() as conn:
            conn.execute(leases.delete().where(leases.c.model == model, leases.c.holder == holder))

    def current(self, model: str) -> Lease | None:
        with self.store.connection() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.model == model)).first()
        return Lease(**row._mapping) if row is not None else None
