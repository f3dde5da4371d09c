"""Reporting: per-session statistics cache, its staleness triggers, and the report views.

The views are the schema analysts query (docs/reporting.md documents each
column). They read the large tables (utterances, events, callback_inbox,
reconciliation_runs) through ``session_stats`` / ``session_language_stats``, a per-session cache:
triggers log a session in ``session_stats_stale`` whenever one of its rows in
those tables changes, and ``webhook_service.reports.refresh_session_stats``
recomputes exactly those sessions before any report is read. That keeps every
report at a few milliseconds with millions of utterances.

The SQL is the same on SQLite and PostgreSQL except two expressions (the UTC
day of a timestamp, and the seconds between two timestamps) and the trigger
syntax; those are the only dialect branches. The SQL is frozen here on purpose:
a migration must keep meaning what it meant when it ran.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STALE_SOURCES = ("utterances", "events", "callback_inbox", "reconciliation_runs")

VIEWS = (
    "report_session_summary",
    "report_session_languages",
    "report_errors",
    "report_unmatched_callbacks",
    "report_daily_usage",
    "report_callback_health",
    "report_language_mix",
    "report_error_breakdown",
)


def _day(column: str, dialect: str) -> str:
    """The UTC calendar day of a timestamp as 'YYYY-MM-DD' text (same text on both databases)."""
    if dialect == "postgresql":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    return f"date({column})"


def _seconds(start: str, end: str, dialect: str) -> str:
    """Seconds from ``start`` to ``end``, rounded to the millisecond; NULL when either is NULL.

    SQLite has no interval type: julianday() differences carry ~50 µs of
    floating-point error, so both dialects round to 1 ms to give equal results.
    """
    if dialect == "postgresql":
        # date_part() is double precision: cheaper than EXTRACT's numeric over 10,000 rows.
        return f"round(date_part('epoch', {end} - {start}) * 1000) / 1000"
    return f"round((julianday({end}) - julianday({start})) * 86400.0, 3)"


def _view_sql(dialect: str) -> dict[str, str]:
    day = lambda column: _day(column, dialect)  # noqa: E731
    secs = lambda start, end: _seconds(start, end, dialect)  # noqa: E731
    return {
        "report_session_summary": f"""
SELECT
    j.id AS job_id,
    j.gladia_id AS gladia_id,
    j.batch_id AS batch_id,
    b.name AS batch,
    j.source_path AS source_path,
    j.state AS state,
    j.created_at AS created_at,
    {day('j.created_at')} AS day,
    j.audio_duration_s AS audio_duration_s,
    j.audio_channels AS audio_channels,
    j.audio_duration_s * j.audio_channels AS billed_s,
    r.audio_duration_s AS gladia_audio_duration_s,
    r.billing_time_s AS gladia_billing_time_s,
    {secs('j.queued_at', 'j.streaming_at')} AS queue_s,
    {secs('j.streaming_at', 'j.stream_closed_at')} AS stream_s,
    {secs('j.stream_closed_at', 'r.post_final_received_at')} AS close_to_final_s,
    {secs('j.created_at', 'COALESCE(j.reconciled_at, j.failed_at)')} AS total_s,
    s.utterances AS utterances,
    s.words AS words,
    s.speech_s AS speech_s,
    s.confidence_mean AS confidence_mean,
    s.confidence_p10 AS confidence_p10,
    s.languages AS languages,
    s.events AS events,
    s.callback_events AS callback_events,
    s.websocket_events AS websocket_events,
    s.reconcile_events AS reconcile_events,
    s.callback_delay_median_s AS callback_delay_median_s,
    s.callback_delay_max_s AS callback_delay_max_s,
    s.callbacks_received AS callbacks_received,
    s.callback_duplicates AS callback_duplicates,
    s.callbacks_rejected AS callbacks_rejected,
    s.callbacks_failed AS callbacks_failed,
    s.callbacks_pending AS callbacks_pending,
    COALESCE(s.reconciliation_runs, 0) AS reconciliation_runs,
    s.reconciliation_outcome AS reconciliation_outcome,
    s.expected_messages AS expected_messages,
    s.missing_found AS missing_found,
    s.duplicates_found AS duplicates_found,
    s.repaired AS repaired,
    CASE
        WHEN s.expected_messages > 0 AND s.missing_found >= s.expected_messages THEN 0.0
        WHEN s.expected_messages > 0
            THEN CAST(s.expected_messages - s.missing_found AS DOUBLE PRECISION) / s.expected_messages
    END AS callback_completeness,
    r.gladia_status AS gladia_status,
    r.gladia_error_code AS gladia_error_code,
    CASE WHEN j.state = 'failed' THEN 1 ELSE 0 END
        + CASE WHEN r.gladia_status = 'error' OR r.gladia_error_code IS NOT NULL THEN 1 ELSE 0 END
        + COALESCE(s.callbacks_failed, 0) + COALESCE(s.callbacks_rejected, 0)
        + COALESCE(s.failed_runs, 0) AS errors,
    j.last_error AS last_error
