"""Reporting queries: the reports behind `webhook-service report`, `/api/reports` and the dashboard.

Every report reads the SQL views of migration 0002 (documented column by
column in docs/reporting.md), so an analyst's SQL and a report always agree.
The views read utterances, events and callbacks through a per-session cache
(``session_stats``); :func:`refresh_session_stats` brings the cache up to date
for the sessions that triggers marked stale, and every report calls it first.

Why the aggregation of the cache happens in Python: percentiles must be equal
on SQLite (which has no ``percentile_cont``) and PostgreSQL, and float sums must
not depend on a database's summation order. Sorting and ``math.fsum`` over one
session's rows at a time give the same numbers everywhere.

Filters: ``since`` / ``until`` are UTC calendar days, both inclusive, applied to
the day the session was created (the day a callback was received for callbacks
that match no session); ``batch`` is a batch id or name.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable, Optional, Sequence

from sqlalchemy import bindparam, case, delete, func, insert, or_, select, text
from sqlalchemy.orm import Session

from .db import session_scope
from .models import (
    JOB_STATES,
    Batch,
    Event,
    InboxItem,
    Job,
    ReconciliationRun,
    SessionLanguageStats,
    SessionStats,
    SessionStatsStale,
    UTCDateTime,
    Utterance,
    utcnow,
)

REFRESH_CHUNK = 500
LOW_CONFIDENCE_PERCENTILE = 0.10
LATENCY_PERCENTILES = (0.50, 0.90, 0.99)
FLOAT_DIGITS = 6


class ReportError(Exception):
    """Bad report input; ``status`` is the HTTP status it maps to."""

    status = 400


class UnknownReport(ReportError):
    status = 404


class InvalidFilter(ReportError):
    status = 400


# ------------------------------------------------------------------ definitions

@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # text | int | float | ts | day
    description: str


@dataclass(frozen=True)
class Filters:
    since: Optional[date] = None
    until: Optional[date] = None
    batch_id: Optional[str] = None
    batch: Optional[str] = None  # as given by the user, echoed back
    limit: Optional[int] = None  # one page of rows (None: all of them), from ``offset``
    offset: int = 0

    def as_dict(self) -> dict[str, Optional[str]]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "batch": self.batch,
        }


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    description: str
    columns: tuple[Column, ...]
    table_columns: tuple[str, ...]  # the narrower set the terminal table shows
    query: Callable[[Session, Filters], list[dict[str, Any]]] = field(repr=False)
    # Sums in SQL depend on the database's summation order in the last bits;
    # aggregate reports round them away. Row-level reports need no rounding.
    round_floats: bool = True
    # The query applies the filters' page itself (LIMIT/OFFSET); otherwise run_report slices the rows.
    pages_in_sql: bool = True

    def normalize(self, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return normalize_rows(self.columns, raw, round_floats=self.round_floats)


@dataclass
class ReportResult:
    report: Report
    filters: Filters
    rows: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        limit, offset = self.filters.limit, self.filters.offset
        full_page = limit is not None and len(self.rows) == limit
        return {
            "report": self.report.name,
            "title": self.report.title,
            "filters": self.filters.as_dict(),
            "page": {"limit": limit, "offset": offset, "next_offset": offset + limit if full_page else None},
            "columns": [{"name": c.name, "type": c.kind, "description": c.description}
                        for c in self.report.columns],
            "rows": self.rows,
        }


# --------------------------------------------------------------------- filters

def parse_day(value: Optional[str], option: str) -> Optional[date]:
    """'YYYY-MM-DD' -> date; anything else is an :class:`InvalidFilter` naming the option."""
    if value is None or value == "":
        return None
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidFilter(f"invalid {option} {value!r}: expected a UTC date as YYYY-MM-DD") from None


def make_filters(session: Optional[Session], since: Optional[str] = None, until: Optional[str] = None,
                 batch: Optional[str] = None) -> Filters:
    """Validate user-given filters; resolve the batch by id or name."""
    since_day = parse_day(since, "since")
    until_day = parse_day(until, "until")
    if since_day and until_day and since_day > until_day:
        raise InvalidFilter(f"since {since_day} is after until {until_day}")
    batch_id = None
    if batch and session is not None:
        found = session.execute(
            select(Batch.id).where(or_(Batch.id == batch, Batch.name == batch))
        ).scalars().first()
        if found is None:
            raise InvalidFilter(f"no batch with id or name {batch!r}")
        batch_id = found
    return Filters(since=since_day, until=until_day, batch_id=batch_id, batch=batch or None)


def _bounds(filters: Filters) -> tuple[Optional[datetime], Optional[datetime]]:
    start = datetime.combine(filters.since, time(0), tzinfo=timezone.utc) if filters.since else None
    end = (datetime.combine(filters.until + timedelta(days=1), time(0), tzinfo=timezone.utc)
           if filters.until else None)
    return start, end


def _where(filters: Filters, *, has_batch: bool = True, alias: str = "") -> tuple[str, dict[str, Any]]:
    """SQL conditions on a view's ``created_at`` / ``batch_id`` columns, and their parameters."""
    prefix = f"{alias}." if alias else ""
    start, end = _bounds(filters)
    conditions, params = ["1 = 1"], {}
    if start is not None:
        conditions.append(f"{prefix}created_at >= :since_ts")
        params["since_ts"] = start
    if end is not None:
        conditions.append(f"{prefix}created_at < :until_ts")
        params["until_ts"] = end
    if filters.batch_id is not None:
        if has_batch:
            conditions.append(f"{prefix}batch_id = :batch_id")
            params["batch_id"] = filters.batch_id
        else:
            conditions.append("1 = 0")  # rows that belong to no batch
    return " AND ".join(conditions), params


