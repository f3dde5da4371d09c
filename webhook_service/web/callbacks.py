"""Gladia's callbacks and account webhooks: authenticate, store raw, normalize, answer fast.

``POST /callbacks/gladia/<token>``: Gladia signs nothing it sends to a live
callback URL, so the per-job token in the path is the credential (an HMAC of
the job id, checked in constant time; see ``tokens.py``). The order of checks
makes every refusal cheap and write-free:

1. token -> job, else 404 (only a counter and a log line, never the token);
2. body size (413), content type and JSON (400), envelope and message shape (400);
3. the body's session id must be the job's (403); a job that is settled, or
   past its end_session by ``CALLBACK_GRACE_S``, takes no callback (410);
   times and durations beyond the job's audio are refused (400);
4. the raw body is committed to the inbox (deduplicated) before we answer;
5. normalization runs in its own transaction; its failure leaves the row
   ``failed`` for the sweeper and the answer is still 200.

Nothing here talks to Celery or Redis: the answer depends on the database only.

``POST /webhooks/gladia``: account-level webhooks ``{event, payload: {id}}``,
verified with Standard Webhooks (the scheme Svix implements); without
``GLADIA_WEBHOOK_SECRET`` the route is off (404). A webhook only schedules
reconciliation; one about a session this service does not know is counted
and dropped.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import RequestEntityTooLarge
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from .. import ingest, metrics
from ..gladia.validation import InvalidMessage, parse_json_body, validate_callback, validate_webhook
from ..logging_setup import job_context
from ..models import utcnow
from ..tokens import job_id_from_token
from .context import json_error, settings

log = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__)


def _reject(status: int, reason: str, message: str, **log_fields: Any):
    metrics.CALLBACKS_REJECTED.labels(reason).inc()
    log.info("callback refused (%s %s): %s %s", status, reason, message,
             " ".join(f"{k}={v}" for k, v in log_fields.items()))
    return json_error(status, message)


def _is_json_content_type() -> bool:
    # Gladia's exact headers are undocumented; accept application/json and +json types.
    mimetype = request.mimetype or ""
    return mimetype == "application/json" or mimetype.endswith("+json")


def _read_body(limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes.

    With a Content-Length (already checked) werkzeug reads it. A chunked body
    has none, and werkzeug would silently cut it at MAX_CONTENT_LENGTH, so it
    is read here and refused as soon as it passes the limit.
    """
    if request.content_length is not None:
        return request.get_data(cache=False)
    stream = request.environ["wsgi.input"]
    parts: list[bytes] = []
    total = 0
    while True:
        part = stream.read(min(65536, limit + 1 - total))
        if not part:
            return b"".join(parts)
        parts.append(part)
        total += len(part)
        if total > limit:
            raise RequestEntityTooLarge()


def _read_json_body(*, kind: str) -> tuple[bytes, Any] | tuple[None, Any]:
    """The raw body and its parsed JSON, or (None, error response)."""
    if request.content_length is not None and request.content_length > settings().max_callback_bytes:
        return None, _reject(413, "too_large", f"body larger than {settings().max_callback_bytes} bytes", kind=kind)
    if not _is_json_content_type():
        return None, _reject(400, "content_type", "Content-Type must be application/json", kind=kind)
    try:
        raw = _read_body(settings().max_callback_bytes)
    except RequestEntityTooLarge:
        return None, _reject(413, "too_large", f"body larger than {settings().max_callback_bytes} bytes", kind=kind)
    try:
        return raw, parse_json_body(raw)
    except InvalidMessage as exc:
        return None, _reject(400, "invalid_json", str(exc), kind=kind)


