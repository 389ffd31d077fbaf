"""SQLAlchemy 2 models: jobs, their attempts, results, per-epoch metrics, teacher registry.

Timestamps that order or fence work (lease expiry, back-off) are float seconds from the
*database* clock (see `kdrun.db.clock`), so workers on machines with skewed clocks agree.
Human-facing timestamps (created/started/finished) are stored the same way for uniformity.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class Job(Base):
    __tablename__ = "kdrun_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    grid: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "teacher" (train alone) or "student"
    dataset: Mapped[str] = mapped_column(String(64))
    teacher: Mapped[str | None] = mapped_column(String(200))  # teacher name, None for vanilla
    student: Mapped[str] = mapped_column(String(64))  # the architecture this job trains
    method: Mapped[str] = mapped_column(String(100))
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    depends_on_id: Mapped[int | None] = mapped_column(ForeignKey("kdrun_jobs.id"))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Devices the job needs at once on each machine (recipe.gpus / recipe.nodes; its DDP world
    # size on one machine) and on how many machines (recipe.nodes): claims filter on both.
    gpus: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    not_before: Mapped[float] = mapped_column(Float, default=0.0)  # back-off after a failure
    # Times given back unfinished without using an attempt (stop, time limit, pre-emption).
    handbacks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(200))
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    epoch: Mapped[int] = mapped_column(Integer, default=0)  # epochs completed (progress)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # loss, img/s, eta for status
    error: Mapped[str | None] = mapped_column(Text)
    notice: Mapped[str | None] = mapped_column(Text)  # e.g. a checkpoint fallback on resume
    run_dir: Mapped[str | None] = mapped_column(String(500))
    label: Mapped[str | None] = mapped_column(String(500))  # kdrun.labels, set at enqueue
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    kdrun_version: Mapped[str | None] = mapped_column(String(32))
    torch_version: Mapped[str | None] = mapped_column(String(32))
    device_name: Mapped[str | None] = mapped_column(String(200))

    result: Mapped[Result | None] = relationship(back_populates="job", uselist=False)

    __table_args__ = (Index("ix_kdrun_jobs_claim", "state", "priority", "id"),
                      Index("ix_kdrun_jobs_gpus", "gpus", "state"))  # wide jobs, found fast


class Attempt(Base):
    """One claim of a job by a worker; the audit trail for exactly-once checks."""

    __tablename__ = "kdrun_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("kdrun_jobs.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(200))
    lease_token: Mapped[str] = mapped_column(String(64), unique=True)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(16))  # succeeded/failed/requeued/expired
    error: Mapped[str | None] = mapped_column(Text)


class Result(Base):
    __tablename__ = "kdrun_results"

    job_id: Mapped[int] = mapped_column(ForeignKey("kdrun_jobs.id"), primary_key=True)
    best_top1: Mapped[float] = mapped_column(Float)
    best_top5: Mapped[float] = mapped_column(Float)
    best_epoch: Mapped[int] = mapped_column(Integer)
    last_top1: Mapped[float] = mapped_column(Float)
    last_top5: Mapped[float] = mapped_column(Float)
    last5_top1: Mapped[float] = mapped_column(Float)  # mean test top-1 of the last five epochs
    selection_split: Mapped[str] = mapped_column(String(8), default="test")  # picks best epoch
    wall_time_s: Mapped[float] = mapped_column(Float)
    images_per_s: Mapped[float] = mapped_column(Float)
    teacher_top1: Mapped[float | None] = mapped_column(Float)
    # Student-teacher agreement on the test set, measured in the final evaluation.
    agree_top1: Mapped[float | None] = mapped_column(Float)
    spearman: Mapped[float | None] = mapped_column(Float)
    kendall: Mapped[float | None] = mapped_column(Float)
    kl: Mapped[float | None] = mapped_column(Float)
    checkpoint: Mapped[str | None] = mapped_column(String(500))
    sha256: Mapped[str | None] = mapped_column(String(64))
    # How it ran, as resolved on its device (kdrun.train.fast, kdrun.train.teacher_cache):
    # {"device", "amp", "channels_last", "compile", "loader", "teacher", "teacher_note"}.
    switches: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    job: Mapped[Job] = relationship(back_populates="result")


class EpochMetric(Base):
    __tablename__ = "kdrun_epoch_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("kdrun_jobs.id"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)  # 1-based
    lr: Mapped[float] = mapped_column(Float)
    train_loss: Mapped[float] = mapped_column(Float)
    components: Mapped[dict[str, Any]] = mapped_column(JSON)  # per loss component means
    train_top1: Mapped[float] = mapped_column(Float)
    test_top1: Mapped[float] = mapped_column(Float)
    test_top5: Mapped[float] = mapped_column(Float)
    val_top1: Mapped[float | None] = mapped_column(Float)
    epoch_time_s: Mapped[float] = mapped_column(Float)
    images_per_s: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_kdrun_epoch_metrics_job_epoch"),)


class CheckpointFile(Base):
    """A checkpoint the lease holder recorded: which file a resume may load, and its digest
    (kdrun.checkpoints explains why the database, not the file name, says what is current)."""

    __tablename__ = "kdrun_checkpoint_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("kdrun_jobs.id"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))  # relative to the runs directory
    sha256: Mapped[str] = mapped_column(String(64))
    lease_token: Mapped[str] = mapped_column(String(64))  # the attempt that wrote it
    created_at: Mapped[float] = mapped_column(Float)


class TrackerRun(Base):
    """A job's run in an experiment tracker (kdrun.trackers): W&B run id or TensorBoard log
    directory, kept so a resumed job continues the same run."""

    __tablename__ = "kdrun_tracker_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("kdrun_jobs.id"), index=True)
    tracker: Mapped[str] = mapped_column(String(32))  # "tensorboard" | "wandb"
    run_id: Mapped[str] = mapped_column(String(500))  # W&B id; TensorBoard: dir under runs/
    name: Mapped[str | None] = mapped_column(String(500))  # the job's label
    project: Mapped[str | None] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(String(1000))
    path: Mapped[str | None] = mapped_column(String(1000))  # local files, as the worker saw it
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("job_id", "tracker",
                                       name="uq_kdrun_tracker_runs_job_tracker"),)


class Pilot(Base):
    """A Slurm job that runs a kdrun worker (`kdrun slurm submit`): one row per array task,
    written at submission and updated by the worker inside it (kdrun.slurm.pilots)."""

    __tablename__ = "kdrun_pilots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slurm_id: Mapped[str] = mapped_column(String(64), unique=True)  # "1234_0": array job_task
    array_id: Mapped[str] = mapped_column(String(32), index=True)  # the sbatch submission
    state: Mapped[str] = mapped_column(String(16))  # submitted, running, draining, exited
    worker: Mapped[str | None] = mapped_column(String(200))  # host:pid of the worker in it
    script: Mapped[str | None] = mapped_column(String(500))  # the sbatch script
    note: Mapped[str | None] = mapped_column(Text)  # why it exited
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)


class WorkerSeen(Base):
    """A worker process and how many devices (units) it has, refreshed while it looks for
    work: `status` names the jobs wider than any worker seen lately, which wait for ever."""

    __tablename__ = "kdrun_workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid
    units: Mapped[int] = mapped_column(Integer)  # GPUs, or CPU slots on a CPU worker
    seen_at: Mapped[float] = mapped_column(Float)


class Teacher(Base):
    """Registered teacher checkpoints: imported files and teachers kdrun trained itself."""

    __tablename__ = "kdrun_teachers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    arch: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(64))
    num_classes: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    top1: Mapped[float | None] = mapped_column(Float)
    top5: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))  # "import" or "trained"
    job_id: Mapped[int | None] = mapped_column(ForeignKey("kdrun_jobs.id"))
    created_at: Mapped[float] = mapped_column(Float)
