"""The prediction log's trace id (core.tracing): a row joins its request's trace and
log lines.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("trace_id", sa.String(32)))
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():  # writers keep writing (as in 0004)
            op.create_index("ix_predictions_trace_id", "predictions", ["trace_id"],
                            postgresql_concurrently=True, if_not_exists=True)
    else:
        op.create_index("ix_predictions_trace_id", "predictions", ["trace_id"])


def downgrade() -> None:
    op.drop_index("ix_predictions_trace_id", "predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("trace_id")
