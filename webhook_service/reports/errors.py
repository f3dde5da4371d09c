"""Bad report input: the exceptions every caller (CLI, JSON API, dashboard) maps to a message and a status."""

from __future__ import annotations


class ReportError(Exception):
    """Bad report input; ``status`` is the HTTP status it maps to."""

    status = 400


class UnknownReport(ReportError):
    status = 404


class InvalidFilter(ReportError):
    status = 400
