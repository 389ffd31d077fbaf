"""Multi-GPU (DDP) jobs: how many devices each job needs, and the workers seen.

`kdrun_jobs.gpus` is how many devices the job needs on each machine (recipe.gpus divided by
recipe.nodes; 1 for every job enqueued before) and `kdrun_jobs.nodes` on how many machines
(recipe.nodes), both filtered on by claims. `kdrun_workers` records each worker's device count
while it looks for work, so `status` can say which jobs are wider than any worker and wait for
ever.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("kdrun_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpus", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("nodes", sa.Integer(), nullable=False, server_default="1"))
    op.create_index("ix_kdrun_jobs_gpus", "kdrun_jobs", ["gpus", "state"])
    op.create_table(
        "kdrun_workers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("kdrun_workers")
    op.drop_index("ix_kdrun_jobs_gpus", table_name="kdrun_jobs")
    with op.batch_alter_table("kdrun_jobs", schema=None) as batch_op:
        batch_op.drop_column("nodes")
        batch_op.drop_column("gpus")
