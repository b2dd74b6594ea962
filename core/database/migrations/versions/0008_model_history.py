"""The audit trail of model changes (core.model_history), append-only: the database
refuses UPDATE and DELETE on it.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

REFUSAL = "model_history is append-only"
POSTGRESQL_TRIGGER = f"""
CREATE FUNCTION model_history_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{REFUSAL}';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER model_history_append_only BEFORE UPDATE OR DELETE ON model_history
    FOR EACH ROW EXECUTE FUNCTION model_history_append_only();
"""


def upgrade() -> None:
    op.create_table(
        "model_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("from_version", sa.String(32)),
        sa.Column("to_version", sa.String(32)),
        sa.Column("reason", sa.Text),
        sa.Column("request_id", sa.String(128)),
        sa.Column("default_version", sa.String(32)),
        sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_model_history_model", "model_history", ["model_name", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_TRIGGER)
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER model_history_no_{event.lower()} BEFORE {event} "
                       f"ON model_history BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER model_history_append_only ON model_history")
        op.execute("DROP FUNCTION model_history_append_only()")
    op.drop_index("ix_model_history_model", "model_history")
    op.drop_table("model_history")
