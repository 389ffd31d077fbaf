"""Fenced checkpoint files: each acknowledged epoch's checkpoint, its epoch and sha256, recorded
by the lease holder (see kdrun.checkpoints); and a job's notice (a checkpoint fallback).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kdrun_checkpoint_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("lease_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["kdrun_jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_kdrun_checkpoint_files_job_id", "kdrun_checkpoint_files", ["job_id"])
    with op.batch_alter_table("kdrun_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notice", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kdrun_jobs", schema=None) as batch_op:
        batch_op.drop_column("notice")
    op.drop_index("ix_kdrun_checkpoint_files_job_id", table_name="kdrun_checkpoint_files")
    op.drop_table("kdrun_checkpoint_files")
