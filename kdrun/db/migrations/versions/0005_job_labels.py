"""Job labels and run folders chosen at enqueue.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 06:00:00.000000
"""

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # PLACEHOLDER (issue 14): fill in or delete (and re-chain) before commit


def downgrade() -> None:
    pass