def _query(session: Session, sql: str, params: dict[str, Any], page: Optional[Filters] = None) -> list[dict[str, Any]]:
    """Run ``sql``; ``page``: its rows are the report's, and only the filters' page of them is fetched.

    Every report query ends with an ORDER BY that orders its rows totally, so pages are stable.
    """
    if page is not None and page.limit is not None:
        sql = sql.rstrip() + " LIMIT :page_limit OFFSET :page_offset"
        params = {**params, "page_limit": page.limit, "page_offset": page.offset}
    statement = text(sql)
    for name in ("since_ts", "until_ts"):
        if name in params:
            # UTCDateTime renders the bound the way each database stores timestamps.
            statement = statement.bindparams(bindparam(name, type_=UTCDateTime()))
    result = session.execute(statement, params)
    keys = list(result.keys())
    return [dict(zip(keys, row)) for row in result.fetchall()]  # fetchall: one driver call, not one per row


# --------------------------------------------------------------------- queries
# Each aggregate below is also a view of migration 0002 (without the filters);
# tests check that view and report agree.

def _session_summary(session: Session, filters: Filters) -> list[dict[str, Any]]:
    where, params = _where(filters)
    return _query(session, f"SELECT * FROM report_session_summary WHERE {where} "
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


def _daily_usage(session: Session, filters: Filters) -> list[dict[str, Any]]:
    where, params = _where(filters)
    return _query(session, f"SELECT {DAILY_USAGE_SELECT} FROM report_session_summary WHERE {where} "
                           f"GROUP BY day ORDER BY day", params, page=filters)


def _callback_health(session: Session, filters: Filters) -> list[dict[str, Any]]:
    where, params = _where(filters)
    unmatched_where, _ = _where(filters, has_batch=False)
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
    WHERE {where}
    UNION ALL
    SELECT day, 0, 1, duplicates,
           CASE WHEN status = 'rejected' THEN 1 ELSE 0 END,
           CASE WHEN status = 'failed' THEN 1 ELSE 0 END,
           CASE WHEN status = 'pending' THEN 1 ELSE 0 END,
           1, 0, NULL, NULL, NULL
    FROM report_unmatched_callbacks
    WHERE {unmatched_where}
) rows_by_day
GROUP BY day
ORDER BY day
"""
    return _query(session, sql, params, page=filters)


def _language_mix(session: Session, filters: Filters) -> list[dict[str, Any]]:
    where, params = _where(filters)
    sql = f"""
