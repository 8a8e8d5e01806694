"""campaign device-time budget

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing campaigns have no budget (NULL): they run every job, as before.
    op.add_column("campaigns", sa.Column("max_device_s", sa.Double(), nullable=True))


def downgrade() -> None:
    op.drop_column("campaigns", "max_device_s")
