"""Liveness and metrics endpoints for load balancers and Prometheus."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import text

from .. import metrics
from ..jobs.gauges import read_gauges
from ..tokens import check_probe
from .context import db, json_error, settings

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)
# Its own blueprint: the operator surface serves it, the public receiver does not.
metrics_bp = Blueprint("metrics", __name__)


@bp.get("/healthz")
def healthz():
    try:
        db().execute(text("SELECT 1"))
    except Exception as exc:  # the database is the one dependency that matters
        return jsonify({"status": "error", "database": "unreachable", "detail": type(exc).__name__}), 503
    return jsonify({"status": "ok", "database": "ok"})


@metrics_bp.get("/metrics")
def prometheus_metrics():
    current = settings()

    def gauges() -> dict:
        try:
            return {**read_gauges(current), "webhook_database_up": [({}, 1.0)]}
        except Exception as exc:  # the process metrics are still worth a scrape
            log.warning("metrics: cannot read the gauges from the database: %s", type(exc).__name__)
            return {"webhook_database_up": [({}, 0.0)]}

    body, content_type = metrics.render(gauges, machine_dir=current.metrics_dir)
    return Response(body, content_type=content_type)


@bp.get("/healthz/probe")
def probe():
    """`webhook-service doctor`'s check that PUBLIC_BASE_URL reaches this receiver (see ``tokens.check_probe``).

    Public, like ``/healthz``; it answers only a fresh challenge signed with
    CALLBACK_SIGNING_KEY, and anything else gets the 404 of an unknown URL.
    """
    args = request.args
    answer = check_probe(settings().callback_signing_key, args.get("nonce", ""), args.get("ts", ""),
                         args.get("sig", ""), time.time())
    if answer is None:
        return json_error(404, "The requested URL was not found on the server. If you entered the URL manually "
                               "please check your spelling and try again.")
    return jsonify({"answer": answer})
