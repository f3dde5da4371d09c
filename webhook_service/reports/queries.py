"""The reports' queries: one function per report, each over the views of migration 0002.

Each aggregate below is also a view of migration 0002 (without the filters);
tests check that view and report agree. Latency's percentiles are computed in
Python (see :mod:`.percentiles`), one day's sessions at a time.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from .filters import Filters
from .percentiles import LATENCY_PERCENTILES, percentile_cont
from .sql import fetch, where


def session_summary(session: Session, filters: Filters) -> list[dict[str, Any]]:
    condition, params = where(filters)
    return fetch(session, f"SELECT * FROM report_session_summary WHERE {condition} "
                          f"ORDER BY created_at DESC, job_id", params, page=filters)


DAILY_USAGE_SELECT = """
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
"""


def daily_usage(session: Session, filters: Filters) -> list[dict[str, Any]]:
    condition, params = where(filters)
    return fetch(session, f"SELECT {DAILY_USAGE_SELECT} FROM report_session_summary WHERE {condition} "
                          f"GROUP BY day ORDER BY day", params, page=filters)


def callback_health(session: Session, filters: Filters) -> list[dict[str, Any]]:
    condition, params = where(filters)
    unmatched_condition, _ = where(filters, has_batch=False)
    sql = f"""
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
    WHERE {condition}
    UNION ALL
    SELECT day, 0, 1, duplicates,
           CASE WHEN status = 'rejected' THEN 1 ELSE 0 END,
           CASE WHEN status = 'failed' THEN 1 ELSE 0 END,
           CASE WHEN status = 'pending' THEN 1 ELSE 0 END,
           1, 0, NULL, NULL, NULL
    FROM report_unmatched_callbacks
    WHERE {unmatched_condition}
) rows_by_day
GROUP BY day
ORDER BY day
"""
    return fetch(session, sql, params, page=filters)


def language_mix(session: Session, filters: Filters) -> list[dict[str, Any]]:
    condition, params = where(filters)
    sql = f"""
SELECT
    language,
    count(*) AS sessions,  -- one row per session and language: no DISTINCT (and no sort) needed
    sum(utterances) AS utterances,
    sum(words) AS words,
    sum(speech_s) AS speech_s,
    sum(speech_s) / NULLIF(sum(sum(speech_s)) OVER (), 0) AS speech_share
FROM report_session_languages
WHERE {condition}
GROUP BY language
ORDER BY sum(speech_s) DESC, CASE WHEN language IS NULL THEN 1 ELSE 0 END, language
"""
    return fetch(session, sql, params, page=filters)


def error_breakdown(session: Session, filters: Filters) -> list[dict[str, Any]]:
    condition, params = where(filters)
    sql = f"""
SELECT
    source,
    error,
    count(*) AS occurrences,
    count(DISTINCT job_id) AS sessions,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen
FROM report_errors
WHERE {condition}
GROUP BY source, error
ORDER BY count(*) DESC, source, error
"""
    return fetch(session, sql, params, page=filters)


def latency(session: Session, filters: Filters) -> list[dict[str, Any]]:
    condition, params = where(filters)
    rows = fetch(session, f"SELECT day, close_to_final_s, callback_delay_median_s "
                          f"FROM report_session_summary WHERE {condition}", params)
    sessions: dict[str, int] = defaultdict(int)
    finals: dict[str, list[float]] = defaultdict(list)
    delays: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        day = row["day"]
        sessions[day] += 1
        if row["close_to_final_s"] is not None:
            finals[day].append(float(row["close_to_final_s"]))
        if row["callback_delay_median_s"] is not None:
            delays[day].append(float(row["callback_delay_median_s"]))
    return [_latency_row(day, sessions[day], sorted(finals[day]), sorted(delays[day])) for day in sorted(sessions)]


def _latency_row(day: str, sessions: int, final: list[float], delay: list[float]) -> dict[str, Any]:
    row: dict[str, Any] = {"day": day, "sessions": sessions, "final_results": len(final)}
    for q in LATENCY_PERCENTILES:
        row[f"close_to_final_p{round(q * 100)}_s"] = percentile_cont(final, q)
    row["sessions_with_callbacks"] = len(delay)
    for q in LATENCY_PERCENTILES:
        row[f"callback_delay_p{round(q * 100)}_s"] = percentile_cont(delay, q)
    return row
