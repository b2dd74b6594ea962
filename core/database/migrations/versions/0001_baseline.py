"""Baseline: the predictions table as it was before migrations existed.

A database made by an older gateway (metadata.create_all) already has this table
and no revision: it is adopted as it is, rows and all.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("predictions"):
        return
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("username", sa.String(64)),
        sa.Column("filename", sa.String(255)),
        sa.Column("extension", sa.String(255)),
        sa.Column("upload_sha256", sa.String(64)),
        sa.Column("upload_bytes", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("class_id", sa.Integer),
        sa.Column("category_name", sa.String(255)),
        sa.Column("score", sa.Integer),
        sa.Column("model_version", sa.String(32)),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("error_detail", sa.Text),
    )
    op.create_index("ix_predictions_username", "predictions", ["username"])


def downgrade() -> None:
    op.drop_table("predictions")
