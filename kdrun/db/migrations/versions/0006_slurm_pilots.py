"""Slurm pilots, and jobs handed back at a time limit or pre-emption.

`kdrun_pilots`: one row per Slurm array task running a worker (kdrun.slurm). `handbacks`
counts the times a job went back to the queue unfinished without using an attempt, so one
that can never finish inside a time limit is failed instead of looping forever.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kdrun_pilots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slurm_id", sa.String(length=64), nullable=False),
        sa.Column("array_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("script", sa.String(length=500), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("submitted_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slurm_id"),
    )
    op.create_index("ix_kdrun_pilots_array_id", "kdrun_pilots", ["array_id"])
    with op.batch_alter_table("kdrun_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handbacks", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("kdrun_jobs", schema=None) as batch_op:
        batch_op.drop_column("handbacks")
    op.drop_index("ix_kdrun_pilots_array_id", table_name="kdrun_pilots")
    op.drop_table("kdrun_pilots")