SELECT
    language,
    count(*) AS sessions,  -- one row per session and language: no DISTINCT (and no sort) needed
    sum(utterances) AS utterances,
    sum(words) AS words,
    sum(speech_s) AS speech_s,
    sum(speech_s) / NULLIF(sum(sum(speech_s)) OVER (), 0) AS speech_share
FROM report_session_languages
WHERE {where}
GROUP BY language
ORDER BY sum(speech_s) DESC, CASE WHEN language IS NULL THEN 1 ELSE 0 END, language
"""
    return _query(session, sql, params, page=filters)


def _error_breakdown(session: Session, filters: Filters) -> list[dict[str, Any]]:
    where, params = _where(filters)
    sql = f"""
SELECT
    source,
    error,
    count(*) AS occurrences,
    count(DISTINCT job_id) AS sessions,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen
FROM report_errors
WHERE {where}
GROUP BY source, error
ORDER BY count(*) DESC, source, error
"""
    return _query(session, sql, params, page=filters)


def percentile_cont(sorted_values: Sequence[float], fraction: float) -> Optional[float]:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the closest ranks."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    low, high = sorted_values[lower], sorted_values[upper]
    return low + (high - low) * (position - lower)


def _latency(session: Session, filters: Filters) -> list[dict[str, Any]]:
    where, params = _where(filters)
    rows = _query(session, f"SELECT day, close_to_final_s, callback_delay_median_s "
                           f"FROM report_session_summary WHERE {where}", params)
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
    result = []
    for day in sorted(sessions):
        final, delay = sorted(finals[day]), sorted(delays[day])
        row: dict[str, Any] = {"day": day, "sessions": sessions[day], "final_results": len(final)}
        for q in LATENCY_PERCENTILES:
            row[f"close_to_final_p{round(q * 100)}_s"] = percentile_cont(final, q)
        row["sessions_with_callbacks"] = len(delay)
        for q in LATENCY_PERCENTILES:
            row[f"callback_delay_p{round(q * 100)}_s"] = percentile_cont(delay, q)
        result.append(row)
    return result


def _cols(*specs: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*spec) for spec in specs)


REPORTS: dict[str, Report] = {}


def _register(report: Report) -> None:
    REPORTS[report.name] = report


_register(Report(
    name="daily_usage",
    title="Daily usage",
    description="Sessions, audio, billed time, speech and errors per UTC day of session creation.",
    columns=_cols(
        ("day", "day", "UTC day the sessions were created (YYYY-MM-DD)."),
        ("sessions", "int", "Sessions (jobs) created that day."),
        ("completed_sessions", "int", "Of which done or reconciled."),
        ("failed_sessions", "int", "Of which failed."),
        ("audio_hours", "float", "Audio submitted, hours (NULL when no duration is known)."),
        ("sessions_without_duration", "int", "Sessions whose audio duration is not known yet."),
        ("billed_hours", "float", "Audio duration x channels, hours."),
        ("gladia_billed_hours", "float", "Billing time Gladia reported, hours (NULL: none reported)."),
        ("speech_s", "float", "Seconds of speech in final utterances (NULL: nothing received)."),
        ("utterances", "int", "Final utterances."),
        ("words", "int", "Words in final utterances."),
        ("errors", "int", "Error records of these sessions (see error_breakdown)."),
    ),
    table_columns=("day", "sessions", "completed_sessions", "failed_sessions", "audio_hours", "billed_hours",
                   "speech_s", "utterances", "words", "errors"),
    query=_daily_usage,
))
_register(Report(
    name="session_summary",
    title="Sessions",
    description="One row per session: state, durations, transcript statistics, callback completeness.",
    columns=_cols(
        ("job_id", "text", "Our job id."),
        ("gladia_id", "text", "Gladia's session id (NULL until the session is created)."),
        ("batch_id", "text", "Batch id."),
        ("batch", "text", "Batch name."),
        ("source_path", "text", "The audio file."),
        ("state", "text", "Job state."),
        ("created_at", "ts", "When the job was submitted (UTC)."),
        ("day", "day", "UTC day of created_at."),
        ("audio_duration_s", "float", "Audio duration measured from the file."),
        ("audio_channels", "int", "Channels of the file."),
        ("billed_s", "float", "audio_duration_s x audio_channels."),
        ("gladia_audio_duration_s", "float", "Audio duration Gladia reported."),
        ("gladia_billing_time_s", "float", "Billing time Gladia reported."),
        ("queue_s", "float", "Queued -> streaming."),
        ("stream_s", "float", "Streaming -> stream closed."),
        ("close_to_final_s", "float", "Stream closed -> post_final_transcript received."),
        ("total_s", "float", "Created -> reconciled (or failed)."),
        ("utterances", "int", "Final utterances."),
        ("words", "int", "Words in final utterances."),
        ("speech_s", "float", "Sum of end - start of final utterances."),
        ("confidence_mean", "float", "Mean confidence of final utterances."),
        ("confidence_p10", "float", "10th percentile (percentile_cont) of utterance confidence."),
        ("languages", "text", "Languages of final utterances, comma-separated."),
        ("events", "int", "Distinct Gladia messages stored."),
        ("callback_events", "int", "Of which first received by callback."),
        ("websocket_events", "int", "Of which first received on the WebSocket."),
        ("reconcile_events", "int", "Of which only found by reconciliation."),
        ("callback_delay_median_s", "float", "Median of received_at - created_at of callback messages."),
        ("callback_delay_max_s", "float", "Maximum of the same delay."),
        ("callbacks_received", "int", "Callback/webhook requests stored in the inbox for the session."),
        ("callback_duplicates", "int", "Redeliveries of those requests."),
        ("callbacks_rejected", "int", "Requests rejected."),
        ("callbacks_failed", "int", "Requests whose processing failed."),
        ("callbacks_pending", "int", "Requests not processed yet."),
        ("reconciliation_runs", "int", "Reconciliation runs."),
        ("reconciliation_outcome", "text", "Outcome of the latest run."),
        ("expected_messages", "int", "Messages Gladia holds for the session (latest run)."),
        ("missing_found", "int", "Messages found missing, summed over runs."),
        ("duplicates_found", "int", "Duplicates found, summed over runs."),
        ("repaired", "int", "Messages repaired, summed over runs."),
        ("callback_completeness", "float", "(expected - missing) / expected."),
        ("gladia_status", "text", "Status from GET /v2/live/:id."),
        ("gladia_error_code", "int", "Error code from GET /v2/live/:id."),
        ("errors", "int", "Error records of the session."),
        ("last_error", "text", "The job's last error."),
    ),
    table_columns=("job_id", "batch", "state", "audio_duration_s", "utterances", "words", "confidence_mean",
                   "confidence_p10", "languages", "close_to_final_s", "callback_completeness"),
    query=_session_summary,
    round_floats=False,
))
_register(Report(
    name="callback_health",
    title="Callback health",
    description="Callbacks received, duplicated, rejected and failed; what reconciliation found missing "
                "and repaired; per UTC day.",
    columns=_cols(
        ("day", "day", "UTC day of session creation (of receipt for callbacks matching no session)."),
        ("sessions", "int", "Sessions created that day."),
        ("callbacks_received", "int", "Distinct callback/webhook requests stored."),
        ("duplicates", "int", "Redeliveries of already stored requests."),
        ("rejected", "int", "Requests rejected (bad token, malformed)."),
        ("failed", "int", "Requests whose processing failed (kept for retry)."),
        ("pending", "int", "Requests not processed yet."),
        ("unmatched", "int", "Requests that match no session."),
        ("reconciled_sessions", "int", "Sessions reconciled at least once."),
        ("expected_messages", "int", "Messages Gladia holds for these sessions."),
        ("missing_found", "int", "Messages reconciliation found missing."),
        ("repaired", "int", "Messages reconciliation repaired."),
        ("callback_completeness", "float", "1 - missing_found / expected_messages."),
    ),
    table_columns=("day", "sessions", "callbacks_received", "duplicates", "rejected", "failed", "unmatched",
                   "missing_found", "repaired", "callback_completeness"),
    query=_callback_health,
))
_register(Report(
    name="language_mix",
    title="Language mix",
    description="Final utterances, words and speech per language.",
    columns=_cols(
        ("language", "text", "Language code (NULL: not reported)."),
        ("sessions", "int", "Sessions with speech in that language."),
        ("utterances", "int", "Final utterances."),
        ("words", "int", "Words."),
        ("speech_s", "float", "Seconds of speech."),
        ("speech_share", "float", "Share of all speech in the selection (0-1)."),
    ),
    table_columns=("language", "sessions", "utterances", "words", "speech_s", "speech_share"),
    query=_language_mix,
))
_register(Report(
    name="error_breakdown",
    title="Error breakdown",
    description="Errors by source and message: failed sessions, Gladia errors, failed or rejected "
                "callbacks, failed reconciliations.",
    columns=_cols(
        ("source", "text", "session, gladia, callback_failed, callback_rejected or reconciliation."),
        ("error", "text", "The message (first 200 characters)."),
        ("occurrences", "int", "How many times."),
        ("sessions", "int", "Distinct sessions affected."),
        ("first_seen", "ts", "First occurrence (UTC)."),
        ("last_seen", "ts", "Last occurrence (UTC)."),
    ),
    table_columns=("source", "error", "occurrences", "sessions", "first_seen", "last_seen"),
    query=_error_breakdown,
))
_register(Report(
    name="latency",
    title="Latency",
    description="Per UTC day: percentiles of stream close -> final result, and of the sessions' median "
                "callback delay (Gladia's created_at -> our received_at).",
    columns=_cols(
        ("day", "day", "UTC day of session creation."),
        ("sessions", "int", "Sessions created that day."),
        ("final_results", "int", "Sessions with both a stream close and a final result."),
        ("close_to_final_p50_s", "float", "Median of close_to_final_s."),
        ("close_to_final_p90_s", "float", "90th percentile."),
        ("close_to_final_p99_s", "float", "99th percentile."),
        ("sessions_with_callbacks", "int", "Sessions with at least one timed callback."),
        ("callback_delay_p50_s", "float", "Median of the sessions' median callback delay."),
        ("callback_delay_p90_s", "float", "90th percentile."),
        ("callback_delay_p99_s", "float", "99th percentile."),
    ),
    table_columns=("day", "sessions", "final_results", "close_to_final_p50_s", "close_to_final_p90_s",
                   "close_to_final_p99_s", "callback_delay_p50_s", "callback_delay_p90_s",
                   "callback_delay_p99_s"),
    query=_latency,
    pages_in_sql=False,  # percentiles per day are computed here from every session of the day
))


# ------------------------------------------------------------------- running

def _to_ts(value: Any) -> str:
    if isinstance(value, str):  # SQLite returns view timestamps as text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    elif value.utcoffset():
        value = value.astimezone(timezone.utc)
    return value.isoformat()


def _to_float(value: Any) -> float:
    return value if type(value) is float else float(value)  # Decimal from PostgreSQL numeric


def _to_rounded(value: Any) -> float:
    return round(float(value), FLOAT_DIGITS)


def _to_int(value: Any) -> int:
    return value if type(value) is int else int(value)


def _to_day(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def _to_text(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "float": _to_float, "int": _to_int, "ts": _to_ts, "day": _to_day, "text": _to_text,
}


def normalize_rows(columns: Sequence[Column], raw: Iterable[dict[str, Any]], *,
                   round_floats: bool = True) -> list[dict[str, Any]]:
    """One JSON-ready representation of the rows, whatever the database returned.

    A hot path for the 10,000-row session summary: one converter per column,
    looked up once.
    """
    if not round_floats:
        # Row-level views return plain floats, ints and text on both databases
        # (their SQL casts; a test checks it): only timestamps need converting.
        stamps = [c.name for c in columns if c.kind == "ts"]
        names = [c.name for c in columns]
        raw = list(raw)
        # Rows of the view itself hold exactly the columns (same keys in every row): reuse them.
        reuse = bool(raw) and list(raw[0]) == names
        out = []
        for row in raw:
            item = row if reuse else {n: row.get(n) for n in names}
            for name in stamps:
                if item[name] is not None:
                    item[name] = _to_ts(item[name])
            out.append(item)
        return out
    converters = [(c.name, _to_rounded if c.kind == "float" else _CONVERTERS[c.kind]) for c in columns]
    out = []
    for row in raw:
        item = {}
        for name, convert in converters:
            value = row.get(name)
            item[name] = None if value is None else convert(value)
        out.append(item)
    return out


def get_report(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        raise UnknownReport(f"unknown report {name!r}; reports: {', '.join(REPORTS)}") from None


MAX_PAGE = 100_000


def parse_page(limit: Optional[str | int], offset: Optional[str | int]) -> tuple[Optional[int], int]:
    """``limit`` (1..MAX_PAGE, None: every row) and ``offset`` (>= 0) as integers, or :class:`InvalidFilter`."""
    def number(value: Optional[str | int], option: str, low: int, high: Optional[int]) -> Optional[int]:
        if value is None or value == "":
            return None
        try:
            parsed = int(value)
        except (TypeError, ValueError):
            raise InvalidFilter(f"invalid {option} {value!r}: expected an integer") from None
        if parsed < low or (high is not None and parsed > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise InvalidFilter(f"invalid {option} {value!r}: must be {bound}")
        return parsed

    page_limit, page_offset = number(limit, "limit", 1, MAX_PAGE), number(offset, "offset", 0, None) or 0
    if page_limit is None and page_offset:
        raise InvalidFilter("offset needs a limit (one page of rows)")
    return page_limit, page_offset


def run_report(database_url: str, name: str, *, since: Optional[str] = None, until: Optional[str] = None,
               batch: Optional[str] = None, limit: Optional[str | int] = None, offset: Optional[str | int] = None,
               refresh: bool = True) -> ReportResult:
    """Validate, bring the statistics cache up to date, and run one report (or one page of its rows)."""
    report = get_report(name)
    page_limit, page_offset = parse_page(limit, offset)
    if batch:
        with session_scope(database_url) as session:
            filters = make_filters(session, since, until, batch)
    else:
        filters = make_filters(None, since, until)
    filters = replace(filters, limit=page_limit, offset=page_offset)
    if refresh:
        refresh_session_stats(database_url)
    with session_scope(database_url) as session:
        raw = report.query(session, filters)
    if not report.pages_in_sql and page_limit is not None:
        raw = raw[page_offset:page_offset + page_limit]
    rows = report.normalize(raw)
    return ReportResult(report=report, filters=filters, rows=rows)


# ----------------------------------------------------------- dashboard helpers

SESSION_PAGE_SIZE = 50


def list_sessions(session: Session, *, state: Optional[str] = None, batch_id: Optional[str] = None,
                  limit: int = SESSION_PAGE_SIZE, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """One page of the session summary, newest first, and the number of matching sessions."""
    conditions, params = ["1 = 1"], {"limit": limit, "offset": offset}
    if state:
        conditions.append("state = :state")
        params["state"] = state
    if batch_id:
        conditions.append("batch_id = :batch_id")
        params["batch_id"] = batch_id
    where = " AND ".join(conditions)
    total = session.execute(text(f"SELECT count(*) FROM jobs WHERE {where}"), params).scalar_one()
    raw = _query(session, f"SELECT * FROM report_session_summary WHERE {where} "
                          f"ORDER BY created_at DESC, job_id LIMIT :limit OFFSET :offset", params)
    return REPORTS["session_summary"].normalize(raw), int(total)


def state_counts(session: Session, batch_id: Optional[str] = None) -> dict[str, int]:
    query = select(Job.state, func.count()).group_by(Job.state)
    if batch_id:
        query = query.where(Job.batch_id == batch_id)
    found = dict(session.execute(query).all())
    return {state: int(found.get(state, 0)) for state in JOB_STATES}


def session_summary_row(session: Session, job_id: str) -> Optional[dict[str, Any]]:
    raw = _query(session, "SELECT * FROM report_session_summary WHERE job_id = :job_id", {"job_id": job_id})
    if not raw:
        return None
    return REPORTS["session_summary"].normalize(raw)[0]


# ------------------------------------------------------- statistics cache

# Any constant: the PostgreSQL advisory lock that serializes refreshers.
REFRESH_LOCK_KEY = 0x5E55_1057
REFRESH_SCAN = 20 * REFRESH_CHUNK


def refresh_session_stats(database_url: str, chunk: int = REFRESH_CHUNK) -> int:
    """Recompute the statistics of every session logged stale; return how many sessions.

    Each round is one transaction: take up to ``chunk`` sessions from the log,
    delete *all* their log rows, then read their rows and rewrite their
    statistics. Every log row deleted belongs to a change committed before the
    deletion, hence visible to the reads that follow it; a change committed
    later leaves its own log row for the next refresh. Refreshers are
    serialized (an advisory lock on PostgreSQL; SQLite's write lock), so two
    of them never rewrite one session at once.
    """
    done = 0
    with session_scope(database_url) as session:
        # Changes logged after this point wait for the next refresh: under a
        # steady stream of callbacks the loop still ends.
        last = session.execute(select(func.max(SessionStatsStale.id))).scalar()
    if last is None:
        return 0
    while True:
        with session_scope(database_url) as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REFRESH_LOCK_KEY})
            logged = session.scalars(
                select(SessionStatsStale.job_id).where(SessionStatsStale.id <= last)
                .order_by(SessionStatsStale.id).limit(REFRESH_SCAN)
            ).all()
            ids = sorted(set(logged))[:chunk]
            if not ids:
                return done
            session.execute(delete(SessionStatsStale).where(SessionStatsStale.job_id.in_(ids)))
            _recompute(session, ids)
        done += len(ids)


def stale_count(session: Session) -> int:
    """Sessions waiting for a refresh."""
    return int(session.execute(select(func.count(func.distinct(SessionStatsStale.job_id)))).scalar_one())


def _recompute(session: Session, ids: Iterable[str]) -> None:
    ids = list(ids)
    session.execute(delete(SessionLanguageStats).where(SessionLanguageStats.job_id.in_(ids)))
    session.execute(delete(SessionStats).where(SessionStats.job_id.in_(ids)))
    existing = set(session.scalars(select(Job.id).where(Job.id.in_(ids))))
    if not existing:
        return
    now = utcnow()
    stats: dict[str, dict[str, Any]] = {
        job_id: {"job_id": job_id, "computed_at": now, "events": 0, "callback_events": 0,
                 "websocket_events": 0, "reconcile_events": 0, "callbacks_received": 0,
                 "callback_duplicates": 0, "callbacks_failed": 0, "callbacks_rejected": 0,
                 "callbacks_pending": 0, "callback_delay_median_s": None, "callback_delay_max_s": None,
                 "reconciliation_runs": 0, "failed_runs": 0, "reconciliation_outcome": None,
                 "expected_messages": None, "missing_found": None, "duplicates_found": None, "repaired": None}
        for job_id in existing
    }
    scope = list(existing)

    # Utterances: per session and language; confidence distribution per session.
    per_language: dict[tuple[str, str], dict[str, Any]] = {}
    confidences: dict[str, list[float]] = defaultdict(list)
    spans: dict[str, list[float]] = defaultdict(list)
    words: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    rows = session.execute(
        select(Utterance.job_id, Utterance.language, Utterance.word_count, Utterance.start_s, Utterance.end_s,
               Utterance.confidence)
        .where(Utterance.is_final.is_(True), Utterance.job_id.in_(scope))
    )
    for job_id, language, word_count, start_s, end_s, confidence in rows:
        span = float(end_s) - float(start_s)
        entry = per_language.setdefault((job_id, language or ""), {"utterances": 0, "words": 0, "spans": []})
        entry["utterances"] += 1
        entry["words"] += word_count or 0
        entry["spans"].append(span)
        counts[job_id] += 1
        words[job_id] += word_count or 0
        spans[job_id].append(span)
        if confidence is not None:
            confidences[job_id].append(float(confidence))
    for job_id in existing:
        values = sorted(confidences.get(job_id, ()))
        languages = sorted({lang for (jid, lang) in per_language if jid == job_id and lang})
        stats[job_id].update(
            utterances=counts.get(job_id, 0),
            words=words.get(job_id, 0),
            speech_s=round(math.fsum(spans.get(job_id, ())), FLOAT_DIGITS),
            confidence_mean=(math.fsum(values) / len(values)) if values else None,
            confidence_p10=percentile_cont(values, LOW_CONFIDENCE_PERCENTILE),
            languages=",".join(languages)[:200] or None,
        )

    # Events: which path delivered each message first, and callback delays.
    event_jobs: set[str] = set()
    for job_id, source, count in session.execute(
        select(Event.job_id, Event.source, func.count()).where(Event.job_id.in_(scope))
        .group_by(Event.job_id, Event.source)
    ):
        event_jobs.add(job_id)
        stats[job_id]["events"] += int(count)
        if source in ("callback", "websocket", "reconcile"):
            stats[job_id][f"{source}_events"] += int(count)
    delays: dict[str, list[float]] = defaultdict(list)
    for job_id, created_at, received_at in session.execute(
        select(Event.job_id, Event.created_at, Event.received_at)
        .where(Event.job_id.in_(scope), Event.source == "callback", Event.created_at.is_not(None))
    ):
        delays[job_id].append(round((received_at - created_at).total_seconds(), 3))
    for job_id, values in delays.items():
        values.sort()
        stats[job_id]["callback_delay_median_s"] = percentile_cont(values, 0.5)
        stats[job_id]["callback_delay_max_s"] = values[-1]

    # Inbox: requests, redeliveries and their processing status.
    inbox_jobs: set[str] = set()
    for job_id, received, duplicates, failed, rejected, pending in session.execute(
        select(InboxItem.job_id, func.count(), func.coalesce(func.sum(InboxItem.duplicates), 0),
               func.sum(case((InboxItem.status == "failed", 1), else_=0)),
               func.sum(case((InboxItem.status == "rejected", 1), else_=0)),
               func.sum(case((InboxItem.status == "pending", 1), else_=0)))
        .where(InboxItem.job_id.in_(scope)).group_by(InboxItem.job_id)
    ):
        inbox_jobs.add(job_id)
        stats[job_id].update(callbacks_received=int(received), callback_duplicates=int(duplicates),
                             callbacks_failed=int(failed), callbacks_rejected=int(rejected),
                             callbacks_pending=int(pending))

    # Reconciliation: the latest run says what Gladia holds; what runs found
    # missing, duplicated and repaired adds up over runs.
    runs: dict[str, list[tuple]] = defaultdict(list)
    for job_id, started_at, run_id, outcome, expected, missing, duplicates, repaired in session.execute(
        select(ReconciliationRun.job_id, ReconciliationRun.started_at, ReconciliationRun.id,
               ReconciliationRun.outcome, ReconciliationRun.expected, ReconciliationRun.missing,
               ReconciliationRun.duplicates, ReconciliationRun.repaired)
        .where(ReconciliationRun.job_id.in_(scope))
    ):
        runs[job_id].append((started_at, run_id, outcome, expected, missing, duplicates, repaired))
    for job_id, items in runs.items():
        latest = max(items, key=lambda item: (item[0], item[1]))
        stats[job_id].update(
            reconciliation_runs=len(items),
            failed_runs=sum(1 for item in items if item[2] == "failed"),
            reconciliation_outcome=latest[2],
            expected_messages=latest[3],
            missing_found=sum(item[4] or 0 for item in items),
            duplicates_found=sum(item[5] or 0 for item in items),
            repaired=sum(item[6] or 0 for item in items),
        )

    # A session with no row in any of these tables has nothing reported: no
    # statistics row, so the views show NULL rather than 0.
    seen = set(counts) | set(event_jobs) | set(inbox_jobs) | set(runs)
    if seen:
        session.execute(insert(SessionStats), [stats[job_id] for job_id in sorted(seen)])
    language_rows = [
        {"job_id": job_id, "language": language, "utterances": entry["utterances"], "words": entry["words"],
         "speech_s": round(math.fsum(entry["spans"]), FLOAT_DIGITS)}
        for (job_id, language), entry in per_language.items()
    ]
    if language_rows:
        session.execute(insert(SessionLanguageStats), language_rows)
