"""Model versions as declared state: archives (stored in chunks), declared versions and
each replica's report (core.catalog).

The first model agent to start on an empty `model_versions` adopts what its TorchServe
serves (agent.model_agent), so an upgraded deployment keeps its versions.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_archives",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("weights", sa.Text),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=False),
    )
    op.create_index("ix_model_archives_sha256", "model_archives", ["sha256"])
    op.create_index("ix_model_archives_name", "model_archives", ["name", "id"])
    op.create_table(
        "model_archive_chunks",
        sa.Column("archive_id", sa.Integer,
                  sa.ForeignKey("model_archives.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("archive_id", sa.Integer, sa.ForeignKey("model_archives.id"), nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_by", sa.String(64), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("model_name", "version", name="uq_model_versions_name_version"),
    )
    op.create_table(
        "model_replicas",
        sa.Column("replica_id", sa.String(128), primary_key=True),
        sa.Column("model_name", sa.String(64), primary_key=True),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("converged", sa.Boolean, nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_replicas")
    op.drop_table("model_versions")
    op.drop_table("model_archive_chunks")
    op.drop_index("ix_model_archives_name", "model_archives")
    op.drop_index("ix_model_archives_sha256", "model_archives")
    op.drop_table("model_archives")
