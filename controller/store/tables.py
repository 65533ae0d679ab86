"""The event store's schema (SQLAlchemy Core). Alembic migrations in ``controller/migrations`` create it.

Times are stored as timezone-aware UTC. A label row is never updated in place except to mark it superseded, so the
value in force at any past instant can be read back (label maturity and the overwrite audit both come from that).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData()

JSONValue = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, on SQLite (which has no time zones) and PostgreSQL (timestamptz) alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        # SQLite compares the stored text; dropping the offset keeps one fixed format so text order == time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("prediction_id", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(64), nullable=True),
    sa.Column("event_time", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("features", JSONValue, nullable=False),
    sa.Column("prediction", JSONValue, nullable=True),
    sa.Column("scores", JSONValue, nullable=True),
    # served | logged | reference | batch | shadow: where the row came from.
    sa.Column("source", sa.String(16), nullable=False, server_default="logged"),
    # "Newest predictions" (the current side of data drift) read backwards along this index.
    sa.Index("ix_predictions_model_event_time", "model", "event_time"),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("prediction_id", sa.String(128), nullable=False),
    sa.Column("value", JSONValue, nullable=False),
    sa.Column("arrived_at", UTCDateTime(), nullable=False),
    # Set when a later label overwrote this one; the row stays as the audit record of the old value.
    sa.Column("superseded_at", UTCDateTime(), nullable=True),
    sa.Index(
        "uq_labels_current",
        "model",
        "prediction_id",
        unique=True,
        sqlite_where=sa.text("superseded_at IS NULL"),
        postgresql_where=sa.text("superseded_at IS NULL"),
    ),
    sa.Index("ix_labels_model_arrived", "model", "arrived_at"),
)

# Decision statuses that hold the model's single flight: a challenger is training, held by the gate, or promoting.
IN_FLIGHT_STATUSES = ("training", "held", "promoting")
IN_FLIGHT = "status IN ('training', 'held', 'promoting')"

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("decision_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False, index=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("strategy", sa.String(32), nullable=True),
    sa.Column("verdict", sa.String(16), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("champion_version", sa.String(64), nullable=True),
    sa.Column("challenger_version", sa.String(64), nullable=True),
    sa.Column("evidence", JSONValue, nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("rule", sa.String(64), nullable=True),
    # The daemon instance that made the decision (its lease holder id).
    sa.Column("owner", sa.String(128), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=True),
    sa.Index("ix_decisions_model_created", "model", "created_at"),
    # At most one in-flight decision per model (single flight, enforced by the database).
    sa.Index("uq_decisions_in_flight", "model", unique=True,
             sqlite_where=sa.text(IN_FLIGHT), postgresql_where=sa.text(IN_FLIGHT)),
)

# One active controller per model: a daemon acts on a model only while it holds an unexpired lease row.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# Small named blobs that must survive a restart: drift detector state, an incremental learner, cursors.
controller_state = sa.Table(
    "controller_state",
    metadata,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.LargeBinary(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
