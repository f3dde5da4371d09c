"""Liveness and metrics endpoints for load balancers and Prometheus."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from .. import metrics
from .context import db

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
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
