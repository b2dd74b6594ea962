"""Each archive's signature (core.signatures): a Sigstore bundle, NULL for one stored
unsigned (before signing, or with ALLOW_UNSIGNED_ARCHIVES).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_archives") as batch:
        batch.add_column(sa.Column("signature", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("model_archives") as batch:
        batch.drop_column("signature")