@bp.post("/callbacks/gladia/<token>")
def gladia_callback(token: str):
    cfg = settings()
    received_at = utcnow()
    job_id = job_id_from_token(token, cfg.callback_verification_keys)
    if job_id is None:
        return _reject(404, "unknown_token", "unknown callback URL")

    raw, body = _read_json_body(kind="callback")
    if raw is None:
        return body
    try:
        callback = validate_callback(body)
    except InvalidMessage as exc:
        return _reject(400, "invalid_body", str(exc), job=job_id)
    label = ingest.metric_event(callback.event)

    with job_context(job_id, callback.gladia_id):
        try:
            stored, status = ingest.receive_callback(
                cfg, raw=raw, body=body, headers=ingest.safe_headers(request.headers.items()), callback=callback,
                job_id=job_id, received_at=received_at,
            )
        except ingest.UnknownJob:  # a token of a deleted job (or of another deployment's key)
            return _reject(404, "unknown_job", "unknown callback URL")
        except ingest.Forbidden as exc:
            return _reject(403, "wrong_session", str(exc), job=job_id, gladia_id=callback.gladia_id)
        except ingest.Gone:
            return _reject(410, "job_settled", "this job no longer takes callbacks: its results change only "
                           "through reconciliation", job=job_id)
        except InvalidMessage as exc:  # beyond the job's audio
            return _reject(400, "out_of_range", str(exc), job=job_id)
        except DBAPIError as exc:
            return _unavailable(exc)
    return _answer(label, stored, status)


def _unavailable(exc: Exception):
    """The raw body could not be committed: say so with a 503, so a retrying sender retries."""
    metrics.CALLBACKS_REJECTED.labels("database_unavailable").inc()
    log.error("callback not stored, database error: %s", type(exc).__name__)
    return json_error(503, "database unavailable; the callback was not stored")


def _answer(label: str, stored: ingest.Stored, status: str):
    metrics.CALLBACKS_RECEIVED.labels(label).inc()
    if stored.duplicate:
        metrics.CALLBACKS_DUPLICATE.labels(label).inc()
    answer = json.dumps({"status": "duplicate" if stored.duplicate else "stored",
                         "normalized": "processed" if status == "duplicate" else status,
                         "inbox_id": stored.inbox_id}, separators=(",", ":"))
    # 202: stored, normalized later (the job's session is not recorded yet, or the database said no for now).
    # The response built directly: jsonify's provider costs more than the rest of the answer.
    return current_app.response_class(answer + "\n", 202 if status == "pending" else 200, mimetype="application/json")


def _verify_webhook(raw: bytes) -> str | None:
    """None when the signature is good, else why it is refused."""
    secret = settings().gladia_webhook_secret
    # Svix sends svix-id/svix-timestamp/svix-signature; Standard Webhooks names
    # them webhook-*. The signature scheme is the same, so accept either.
    headers = {k.lower(): v for k, v in request.headers.items()}
    for name in ("id", "timestamp", "signature"):
        if f"webhook-{name}" not in headers and f"svix-{name}" in headers:
            headers[f"webhook-{name}"] = headers[f"svix-{name}"]
    try:
        StandardWebhook(secret).verify(raw, headers, json_parse=False)
    except (WebhookVerificationError, ValueError, UnicodeDecodeError) as exc:
        return str(exc) or "invalid signature"
    return None


@bp.post("/webhooks/gladia")
def gladia_webhook():
    cfg = settings()
    received_at = utcnow()
    if not cfg.gladia_webhook_secret:
        # Unsigned webhooks would let anyone schedule work and fill the inbox: without a secret the route is off.
        return json_error(404, "not found")
    if request.content_length is not None and request.content_length > cfg.max_callback_bytes:
        return _reject(413, "too_large", f"body larger than {cfg.max_callback_bytes} bytes", kind="webhook")
    try:
        raw = _read_body(cfg.max_callback_bytes)
    except RequestEntityTooLarge:
        return _reject(413, "too_large", f"body larger than {cfg.max_callback_bytes} bytes", kind="webhook")
    problem = _verify_webhook(raw)
    if problem is not None:
        return _reject(401, "bad_signature", f"webhook signature refused: {problem}")
    if not _is_json_content_type():
        return _reject(400, "content_type", "Content-Type must be application/json", kind="webhook")
    try:
        body = parse_json_body(raw)
        hook = validate_webhook(body)
    except InvalidMessage as exc:
        return _reject(400, "invalid_body", str(exc), kind="webhook")
    label = ingest.metric_event(hook.event)
    with job_context(None, hook.gladia_id):
        try:
            received = ingest.receive_webhook(
                cfg, raw=raw, body=body, headers=ingest.safe_headers(request.headers.items()), webhook=hook,
                received_at=received_at,
            )
        except DBAPIError as exc:
            return _unavailable(exc)
    if received is None:  # a session this service does not know: counted, not stored; 2xx so it is not retried
        return jsonify({"status": "dropped", "reason": "unknown session"})
    return _answer(label, *received)
