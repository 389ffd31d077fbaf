"""Tracker runs: the TensorBoard / W&B run ids of each job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 06:00:00.000000
"""

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # PLACEHOLDER (issue 16): fill in or delete (and re-chain) before commit


def downgrade() -> None:
    pass
