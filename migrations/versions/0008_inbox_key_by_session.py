"""The inbox's unique key led by the session, on PostgreSQL.

A delivery is known by its ``dedupe_key``, the sha256 of its body. A hash is
random, so on a large inbox each callback inserted its key into a leaf of the
unique index that no other callback had changed since the last checkpoint,
and PostgreSQL logged that leaf whole (a full-page image, 8 KiB) with the
change: with 10 million rows the WAL per callback doubled. The unique index
``(coalesce(gladia_id, ''), dedupe_key)`` replaces the constraint on the key
alone: a session's callbacks now write the same few leaves, as they do in the
other indexes of the inbox. Both refuse the same rows, since the body a key
hashes names its session (rows without one share the empty session).

It is built ``CONCURRENTLY`` before the constraint is dropped, so that the
receiver keeps writing, and deduplicating, while it is built. Receivers of an
earlier version name the dropped constraint in their ``ON CONFLICT``: they
must be stopped before this runs (README, "Procfile"). SQLite keeps the
constraint its table was created with (dropping it would rebuild the table).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEX = "uq_callback_inbox_session_dedupe_key"  # models.INBOX_KEY_INDEX, as this revision made it
CONSTRAINT = "uq_callback_inbox_dedupe_key"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    # A build interrupted CONCURRENTLY leaves an invalid index behind: built again, or kept if a run completed it.
    valid = bind.execute(sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
                         {"name": INDEX}).scalar()
    with op.get_context().autocommit_block():
        if valid is False:
            op.drop_index(INDEX, table_name="callback_inbox", postgresql_concurrently=True)
        if not valid:
            op.create_index(INDEX, "callback_inbox", [sa.text("(coalesce(gladia_id, ''))"), "dedupe_key"],
                            unique=True, postgresql_concurrently=True)
    op.drop_constraint(CONSTRAINT, "callback_inbox", type_="unique")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_unique_constraint(CONSTRAINT, "callback_inbox", ["dedupe_key"])
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="callback_inbox", postgresql_concurrently=True)
