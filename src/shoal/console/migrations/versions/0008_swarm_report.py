"""The P2P servers' swarm reports: peers banned per office, rendezvous holders now.

Revision ID: 0008_swarm
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_swarm"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "banned_peers",
        sa.Column("server_id", sa.String(length=100), nullable=False),
        sa.Column("office", sa.String(length=200), nullable=False),
        sa.Column("peer_ip", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=100), nullable=True),
        sa.Column("content_id", sa.String(length=64), nullable=False),
        sa.Column("reporters", sa.Integer(), nullable=False),
        sa.Column("banned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("server_id", "office", "peer_ip"),
    )
    op.create_index("ix_banned_peers_until", "banned_peers", ["until"], unique=False)
    op.create_table(
        "rendezvous_holders",
        sa.Column("server_id", sa.String(length=100), nullable=False),
        sa.Column("office", sa.String(length=200), nullable=False),
        sa.Column("content_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=100), nullable=False),
        sa.Column("stripe", sa.Integer(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("server_id", "office", "content_id", "device_id"),
    )


def downgrade() -> None:
    op.drop_table("rendezvous_holders")
    op.drop_index("ix_banned_peers_until", table_name="banned_peers")
    op.drop_table("banned_peers")
