"""`--metrics-port`: a Celery worker's or beat's own /metrics, for a machine without an operator side.

On the machine that runs the operator side, its ``/metrics`` already adds up
every process (``METRICS_DIR``); a worker elsewhere serves its samples here,
on ``127.0.0.1:METRICS_PORT``, behind the same operator bearer tokens as the
web's ``/metrics`` (``webhook-service token create --scope read``). Put a
Prometheus agent on that machine, or a tunnel, to reach it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..auth import verify_token
from ..config import Settings
from ..db import session_scope
from .. import metrics

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_args: Any) -> None:  # scrapes every few seconds would flood the log
        pass


def metrics_app(settings: Settings) -> Callable:
    """The WSGI app: GET /metrics with ``Authorization: Bearer <operator token>``; 401 JSON otherwise."""

    def authorized(environ: dict) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        try:
            with session_scope(settings.database_url) as session:
                return verify_token(session, presented.strip()) is not None
        except Exception as exc:  # the database is down: no way to check the token
            log.warning("metrics: cannot check the token: %s", type(exc).__name__)
            return False

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": {"status": 404, "message": "only GET /metrics here"}}']
        if not authorized(environ):
            start_response("401 Unauthorized", [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")])
            return [b'{"error": {"status": 401, "message": "an operator token is required: Authorization: Bearer <token>"}}']
        body, content_type = metrics.render()
        start_response("200 OK", [("Content-Type", content_type), ("Cache-Control", "no-store")])
        return [body]

    return app


def start_metrics_server(settings: Settings, host: str = "127.0.0.1") -> WSGIServer | None:
    """Serve /metrics in a daemon thread when ``METRICS_PORT`` is set; the server (None when off)."""
    if not settings.metrics_port:
        return None
    server = make_server(host, settings.metrics_port, metrics_app(settings), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics (bearer token)", host, settings.metrics_port)
    return server
