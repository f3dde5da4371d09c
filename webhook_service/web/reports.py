"""`GET /api/reports` and `GET /api/reports/<name>`: the CLI's reports as JSON.

Query parameters are the CLI's filters (``since``, ``until``, ``batch``) and
paging (``limit``, ``offset``; the answer's ``page.next_offset`` is the next
page's offset, null after the last), checked against ``getReport`` in
``openapi.yaml`` first (:mod:`.params`); an unknown parameter is refused rather
than ignored, so a typo never silently returns an unfiltered report. The
reports module then checks what the CLI shares (a batch that exists, since
not after until, offset with a limit).
"""

from __future__ import annotations

from flask import Blueprint, request

from .. import reports
from .context import json_error, settings
from .params import InvalidParameter, parse_query

bp = Blueprint("reports", __name__)


@bp.get("/api/reports")
def list_reports():
    return {"reports": [report.describe() for report in reports.REPORTS.values()]}


@bp.get("/api/reports/<name>")
def get_report(name: str):
    try:
        query = parse_query("getReport", request.args)
    except InvalidParameter as exc:
        return json_error(400, str(exc))
    try:
        result = reports.run_report(settings().database_url, name, **query)
    except reports.ReportError as exc:
        return json_error(exc.status, str(exc))
    return result.as_json()