FROM jobs j
LEFT JOIN batches b ON b.id = j.batch_id
LEFT JOIN session_stats s ON s.job_id = j.id
LEFT JOIN session_results r ON r.job_id = j.id
""",
        "report_session_languages": f"""
SELECT
    j.id AS job_id,
    j.batch_id AS batch_id,
    j.created_at AS created_at,
    {day('j.created_at')} AS day,
    NULLIF(l.language, '') AS language,
    l.utterances AS utterances,
    l.words AS words,
    l.speech_s AS speech_s
FROM session_language_stats l
JOIN jobs j ON j.id = l.job_id
""",
        "report_errors": f"""
SELECT 'session' AS source, j.id AS job_id, j.batch_id AS batch_id, j.created_at AS created_at,
       {day('j.created_at')} AS day, COALESCE(j.failed_at, j.updated_at) AS occurred_at,
       substr(COALESCE(j.last_error, '(no message)'), 1, 200) AS error
FROM jobs j
WHERE j.state = 'failed'
UNION ALL
SELECT 'gladia', j.id, j.batch_id, j.created_at, {day('j.created_at')},
       COALESCE(r.gladia_completed_at, r.updated_at),
       CASE WHEN r.gladia_error_code IS NULL THEN 'Gladia status error'
            ELSE 'Gladia error code ' || CAST(r.gladia_error_code AS VARCHAR(12)) END
FROM session_results r
JOIN jobs j ON j.id = r.job_id
WHERE r.gladia_status = 'error' OR r.gladia_error_code IS NOT NULL
UNION ALL
SELECT 'callback_' || i.status, i.job_id, j.batch_id, COALESCE(j.created_at, i.received_at),
       {day('COALESCE(j.created_at, i.received_at)')}, i.received_at,
       substr(COALESCE(i.error, '(no message)'), 1, 200)
FROM callback_inbox i
LEFT JOIN jobs j ON j.id = i.job_id
WHERE i.status IN ('failed', 'rejected')
UNION ALL
SELECT 'reconciliation', rr.job_id, j.batch_id, COALESCE(j.created_at, rr.started_at),
       {day('COALESCE(j.created_at, rr.started_at)')}, rr.started_at,
       substr(COALESCE(rr.reason, '(no message)'), 1, 200)
FROM reconciliation_runs rr
LEFT JOIN jobs j ON j.id = rr.job_id
WHERE rr.outcome = 'failed'
""",
        "report_unmatched_callbacks": f"""
SELECT
    i.id AS inbox_id,
    i.received_at AS created_at,
    {day('i.received_at')} AS day,
    i.status AS status,
    i.duplicates AS duplicates
FROM callback_inbox i
WHERE i.job_id IS NULL
""",
        "report_daily_usage": """
