"""campaign adaptive round

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 19:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing campaigns get no adaptive round (0), so they finish exactly as before.
    op.add_column(
        "campaigns",
        sa.Column("adaptive_samples", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "campaigns", sa.Column("adapt_requested_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("campaigns", sa.Column("adapted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("campaigns", "adapted_at")
    op.drop_column("campaigns", "adapt_requested_at")
    op.drop_column("campaigns", "adaptive_samples")
