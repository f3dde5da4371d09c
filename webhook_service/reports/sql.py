"""Running a report's SQL against the views: the filters as conditions, the page as LIMIT/OFFSET.

Every report reads the SQL views of migration 0002 (documented column by
column in docs/reporting.md), so an analyst's SQL and a report always agree.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Optional

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from ..models import UTCDateTime
from .filters import Filters


def _bounds(filters: Filters) -> tuple[Optional[datetime], Optional[datetime]]:
    """The filters' days as [start, end) instants; the last representable day has no end."""
    start = datetime.combine(filters.since, time(0), tzinfo=timezone.utc) if filters.since else None
    end = (datetime.combine(filters.until + timedelta(days=1), time(0), tzinfo=timezone.utc)
           if filters.until and filters.until < date.max else None)
    return start, end


def where(filters: Filters, *, has_batch: bool = True, alias: str = "") -> tuple[str, dict[str, Any]]:
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


def fetch(session: Session, sql: str, params: dict[str, Any], page: Optional[Filters] = None) -> list[dict[str, Any]]:
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
