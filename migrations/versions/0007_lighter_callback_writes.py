"""Lighter callback writes: no index that no query needs on the tables every callback writes.

* ``ix_events_gladia_id_type``: every query by session uses the unique
  ``(gladia_id, message_key)`` index, whose first column is the same;
* ``ix_callback_inbox_received_at``: no query reads the inbox by time alone
  (retention reads ``ix_callback_inbox_body_kept``, the sweeper and the
  gauges the status index);
* ``ix_callback_inbox_status_received_at`` on PostgreSQL now holds only the
  rows that are not ``processed``: the sweeper, the gauges and the error
  report look only for ``pending``, ``failed`` and ``rejected`` rows, nearly
  none of a healthy inbox. It is built ``CONCURRENTLY``, so that the
  receiver keeps writing while it is built on a large inbox. SQLite keeps the
  full index: its planner uses a partial index only for its very predicate.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STATUS_INDEX = "ix_callback_inbox_status_received_at"


def upgrade() -> None:
    op.drop_index("ix_events_gladia_id_type", table_name="events")
    op.drop_index("ix_callback_inbox_received_at", table_name="callback_inbox")
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(STATUS_INDEX, table_name="callback_inbox", postgresql_concurrently=True)
            op.create_index(STATUS_INDEX, "callback_inbox", ["status", "received_at"],
                            postgresql_where=sa.text("status <> 'processed'"), postgresql_concurrently=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(STATUS_INDEX, table_name="callback_inbox", postgresql_concurrently=True)
            op.create_index(STATUS_INDEX, "callback_inbox", ["status", "received_at"], postgresql_concurrently=True)
    op.create_index("ix_callback_inbox_received_at", "callback_inbox", ["received_at"])
    op.create_index("ix_events_gladia_id_type", "events", ["gladia_id", "type"])
