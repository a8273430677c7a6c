"""Install specifications on application versions; install results per device.

Revision ID: 0006_installs
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_installs"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("application_versions") as table:
        table.add_column(sa.Column("install_spec", sa.JSON(), nullable=True))
    op.create_table(
        "install_results",
        sa.Column("device_id", sa.String(length=100), nullable=False),
        sa.Column("content_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.BigInteger(), nullable=True),
        sa.Column("output_tail", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "content_id"),
    )
    op.create_index(
        op.f("ix_install_results_content_id"), "install_results", ["content_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_install_results_content_id"), table_name="install_results")
    op.drop_table("install_results")
    with op.batch_alter_table("application_versions") as table:
        table.drop_column("install_spec")
