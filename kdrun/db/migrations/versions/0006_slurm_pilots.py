"""Slurm pilots, and jobs handed back at a time limit or pre-emption.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 06:00:00.000000
"""

from collections.abc import Sequence

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # PLACEHOLDER (issue 11): fill in or delete (and re-chain) before commit


def downgrade() -> None:
    pass
