"""Running one report: validate the input, bring the statistics cache up to date, query, normalize."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from ..db import session_scope
from .catalogue import Report, get_report
from .filters import Filters, make_filters, parse_page
from .stats_cache import refresh_session_stats


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
            "columns": self.report.columns_json(),
            "rows": self.rows,
        }


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
