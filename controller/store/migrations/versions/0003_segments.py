"""The event store at scale: sealed segments (columnar blocks of a model's older labeled rows), the ids and overwrites
that point into them, a small integer per model, and label seqs that are never reused on SQLite (AUTOINCREMENT).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from controller.store.tables import JSONValue, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _labels_autoincrement()
    op.create_table(
        "store_models",
        sa.Column("model_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False, unique=True),
    )
    op.create_table(
        "segments",
        sa.Column("segment_id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("owner_count", sa.Integer(), nullable=False),
        sa.Column("first_arrival", UTCDateTime(), nullable=False),
        sa.Column("last_arrival", UTCDateTime(), nullable=False),
        sa.Column("min_event_time", UTCDateTime(), nullable=True),
        sa.Column("max_event_time", UTCDateTime(), nullable=True),
        sa.Column("max_received_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_segments_model_last_seq", "segments", ["model", "last_seq"])
    if bind.dialect.name == "postgresql":
        # The blocks are zstd-compressed already: TOAST would spend CPU trying to compress them again.
        op.execute("ALTER TABLE segments ALTER COLUMN data SET STORAGE EXTERNAL")
    op.create_table(
        "sealed_ids",
        sa.Column("model_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("prediction_id", sa.String(128), primary_key=True),
        sa.Column("segment_id", sa.BigInteger(), nullable=False),
        sa.Column("last_segment_id", sa.BigInteger(), nullable=False),
        sa.Column("label_seq", sa.BigInteger(), nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "sealed_supersessions",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("superseded_at", UTCDateTime(), nullable=False),
    )


def _labels_autoincrement() -> None:
    """Rebuild ``labels`` with ``INTEGER PRIMARY KEY AUTOINCREMENT``: without it SQLite hands the newest seq out again
    once its row is deleted (sealing and retention delete rows). The copy keeps every seq; sqlite_sequence starts at
    the highest one."""
    op.create_table(
        "labels_autoinc",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("prediction_id", sa.String(128), nullable=False),
        sa.Column("value", JSONValue, nullable=False),
        sa.Column("arrived_at", UTCDateTime(), nullable=False),
        sa.Column("superseded_at", UTCDateTime(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.execute("INSERT INTO labels_autoinc (seq, model, prediction_id, value, arrived_at, superseded_at) "
               "SELECT seq, model, prediction_id, value, arrived_at, superseded_at FROM labels ORDER BY seq")
    op.drop_index("ix_labels_model_arrived", table_name="labels")
    op.drop_index("uq_labels_current", table_name="labels")
    op.drop_table("labels")
    op.rename_table("labels_autoinc", "labels")
    op.create_index("uq_labels_current", "labels", ["model", "prediction_id"], unique=True,
                    sqlite_where=sa.text("superseded_at IS NULL"))
    op.create_index("ix_labels_model_arrived", "labels", ["model", "arrived_at"])


def downgrade() -> None:
    op.drop_table("sealed_supersessions")
    op.drop_table("sealed_ids")
    op.drop_index("ix_segments_model_last_seq", table_name="segments")
    op.drop_table("segments")
    op.drop_table("store_models")