SELECT
    day,
    count(*) AS sessions,
    sum(CASE WHEN state IN ('done', 'reconciled') THEN 1 ELSE 0 END) AS completed_sessions,
    sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed_sessions,
    sum(audio_duration_s) / 3600.0 AS audio_hours,
    sum(CASE WHEN audio_duration_s IS NULL THEN 1 ELSE 0 END) AS sessions_without_duration,
    sum(billed_s) / 3600.0 AS billed_hours,
    sum(gladia_billing_time_s) / 3600.0 AS gladia_billed_hours,
    sum(speech_s) AS speech_s,
    sum(utterances) AS utterances,
    sum(words) AS words,
    sum(errors) AS errors
FROM report_session_summary
GROUP BY day
""",
        "report_callback_health": """
SELECT
    day,
    sum(sessions) AS sessions,
    sum(received) AS callbacks_received,
    sum(duplicates) AS duplicates,
    sum(rejected) AS rejected,
    sum(failed) AS failed,
    sum(pending) AS pending,
    sum(unmatched) AS unmatched,
    sum(reconciled_sessions) AS reconciled_sessions,
    sum(expected) AS expected_messages,
    sum(missing) AS missing_found,
    sum(repaired) AS repaired,
    CASE WHEN sum(expected) > 0
        THEN 1.0 - CAST(sum(missing) AS DOUBLE PRECISION) / sum(expected) END AS callback_completeness
FROM (
    SELECT day, 1 AS sessions, callbacks_received AS received, callback_duplicates AS duplicates,
           callbacks_rejected AS rejected, callbacks_failed AS failed, callbacks_pending AS pending,
           0 AS unmatched, CASE WHEN reconciliation_runs > 0 THEN 1 ELSE 0 END AS reconciled_sessions,
           expected_messages AS expected, missing_found AS missing, repaired AS repaired
    FROM report_session_summary
    UNION ALL
    SELECT day, 0, 1, duplicates,
           CASE WHEN status = 'rejected' THEN 1 ELSE 0 END,
           CASE WHEN status = 'failed' THEN 1 ELSE 0 END,
           CASE WHEN status = 'pending' THEN 1 ELSE 0 END,
           1, 0, NULL, NULL, NULL
    FROM report_unmatched_callbacks
) rows_by_day
GROUP BY day
""",
        "report_language_mix": """
SELECT
    language,
    count(*) AS sessions,  -- one row per session and language: no DISTINCT (and no sort) needed
    sum(utterances) AS utterances,
    sum(words) AS words,
    sum(speech_s) AS speech_s,
    sum(speech_s) / NULLIF(sum(sum(speech_s)) OVER (), 0) AS speech_share
FROM report_session_languages
GROUP BY language
""",
        "report_error_breakdown": """
SELECT
    source,
    error,
    count(*) AS occurrences,
    count(DISTINCT job_id) AS sessions,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen
FROM report_errors
GROUP BY source, error
""",
    }


_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


def _create_triggers(dialect: str) -> None:
    """Log the session of every inserted, updated or deleted row of the cached tables.

    A plain INSERT into an append-only log: no upsert, so no row lock that
    two writers of the same session could wait for (no new deadlocks in the
    receiver's or the worker's transactions).
    """
    if dialect == "postgresql":
        op.execute("""
CREATE FUNCTION session_stats_mark_stale() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.job_id IS DISTINCT FROM NEW.job_id) THEN
        IF OLD.job_id IS NOT NULL THEN
            INSERT INTO session_stats_stale (job_id, marked_at) VALUES (OLD.job_id, now());
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.job_id IS NOT NULL THEN
            INSERT INTO session_stats_stale (job_id, marked_at) VALUES (NEW.job_id, now());
        END IF;
    END IF;
    RETURN NULL;
