"""Response headers that keep the operator pages safe in a browser.

Every response says what a browser may do with it: load scripts, styles and
images from this origin only and never inside a frame (``Content-Security-Policy``;
the dashboard has no inline script or style, so none needs allowing), never
guess a content type (``nosniff``), send no referrer to a link's target. Pages
and API answers hold personal data (transcripts, source paths, errors), so
nothing but the dashboard's static files may be stored by a browser or a
proxy (``Cache-Control: no-store``).
"""

from __future__ import annotations

from flask import Flask, Response, request

CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'"
CACHEABLE_ENDPOINTS = frozenset({"dashboard.static"})  # versioned assets with no data in them

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
}


def _add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint not in CACHEABLE_ENDPOINTS:
        response.headers["Cache-Control"] = "no-store"
    return response


def install(app: Flask) -> None:
    """Add the headers to every response of ``app`` (error pages included)."""
    app.after_request(_add_security_headers)
