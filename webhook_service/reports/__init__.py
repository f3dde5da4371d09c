"""Reporting: the reports behind `webhook-service report`, `/api/reports` and the dashboard.

One concern per module:

- :mod:`.catalogue`: every report's declaration (name, documented columns, query);
- :mod:`.queries`: the report queries over the SQL views of migration 0002;
- :mod:`.filters`: the user's filters and page, validated;
- :mod:`.sql`: the filters as SQL conditions, the page as LIMIT/OFFSET;
- :mod:`.rows`: one JSON-ready representation of rows on every database;
- :mod:`.csv_export`: rows as CSV, text cells escaped against formula injection;
- :mod:`.run`: running one report (:func:`run_report`);
- :mod:`.sessions`: the dashboard's session list and one session's summary row;
- :mod:`.stats_cache`: the per-session statistics cache the views read.

Everything other packages use is importable from here
(``from webhook_service import reports; reports.run_report(...)``).
"""

from __future__ import annotations

from .catalogue import REPORTS, Report, get_report
from .csv_export import csv_cell, write_csv
from .errors import InvalidFilter, ReportError, UnknownReport
from .filters import MAX_OFFSET, MAX_PAGE, Filters, make_filters, parse_day, parse_page
from .percentiles import LATENCY_PERCENTILES, LOW_CONFIDENCE_PERCENTILE, percentile_cont
from .rows import FLOAT_DIGITS, Column, as_utc, iso_utc, normalize_rows
from .run import ReportResult, run_report
from .sessions import SESSION_PAGE_SIZE, list_sessions, session_summary_row, state_counts
from .stats_cache import REFRESH_CHUNK, refresh_session_stats, stale_count

__all__ = [
    "FLOAT_DIGITS", "LATENCY_PERCENTILES", "LOW_CONFIDENCE_PERCENTILE", "MAX_OFFSET", "MAX_PAGE", "REFRESH_CHUNK",
    "REPORTS",
    "SESSION_PAGE_SIZE", "Column", "Filters", "InvalidFilter", "Report", "ReportError", "ReportResult",
    "UnknownReport", "as_utc", "csv_cell", "get_report", "iso_utc", "list_sessions", "make_filters", "normalize_rows",
    "parse_day", "parse_page", "percentile_cont", "refresh_session_stats", "run_report", "session_summary_row",
    "stale_count", "state_counts", "write_csv",
]
