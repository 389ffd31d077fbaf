"""Job labels chosen at enqueue: `resnet14->resnet8 kd(T=2) s0` (kdrun.labels), so every
view of a job names its distinguishing hyperparameters without re-reading the grid. Jobs
already queued get theirs here (from the settings that differ between them; which values
their grid wrote out is not known any more).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("kdrun_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label", sa.String(length=500), nullable=True))
    from kdrun.labels import assign
    from kdrun.spec import JobSpec

    jobs = sa.table("kdrun_jobs", sa.column("id", sa.Integer), sa.column("kind", sa.String),
                    sa.column("config", sa.JSON), sa.column("label", sa.String))
    bind = op.get_bind()
    rows = bind.execute(sa.select(jobs.c.id, jobs.c.kind, jobs.c.config)).all()
    specs = [JobSpec(kind, config) for _, kind, config in rows]
    assign(specs)
    for (job_id, _, _), sp in zip(rows, specs, strict=True):
        bind.execute(sa.update(jobs).where(jobs.c.id == job_id).values(label=sp.label))


def downgrade() -> None:
    with op.batch_alter_table("kdrun_jobs", schema=None) as batch_op:
        batch_op.drop_column("label")
