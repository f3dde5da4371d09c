"""`GET /api/reports` and `GET /api/reports/<name>`: the CLI's reports as JSON.

Query parameters are the CLI's filters (``since``, ``until``, ``batch``) and
paging (``limit``, ``offset``; the answer's ``page.next_offset`` is the next
page's offset, null after the last); an unknown parameter is refused rather
than ignored, so a typo never silently returns an unfiltered report.
"""

from __future__ import annotations

from flask import Blueprint, request

from .. import reports
from .context import json_error, settings

bp = Blueprint("reports", __name__)

FILTER_PARAMS = ("since", "until", "batch", "limit", "offset")


@bp.get("/api/reports")
def list_reports():
    return {"reports": [report.describe() for report in reports.REPORTS.values()]}


@bp.get("/api/reports/<name>")
def get_report(name: str):
    unknown = sorted(set(request.args) - set(FILTER_PARAMS))
    if unknown:
        return json_error(400, f"unknown parameter(s): {', '.join(unknown)}; allowed: {', '.join(FILTER_PARAMS)}")
    try:
        result = reports.run_report(settings().database_url, name, **{k: request.args.get(k) for k in FILTER_PARAMS})
    except reports.ReportError as exc:
        return json_error(exc.status, str(exc))
    return result.as_json()
