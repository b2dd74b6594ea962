"""The outbox id of a row delivered from a gateway's outbox (gateway.prediction_log.outbox): unique, so
that delivering a row twice keeps one.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("outbox_id", sa.String(32)))
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():  # writers keep writing (as in 0004)
            op.create_index("ux_predictions_outbox_id", "predictions", ["outbox_id"],
                            unique=True, postgresql_concurrently=True, if_not_exists=True)
    else:
        op.create_index("ux_predictions_outbox_id", "predictions", ["outbox_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_predictions_outbox_id", "predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("outbox_id")
