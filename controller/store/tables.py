"""The event store's schema (SQLAlchemy Core). Alembic migrations in ``controller/store/migrations`` create it.

Times are stored as timezone-aware UTC. A label row is never updated in place except to mark it superseded, so the
value in force at any past instant can be read back (label maturity and the overwrite audit both come from that).

Two tiers (docs/architecture.md, "The event store at scale"): the row tables ``predictions`` and ``labels`` take the
writes; a model's older labeled rows are moved ("sealed") into ``segments``, immutable compressed columnar blocks
(Arrow IPC, zstd) that hold each label row with a copy of its prediction. ``sealed_ids`` keeps the ids whose
prediction left the row tables (writes still see them as stored), ``sealed_supersessions`` the overwrites of sealed
labels, ``store_models`` a small integer per model for those keys.
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
    # The race's "logged since the last tick" read (controller/store/recent.py).
    sa.Index("ix_predictions_model_received", "model", "received_at"),
)

labels = sa.Table(
    "labels",
    metadata,
    # AUTOINCREMENT on SQLite: a seq is never handed out twice, even after the newest rows were sealed or pruned
    # (cursors and lineage ranges rely on seqs never coming back). PostgreSQL's sequence never reuses one anyway.
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
    sqlite_autoincrement=True,
)

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# A small integer per model, for the compact keys of sealed_ids.
store_models = sa.Table(
    "store_models",
    metadata,
    sa.Column("model_id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(128), nullable=False, unique=True),
)

# Sealed rows: one block per contiguous run of a model's label seqs, oldest first. ``data`` is an Arrow IPC stream
# (controller/store/segments.py); the other columns let a read pick the blocks it needs without opening them.
segments = sa.Table(
    "segments",
    metadata,
    sa.Column("segment_id", SEQ, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("first_seq", sa.BigInteger(), nullable=False),
    sa.Column("last_seq", sa.BigInteger(), nullable=False),
    sa.Column("row_count", sa.Integer(), nullable=False),
    # Rows whose prediction lives in this block (its first sealed label row); the others carry a copy.
    sa.Column("owner_count", sa.Integer(), nullable=False),
    sa.Column("first_arrival", UTCDateTime(), nullable=False),
    sa.Column("last_arrival", UTCDateTime(), nullable=False),
    # Over the owned predictions (NULL when it owns none): what prediction-level reads filter on.
    sa.Column("min_event_time", UTCDateTime(), nullable=True),
    sa.Column("max_event_time", UTCDateTime(), nullable=True),
    sa.Column("max_received_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),
    sa.Index("ix_segments_model_last_seq", "model", "last_seq"),
)

# Ids whose prediction left the row tables for a segment: the write path still finds them (a re-sent prediction is a
# repeat or a conflict, a label for them is matched, a sealed current label can be repeated or overwritten).
sealed_ids = sa.Table(
    "sealed_ids",
    metadata,
    sa.Column("model_id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("prediction_id", sa.String(128), primary_key=True),
    sa.Column("segment_id", sa.BigInteger(), nullable=False),       # the block holding the prediction
    sa.Column("last_segment_id", sa.BigInteger(), nullable=False),  # the newest block with a label row of the id
    sa.Column("label_seq", sa.BigInteger(), nullable=True),         # the current label, when it is sealed
    sqlite_with_rowid=False,
)

# A sealed label overwritten later: its superseded_at (segments are never rewritten for an overwrite).
sealed_supersessions = sa.Table(
    "sealed_supersessions",
    metadata,
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("superseded_at", UTCDateTime(), nullable=False),
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

# The race's outcome log (controller/race/outcomes.py): every racer's score on every matured row it predicted, one
# compressed block per save of the race state. ``racers`` names the block's score columns.
race_outcomes = sa.Table(
    "race_outcomes",
    metadata,
    sa.Column("block_id", SEQ, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("first_seq", sa.BigInteger(), nullable=False),
    sa.Column("last_seq", sa.BigInteger(), nullable=False),
    sa.Column("row_count", sa.Integer(), nullable=False),
    sa.Column("racers", JSONValue, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),
    sa.Index("ix_race_outcomes_model_last_seq", "model", "last_seq"),
)
