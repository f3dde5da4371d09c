"""How the dashboard writes numbers, shares, durations and times: its Jinja filters.

Every missing value reads "—"; times are UTC, whatever the database returned
(see :func:`webhook_service.reports.as_utc`).
"""

from __future__ import annotations

from typing import Any, Optional

from flask import Flask

from .. import reports
from ..jobs.redaction import public_text


def num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def duration(seconds: Optional[float]) -> str:
    """Seconds as people read them: 850 ms, 12.4 s, 3 min 05 s, 1 h 02 min."""
    if seconds is None:
        return "—"
    if seconds == 0:
        return "0 s"
    if abs(seconds) < 1:
        return f"{seconds * 1000:.0f} ms"
    if abs(seconds) < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)  # hours-based totals carry rounding noise (209.9988 s)
    if abs(whole) < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def hours(seconds: Optional[float]) -> str:
    """Large amounts of audio as hours (1,347.1 h); small ones as a duration."""
    if seconds is None or abs(seconds) < 3600:
        return duration(seconds)
    return f"{seconds / 3600:,.1f} h"


def offset(seconds: Optional[float]) -> str:
    """Time since the first timeline entry: +2.4 s, +1:05, +1:02:10."""
    if not seconds:
        return "+0 s"
    if seconds < 60:
        return f"+{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"+{minutes}:{secs:02d}"
    return f"+{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def clock(value: Any) -> str:
    return "—" if value is None else when(value)[11:19]


def when(value: Any) -> str:
    if value is None:
        return "—"
    return reports.as_utc(value).strftime("%Y-%m-%d %H:%M:%S") + " UTC"


FILTERS = {"num": num, "pct": pct, "duration": duration, "hours": hours, "offset": offset, "clock": clock,
           "when": when}
# Error texts may quote a URL: its token never reaches a page.
FILTERS["redact"] = public_text


def register(app: Flask) -> None:
    for name, function in FILTERS.items():
        app.add_template_filter(function, name)
