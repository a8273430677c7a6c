"""Confidential versions: the wrapped content key, and the plaintext's size and SHA-256;
the devices retired in the console (they never again receive a content key).

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
    op.create_table(
        "retired_devices",
        sa.Column("device_id", sa.String(length=100), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    with op.batch_alter_table("application_versions") as table:
        table.add_column(sa.Column("content_key", sa.String(length=128), nullable=True))
        table.add_column(sa.Column("plaintext_size", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("plaintext_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("application_versions") as table:
        table.drop_column("plaintext_sha256")
        table.drop_column("plaintext_size")
        table.drop_column("content_key")
    op.drop_table("retired_devices")
