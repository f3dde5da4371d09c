"""Deletion and retention: what was erased, when and by whom; which jobs lost their content.

``jobs.content_deleted_at`` marks a job whose transcript and results were erased (by an operator or by
retention): the job row itself stays, with its ids, states, timestamps and durations, so usage and
billing reports still count the session; its ``session_stats`` row is frozen at its last value.
``jobs.gladia_deleted_at`` records that Gladia's copy was deleted (``DELETE /v2/live/:id``).
``deletion_audit`` has one row per erasure: who, when, what (ids and row counts, never content).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("content_deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("gladia_deleted_at", sa.DateTime(timezone=True), nullable=True))
    # INBOX_RETENTION_DAYS looks for old requests that still hold a body: without this index each sweep
    # would read every request ever blanked again.
    op.create_index("ix_callback_inbox_body_kept", "callback_inbox", ["received_at"],
                    sqlite_where=sa.text("length(body) > 0"), postgresql_where=sa.text("length(body) > 0"))
    op.create_table(
        "deletion_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("gladia_id", sa.String(length=64), nullable=True),
        sa.Column("rows", JSON, nullable=False),
        sa.Column("gladia", sa.String(length=200), nullable=True),
        sa.CheckConstraint("action IN ('delete','retention','inbox_retention','gladia_after_reconcile')",
                           name=op.f("ck_deletion_audit_action_valid")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deletion_audit")),
    )
    op.create_index("ix_deletion_audit_at", "deletion_audit", ["at"])
    op.create_index("ix_deletion_audit_job_id", "deletion_audit", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_deletion_audit_job_id", table_name="deletion_audit")
    op.drop_index("ix_deletion_audit_at", table_name="deletion_audit")
    op.drop_table("deletion_audit")
    op.drop_index("ix_callback_inbox_body_kept", table_name="callback_inbox")
    # Plain ALTER TABLE: a batch copy of the table would break the reporting views that read it.
    op.execute("ALTER TABLE jobs DROP COLUMN gladia_deleted_at")
    op.execute("ALTER TABLE jobs DROP COLUMN content_deleted_at")
