"""Several models: each prediction-log row names its model, and a declared version
carries the workers and batching an operator asked for (TorchServe's register and
scale parameters; NULL: TorchServe's defaults).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

VERSION_COLUMNS = ("min_workers", "max_workers", "batch_size", "max_batch_delay",
                   "response_timeout")


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("model_name", sa.String(64)))
    with op.batch_alter_table("model_versions") as batch:
        for name in VERSION_COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        for name in VERSION_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("model_name")
