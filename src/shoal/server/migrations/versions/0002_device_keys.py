"""Each registered device's public key and the last control counter accepted from it.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("server_clients") as batch:
        batch.add_column(sa.Column("public_key", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("last_counter", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("server_clients") as batch:
        batch.drop_column("last_counter")
        batch.drop_column("public_key")
