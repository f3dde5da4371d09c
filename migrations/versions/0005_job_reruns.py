"""Re-runs of failed jobs: jobs.retries, jobs.cancelled_at and job_sessions.

A failed job can be run again with a fresh Gladia session (`webhook-service
retry`, the API, the dashboard, or once on its own after Gladia ended a session
with audio unsent). The job keeps its id; the sessions it had before are kept
in ``job_sessions`` with how each ended, and their stored results stay (no
longer counted as the job's) until the new session is reconciled, when they
are deleted. ``jobs.cancelled_at`` marks a job an operator cancelled.

The reporting views are recreated with two corrections of
``report_session_summary``: ``billed_s`` counts only the audio that reached
Gladia (none for a job that never had a session, the acknowledged share of a
session that ended early), and ``close_to_final_s`` is never negative (a final
result received before the worker recorded the close counts as 0).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _views_0002():
    """The reporting views' module (revision 0002): its view SQL, which this revision amends."""
    path = Path(__file__).with_name("0002_reporting_views.py")
    spec = importlib.util.spec_from_file_location("_webhook_service_views_0002", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OLD_BILLED = "j.audio_duration_s * j.audio_channels AS billed_s,"
# No session: nothing reached Gladia (0; NULL, as every unknown, when the file's duration is unknown). A job short of its audio (still streaming, or failed; or any job
# whose acknowledged bytes were recorded below the total): the acknowledged share. Else the whole file.
NEW_BILLED = """CASE
        WHEN j.gladia_id IS NULL THEN j.audio_duration_s * 0.0
        WHEN j.bytes_total > 0 AND j.bytes_acked < j.bytes_total
             AND (j.bytes_acked > 0 OR j.state IN ('queued', 'starting', 'streaming', 'failed'))
            THEN j.audio_duration_s * j.audio_channels * (CAST(j.bytes_acked AS DOUBLE PRECISION) / j.bytes_total)
        ELSE j.audio_duration_s * j.audio_channels
    END AS billed_s,"""


def _amended_views(dialect: str) -> dict[str, str]:
    views = _views_0002()
    close = views._seconds("j.stream_closed_at", "r.post_final_received_at", dialect)
    old_close = f"{close} AS close_to_final_s,"
    new_close = f"CASE WHEN {close} < 0 THEN 0.0 ELSE {close} END AS close_to_final_s,"
    amended = {}
    for name, body in views._view_sql(dialect).items():
        if name == "report_session_summary":
            assert OLD_BILLED in body and old_close in body, "report_session_summary changed since 0002"
            body = body.replace(OLD_BILLED, NEW_BILLED).replace(old_close, new_close)
        amended[name] = body
    return amended


def _replace_views(bodies: dict[str, str], names: tuple[str, ...]) -> None:
    for name in reversed(names):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name in names:
        op.execute(f"CREATE VIEW {name} AS {bodies[name]}")


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
    dialect = op.get_bind().dialect.name
    _replace_views(_amended_views(dialect), _views_0002().VIEWS)


def downgrade() -> None:
    views = _views_0002()
    dialect = op.get_bind().dialect.name
    for name in reversed(views.VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index(op.f("ix_job_sessions_job_id"), table_name="job_sessions")
    op.drop_table("job_sessions")
    # Plain ALTER TABLE: a batch copy of the table would break the reporting views that read it.
    op.execute("ALTER TABLE jobs DROP COLUMN cancelled_at")
    op.execute("ALTER TABLE jobs DROP COLUMN retries")
    _replace_views(views._view_sql(dialect), views.VIEWS)
