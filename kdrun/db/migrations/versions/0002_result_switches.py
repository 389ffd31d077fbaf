"""Results record the speed switches a job ran with (amp, channels_last, compile, loader,
teacher logits live or cached), as resolved on its device.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("kdrun_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("switches", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kdrun_results", schema=None) as batch_op:
        batch_op.drop_column("switches")
