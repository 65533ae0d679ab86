"""The race (controller/race): an index for its "logged since the last tick" read, and its outcome log.

* ``ix_predictions_model_received``: the race reads the predictions logged since its last tick by store arrival
  time; the index keeps that read proportional to the new rows.
* ``race_outcomes``: every racer's score on every matured row it predicted, one compressed block per save of the race
  state (not one row per racer and prediction in the events tables).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from controller.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_predictions_model_received", "predictions", ["model", "received_at"])
    op.create_table(
        "race_outcomes",
        sa.Column("block_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("racers", sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_race_outcomes_model_last_seq", "race_outcomes", ["model", "last_seq"])


def downgrade() -> None:
    op.drop_index("ix_race_outcomes_model_last_seq", table_name="race_outcomes")
    op.drop_table("race_outcomes")
    op.drop_index("ix_predictions_model_received", table_name="predictions")
