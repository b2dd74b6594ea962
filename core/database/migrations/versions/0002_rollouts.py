"""Rollouts: the canary/shadow table, and the arm each prediction-log row came from.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("arm", sa.String(16)))
        batch.add_column(sa.Column("rollout_id", sa.Integer))
        batch.add_column(sa.Column("shadow_top1_agree", sa.Boolean))
        batch.add_column(sa.Column("shadow_top5_overlap", sa.Integer))
    # On three new, all-NULL columns: a short build (measured in docs/operations.md, "Prediction-log schema migrations"), so not
    # CONCURRENTLY, which would need its own transaction outside the migration lock's.
    op.create_index("ix_predictions_rollout", "predictions", ["rollout_id", "arm", "id"])
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("percent", sa.Float, nullable=False),
        sa.Column("sticky", sa.Boolean, nullable=False),
        sa.Column("guard", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_rollouts_model_state", "rollouts", ["model_name", "state"])


def downgrade() -> None:
    op.drop_index("ix_rollouts_model_state", "rollouts")
    op.drop_table("rollouts")
    op.drop_index("ix_predictions_rollout", "predictions")
    with op.batch_alter_table("predictions") as batch:
        for column in ("shadow_top5_overlap", "shadow_top1_agree", "rollout_id", "arm"):
            batch.drop_column(column)
