"""Tracker runs: the TensorBoard / W&B run of each job, so a resumed job continues it and
`kdrun show` can point to it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kdrun_tracker_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("tracker", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=500), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=True),
        sa.Column("project", sa.String(length=200), nullable=True),
        sa.Column("url", sa.String(length=1000), nullable=True),
        sa.Column("path", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["kdrun_jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "tracker", name="uq_kdrun_tracker_runs_job_tracker"),
    )
    op.create_index("ix_kdrun_tracker_runs_job_id", "kdrun_tracker_runs", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_kdrun_tracker_runs_job_id", table_name="kdrun_tracker_runs")
    op.drop_table("kdrun_tracker_runs")
