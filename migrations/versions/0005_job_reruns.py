"""Re-runs of failed jobs: jobs.retries, jobs.cancelled_at and job_sessions.

A failed job can be run again with a fresh Gladia session (`webhook-service
retry`, the API, the dashboard, or once on its own after Gladia ended a session
with audio unsent). The job keeps its id; the sessions it had before are kept
in ``job_sessions`` with how each ended, and their stored results stay (no
longer counted as the job's) until the new session is reconciled, when they
are deleted. ``jobs.cancelled_at`` marks a job an operator cancelled.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "job_sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("gladia_id", sa.String(length=64), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("bytes_acked", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replaced_by", sa.String(length=16), nullable=False),
        sa.Column("results_deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_sessions_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_sessions")),
        sa.UniqueConstraint("gladia_id", name=op.f("uq_job_sessions_gladia_id")),
    )
    op.create_index(op.f("ix_job_sessions_job_id"), "job_sessions", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_job_sessions_job_id"), table_name="job_sessions")
    op.drop_table("job_sessions")
    # Plain ALTER TABLE: a batch copy of the table would break the reporting views that read it.
    op.execute("ALTER TABLE jobs DROP COLUMN cancelled_at")
    op.execute("ALTER TABLE jobs DROP COLUMN retries")
