"""The prediction log's lifecycle: an index on created_at (retention purges, usage
reports and exports read by time), the figures of ended rollouts kept once their rows
may be purged, and the erasures (gateway.prediction_log.erasures).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # A large log keeps taking rows while its index builds.
        with op.get_context().autocommit_block():
            op.create_index("ix_predictions_created_at", "predictions", ["created_at"],
                            postgresql_concurrently=True, if_not_exists=True)
    else:
        op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    with op.batch_alter_table("rollouts") as batch:
        batch.add_column(sa.Column("figures", sa.Text))
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_by", sa.String(64), nullable=False),
        sa.Column("rows_deleted", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_erasures_erased_at", "erasures", ["erased_at"])


def downgrade() -> None:
    op.drop_index("ix_erasures_erased_at", "erasures")
    op.drop_table("erasures")
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("figures")
    op.drop_index("ix_predictions_created_at", "predictions")
