"""The decision loop: decision rows carry their rule, owner and update time; one in-flight decision per model;
per-model leases; an index for "newest predictions" reads.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from controller.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

IN_FLIGHT = "status IN ('training', 'held', 'promoting')"


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("rule", sa.String(64), nullable=True))
        batch.add_column(sa.Column("owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("updated_at", UTCDateTime(), nullable=True))
    op.create_index("ix_decisions_model_created", "decisions", ["model", "created_at"])
    # Single flight in the database itself: a second in-flight decision for a model fails to insert.
    op.create_index("uq_decisions_in_flight", "decisions", ["model"], unique=True,
                    sqlite_where=sa.text(IN_FLIGHT), postgresql_where=sa.text(IN_FLIGHT))
    op.create_table(
        "leases",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_predictions_model_event_time", "predictions", ["model", "event_time"])


def downgrade() -> None:
    op.drop_index("ix_predictions_model_event_time", table_name="predictions")
    op.drop_table("leases")
    op.drop_index("uq_decisions_in_flight", table_name="decisions")
    op.drop_index("ix_decisions_model_created", table_name="decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("owner")
        batch.drop_column("rule")
