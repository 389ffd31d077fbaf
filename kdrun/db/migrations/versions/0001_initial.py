"""Initial schema: jobs, attempts, results, per-epoch metrics, teacher registry.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 02:08:47.423813
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kdrun_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("grid", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("teacher", sa.String(length=200), nullable=True),
        sa.Column("student", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("depends_on_id", sa.Integer(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.Float(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("heartbeat_at", sa.Float(), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("run_dir", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("kdrun_version", sa.String(length=32), nullable=True),
        sa.Column("torch_version", sa.String(length=32), nullable=True),
        sa.Column("device_name", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["depends_on_id"],
            ["kdrun_jobs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hash"),
    )
    with op.batch_alter_table("kdrun_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_kdrun_jobs_claim", ["state", "priority", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_kdrun_jobs_grid"), ["grid"], unique=False)

    op.create_table(
        "kdrun_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("lease_token", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["kdrun_jobs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lease_token"),
    )
    with op.batch_alter_table("kdrun_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kdrun_attempts_job_id"), ["job_id"], unique=False)

    op.create_table(
        "kdrun_epoch_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=False),
        sa.Column("components", sa.JSON(), nullable=False),
        sa.Column("train_top1", sa.Float(), nullable=False),
        sa.Column("test_top1", sa.Float(), nullable=False),
        sa.Column("test_top5", sa.Float(), nullable=False),
        sa.Column("val_top1", sa.Float(), nullable=True),
        sa.Column("epoch_time_s", sa.Float(), nullable=False),
        sa.Column("images_per_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["kdrun_jobs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "epoch", name="uq_kdrun_epoch_metrics_job_epoch"),
    )
    with op.batch_alter_table("kdrun_epoch_metrics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kdrun_epoch_metrics_job_id"), ["job_id"], unique=False)

    op.create_table(
        "kdrun_results",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("best_top1", sa.Float(), nullable=False),
        sa.Column("best_top5", sa.Float(), nullable=False),
        sa.Column("best_epoch", sa.Integer(), nullable=False),
        sa.Column("last_top1", sa.Float(), nullable=False),
        sa.Column("last_top5", sa.Float(), nullable=False),
        sa.Column("last5_top1", sa.Float(), nullable=False),
        sa.Column("selection_split", sa.String(length=8), nullable=False),
        sa.Column("wall_time_s", sa.Float(), nullable=False),
        sa.Column("images_per_s", sa.Float(), nullable=False),
        sa.Column("teacher_top1", sa.Float(), nullable=True),
        sa.Column("agree_top1", sa.Float(), nullable=True),
        sa.Column("spearman", sa.Float(), nullable=True),
        sa.Column("kendall", sa.Float(), nullable=True),
        sa.Column("kl", sa.Float(), nullable=True),
        sa.Column("checkpoint", sa.String(length=500), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["kdrun_jobs.id"],
        ),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_table(
        "kdrun_teachers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("arch", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("top1", sa.Float(), nullable=True),
        sa.Column("top5", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["kdrun_jobs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("kdrun_teachers")
    op.drop_table("kdrun_results")
    with op.batch_alter_table("kdrun_epoch_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kdrun_epoch_metrics_job_id"))

    op.drop_table("kdrun_epoch_metrics")
    with op.batch_alter_table("kdrun_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kdrun_attempts_job_id"))

    op.drop_table("kdrun_attempts")
    with op.batch_alter_table("kdrun_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kdrun_jobs_grid"))
        batch_op.drop_index("ix_kdrun_jobs_claim")

    op.drop_table("kdrun_jobs")
