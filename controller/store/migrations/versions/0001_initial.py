"""Initial schema: predictions, labels (with overwrite history), decisions, controller state.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from controller.store.tables import JSONValue, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("prediction_id", sa.String(128), primary_key=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("event_time", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("features", JSONValue, nullable=False),
        sa.Column("prediction", JSONValue, nullable=True),
        sa.Column("scores", JSONValue, nullable=True),
        sa.Column("source", sa.String(16), nullable=False, server_default="logged"),
    )
    op.create_table(
        "labels",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("prediction_id", sa.String(128), nullable=False),
        sa.Column("value", JSONValue, nullable=False),
        sa.Column("arrived_at", UTCDateTime(), nullable=False),
        sa.Column("superseded_at", UTCDateTime(), nullable=True),
    )
    op.create_index(
        "uq_labels_current",
        "labels",
        ["model", "prediction_id"],
        unique=True,
        sqlite_where=sa.text("superseded_at IS NULL"),
        postgresql_where=sa.text("superseded_at IS NULL"),
    )
    op.create_index("ix_labels_model_arrived", "labels", ["model", "arrived_at"])
    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
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
    )
    op.create_index("ix_decisions_model", "decisions", ["model"])
    op.create_table(
        "controller_state",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("controller_state")
    op.drop_index("ix_decisions_model", table_name="decisions")
    op.drop_table("decisions")
    op.drop_index("ix_labels_model_arrived", table_name="labels")
    op.drop_index("uq_labels_current", table_name="labels")
    op.drop_table("labels")
    op.drop_table("predictions")
