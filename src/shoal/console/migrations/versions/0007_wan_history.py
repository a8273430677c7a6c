"""The history of the servers' running totals (the WAN-saved chart), and the device
indexes the console's lists sort and filter by (host name, last seen).

Revision ID: 0007
Revises: 0006_installs
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006_installs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wan_totals",
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bytes_from_peers", sa.BigInteger(), nullable=False),
        sa.Column("bytes_from_server", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("recorded_at"),
    )
    with op.batch_alter_table("devices") as table:
        table.create_index("ix_devices_hostname", ["hostname"], unique=False)
        table.create_index("ix_devices_last_seen", ["last_seen"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("devices") as table:
        table.drop_index("ix_devices_last_seen")
        table.drop_index("ix_devices_hostname")
    op.drop_table("wan_totals")
