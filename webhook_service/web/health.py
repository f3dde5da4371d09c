"""Liveness and metrics endpoints for load balancers and Prometheus."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from .. import metrics
from ..jobs.gauges import read_gauges
from .context import db, settings

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
