"""jobs.retry_at: when a deferred stream task is due back from the broker.

A stream task that must wait (no free session slot, Gladia's 429) goes back to
the broker with a countdown. A worker holds such a task in memory until it is
due, and a worker that dies takes it along (the broker gives it back only after
its visibility timeout, hours later). With the due time in the job's row, the
sweeper sends the task again soon after it is overdue.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE (SQLite 3.35+ and PostgreSQL): a batch copy of the table would break the
    # reporting views that read it.
    op.execute("ALTER TABLE jobs DROP COLUMN retry_at")
