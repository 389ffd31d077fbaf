"""Fenced checkpoint files: each acknowledged epoch's checkpoint, its epoch and sha256.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:00:00.000000
"""

from collections.abc import Sequence

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # PLACEHOLDER (issue 15): fill in or delete (and re-chain) before commit


def downgrade() -> None:
    pass