END
$body$
""")
        for table in STALE_SOURCES:
            op.execute(f"CREATE TRIGGER trg_{table}_stats_stale AFTER INSERT OR UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION session_stats_mark_stale()")
        return
    mark = ("INSERT INTO session_stats_stale (job_id, marked_at) SELECT {ref}.job_id, " + _SQLITE_NOW
            + " WHERE {ref}.job_id IS NOT NULL;")
    for table in STALE_SOURCES:
        op.execute(f"CREATE TRIGGER trg_{table}_stats_stale_insert AFTER INSERT ON {table} BEGIN "
                   f"{mark.format(ref='NEW')} END")
        op.execute(f"CREATE TRIGGER trg_{table}_stats_stale_update AFTER UPDATE ON {table} BEGIN "
                   f"{mark.format(ref='OLD')} {mark.format(ref='NEW')} END")
        op.execute(f"CREATE TRIGGER trg_{table}_stats_stale_delete AFTER DELETE ON {table} BEGIN "
                   f"{mark.format(ref='OLD')} END")


def _drop_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        for table in STALE_SOURCES:
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_stats_stale ON {table}")
        op.execute("DROP FUNCTION IF EXISTS session_stats_mark_stale()")
        return
    for table in STALE_SOURCES:
        for when in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_stats_stale_{when}")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "session_stats",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("utterances", sa.Integer(), nullable=False),
        sa.Column("words", sa.Integer(), nullable=False),
        sa.Column("speech_s", sa.Float(), nullable=False),
        sa.Column("confidence_mean", sa.Float(), nullable=True),
        sa.Column("confidence_p10", sa.Float(), nullable=True),
        sa.Column("languages", sa.String(length=200), nullable=True),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("callback_events", sa.Integer(), nullable=False),
        sa.Column("websocket_events", sa.Integer(), nullable=False),
        sa.Column("reconcile_events", sa.Integer(), nullable=False),
        sa.Column("callback_delay_median_s", sa.Float(), nullable=True),
        sa.Column("callback_delay_max_s", sa.Float(), nullable=True),
        sa.Column("callbacks_received", sa.Integer(), nullable=False),
        sa.Column("callback_duplicates", sa.Integer(), nullable=False),
        sa.Column("callbacks_failed", sa.Integer(), nullable=False),
        sa.Column("callbacks_rejected", sa.Integer(), nullable=False),
        sa.Column("callbacks_pending", sa.Integer(), nullable=False),
        sa.Column("reconciliation_runs", sa.Integer(), nullable=False),
        sa.Column("failed_runs", sa.Integer(), nullable=False),
        sa.Column("reconciliation_outcome", sa.String(length=16), nullable=True),
        sa.Column("expected_messages", sa.Integer(), nullable=True),
        sa.Column("missing_found", sa.Integer(), nullable=True),
        sa.Column("duplicates_found", sa.Integer(), nullable=True),
        sa.Column("repaired", sa.Integer(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_session_stats_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_session_stats")),
    )
    op.create_table(
        "session_language_stats",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("utterances", sa.Integer(), nullable=False),
        sa.Column("words", sa.Integer(), nullable=False),
        sa.Column("speech_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_session_language_stats_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "language", name=op.f("pk_session_language_stats")),
    )
    op.create_table(
        "session_stats_stale",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_stats_stale")),
    )
    op.create_index(op.f("ix_session_stats_stale_job_id"), "session_stats_stale", ["job_id"], unique=False)
    _create_triggers(dialect)
    # Sessions that already have rows get their statistics at the first report.
    op.execute("INSERT INTO session_stats_stale (job_id) "
               + " UNION ".join(f"SELECT DISTINCT job_id FROM {table} WHERE job_id IS NOT NULL"
                                for table in STALE_SOURCES))
    for name, body in _view_sql(dialect).items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    _drop_triggers(dialect)
    op.drop_index(op.f("ix_session_stats_stale_job_id"), table_name="session_stats_stale")
    op.drop_table("session_stats_stale")
    op.drop_table("session_language_stats")
    op.drop_table("session_stats")
