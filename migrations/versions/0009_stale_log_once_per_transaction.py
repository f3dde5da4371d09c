"""The reporting triggers log a session once per transaction, on PostgreSQL.

The triggers of 0002 add a row to ``session_stats_stale`` for every row written
to the tables the report cache reads: a stored transcript callback writes three
(its inbox row, its event, its utterance), so three log rows for one session in
one transaction. One is enough. A refresher deletes a log row only once its
transaction has committed, and then reads everything that transaction wrote
(``reports/stats_cache.py``), so the first log row of a transaction covers the
rest of its writes to that session.

The trigger remembers the last session it logged in a setting local to the
transaction (``set_config(..., true)``), which PostgreSQL resets at commit and
rolls back with a rolled-back savepoint, so a log row that was undone is
written again by the next change. A transaction that moves between sessions
logs a session again when it comes back to it: one more row, never one less.
Rows taken away from a session (deleted, or moved to another job) are still
logged each time. Nothing reads the log table itself to decide, so the check
costs the same however long the log grows (an earlier attempt that looked for
the transaction's own log rows grew with the session; bench/README.md).

SQLite keeps its triggers: they run in the writer's own process and a
connection has no setting scoped to a transaction.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SETTING = "webhook_service.stale_job"


def _mark_stale(new_row: str) -> str:
    """The trigger function, with ``new_row``: what it logs of the row an INSERT or UPDATE leaves.

    What it logs of the row an UPDATE moves away or a DELETE removes is the same in both versions.
    """
    return f"""
CREATE OR REPLACE FUNCTION session_stats_mark_stale() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.job_id IS DISTINCT FROM NEW.job_id) THEN
        IF OLD.job_id IS NOT NULL THEN
            INSERT INTO session_stats_stale (job_id, marked_at) VALUES (OLD.job_id, now());
        END IF;
    END IF;
{new_row}
    RETURN NULL;
END
$body$
"""


ONCE_PER_TRANSACTION = _mark_stale(f"""\
    -- The last session this transaction logged: '' or NULL when none.
    IF TG_OP <> 'DELETE' AND NEW.job_id IS NOT NULL
            AND NEW.job_id IS DISTINCT FROM current_setting('{SETTING}', true) THEN
        INSERT INTO session_stats_stale (job_id, marked_at) VALUES (NEW.job_id, now());
        PERFORM set_config('{SETTING}', NEW.job_id, true);
    END IF;""")

# 0002's: every row logged.
EVERY_ROW = _mark_stale("""\
    IF TG_OP <> 'DELETE' THEN
        IF NEW.job_id IS NOT NULL THEN
            INSERT INTO session_stats_stale (job_id, marked_at) VALUES (NEW.job_id, now());
        END IF;
    END IF;""")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ONCE_PER_TRANSACTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(EVERY_ROW)
