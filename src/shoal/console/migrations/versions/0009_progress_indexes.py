"""Covering indexes for the progress of a page of assignments (issue 14, point 5).

A page of assignments sums, per (content, office), the devices holding each content
and their bytes: ``device_content`` by content joined to ``devices`` by ID for the
office. Each joined row cost four b-tree searches (content index, table row, device
key, device row); with these two covering indexes it costs two, and the query half its
CPU (SQLite, 10,000 devices, 50 assignments: ~23 -> ~10 ms). The content index
replaces the former one on ``content_id`` alone (its prefix serves the same lookups).

Revision ID: 0009_progress
Revises: 0008_swarm
"""

from alembic import op

revision = "0009_progress"
down_revision = "0008_swarm"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_device_content_content_id", table_name="device_content")
    op.create_index(
        "ix_device_content_progress",
        "device_content",
        ["content_id", "device_id", "complete", "bytes_done"],
        unique=False,
    )
    op.create_index("ix_devices_id_office", "devices", ["id", "office"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_devices_id_office", table_name="devices")
    op.drop_index("ix_device_content_progress", table_name="device_content")
    op.create_index("ix_device_content_content_id", "device_content", ["content_id"], unique=False)
