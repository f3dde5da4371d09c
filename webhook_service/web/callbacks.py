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

The callback is handled by :func:`receive_gladia_callback`, a function of the
WSGI environ alone: every message of every live session is one such request,
so the app serves it straight from WSGI (:class:`CallbackRoute`), without
Flask's request context, URL matching and response object, which cost as much
as storing the message (bench/README.md). The route stays in the app's URL
map, so Flask still answers its other methods (405) and it is described,
authorized and tested like every other route.

``POST /webhooks/gladia``: account-level webhooks ``{event, payload: {id}}``,
verified with Standard Webhooks (the scheme Svix implements); without
``GLADIA_WEBHOOK_SECRET`` the route is off (404). A webhook only schedules
reconciliation; one about a session this service does not know is counted
and dropped.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, Callable, Iterable, NamedTuple

from flask import Blueprint, current_app, request
from sqlalchemy.exc import DBAPIError
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import get_content_length, get_input_stream

from .. import ingest, metrics
from ..config import Settings
from ..gladia.validation import InvalidMessage, parse_json_body, validate_callback, validate_webhook
from ..logging_setup import job_context
from ..models import utcnow
from ..tokens import job_id_from_token
from .context import error_body, settings
from .headers import SECURITY_HEADERS

log = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__)

CALLBACK_PREFIX = "/callbacks/gladia/"


class Reply(NamedTuple):
    """An answer of the receiver: a status and a JSON body, rendered by Flask or by :class:`CallbackRoute`."""

    status: int
    body: dict[str, Any]

    @classmethod
    def error(cls, status: int, message: str) -> "Reply":
        return cls(status, error_body(status, message))

    def json(self) -> bytes:
        return (json.dumps(self.body, separators=(",", ":")) + "\n").encode()


def _refuse(status: int, reason: str, message: str, **log_fields: Any) -> Reply:
    metrics.CALLBACKS_REJECTED.labels(reason).inc()
    log.info("callback refused (%s %s): %s %s", status, reason, message,
             " ".join(f"{k}={v}" for k, v in log_fields.items()))
    return Reply.error(status, message)


def _is_json_content_type(environ: dict) -> bool:
    # Gladia's exact headers are undocumented; accept application/json and +json types.
    mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    return mimetype == "application/json" or mimetype.endswith("+json")


def _read_body(environ: dict, limit: int) -> bytes:
    """The request body; :class:`RequestEntityTooLarge` past ``limit`` bytes.

    With a Content-Length (refused over the limit) werkzeug's stream reads
    exactly that. A chunked body has none, and werkzeug's stream would silently
    cut it at the limit, so it is read here (the server decodes the chunks)
    and refused as soon as it passes the limit. A body with neither reads as
    empty, as in werkzeug.
    """
    length = get_content_length(environ)
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge()
        return get_input_stream(environ).read()
    if not environ.get("wsgi.input_terminated"):
        return b""
    stream = environ["wsgi.input"]
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


def _read_json_body(environ: dict, limit: int, *, kind: str) -> tuple[bytes, Any] | tuple[None, Reply]:
    """The raw body and its parsed JSON, or (None, the refusal)."""
    length = get_content_length(environ)
    if length is not None and length > limit:  # refused before its type, as it is never read
        return None, _refuse(413, "too_large", f"body larger than {limit} bytes", kind=kind)
    if not _is_json_content_type(environ):
        return None, _refuse(400, "content_type", "Content-Type must be application/json", kind=kind)
    try:
        raw = _read_body(environ, limit)
    except RequestEntityTooLarge:
        return None, _refuse(413, "too_large", f"body larger than {limit} bytes", kind=kind)
    try:
        return raw, parse_json_body(raw)
    except InvalidMessage as exc:
        return None, _refuse(400, "invalid_json", str(exc), kind=kind)


def _request_headers(environ: dict) -> dict[str, str]:
    """The request's headers worth keeping with the inbox row."""
    return ingest.safe_headers(EnvironHeaders(environ).items())


def receive_gladia_callback(cfg: Settings, token: str, environ: dict) -> Reply:
    """``POST /callbacks/gladia/<token>``: the whole receiver, from the WSGI environ to the answer."""
    received_at = utcnow()
    job_id = job_id_from_token(token, cfg.callback_verification_keys)
    if job_id is None:
        return _refuse(404, "unknown_token", "unknown callback URL")

    raw, body = _read_json_body(environ, cfg.max_callback_bytes, kind="callback")
    if raw is None:
        return body
    try:
        callback = validate_callback(body)
    except InvalidMessage as exc:
        return _refuse(400, "invalid_body", str(exc), job=job_id)
    label = ingest.metric_event(callback.event)

    with job_context(job_id, callback.gladia_id):
        try:
            stored, status = ingest.receive_callback(
                cfg, raw=raw, body=body, headers=_request_headers(environ), callback=callback,
                job_id=job_id, received_at=received_at,
            )
        except ingest.UnknownJob:  # a token of a deleted job (or of another deployment's key)
            return _refuse(404, "unknown_job", "unknown callback URL")
        except ingest.Forbidden as exc:
            return _refuse(403, "wrong_session", str(exc), job=job_id, gladia_id=callback.gladia_id)
        except ingest.Gone:
            return _refuse(410, "job_settled", "this job no longer takes callbacks: its results change only "
                           "through reconciliation", job=job_id)
        except InvalidMessage as exc:  # beyond the job's audio
            return _refuse(400, "out_of_range", str(exc), job=job_id)
        except DBAPIError as exc:
            return _unavailable(exc)
    return _stored(label, stored, status)


def _unavailable(exc: Exception) -> Reply:
    """The raw body could not be committed: say so with a 503, so a retrying sender retries."""
    metrics.CALLBACKS_REJECTED.labels("database_unavailable").inc()
    log.error("callback not stored, database error: %s", type(exc).__name__)
    return Reply.error(503, "database unavailable; the callback was not stored")


def _stored(label: str, stored: ingest.Stored, status: str) -> Reply:
    metrics.CALLBACKS_RECEIVED.labels(label).inc()
    if stored.duplicate:
        metrics.CALLBACKS_DUPLICATE.labels(label).inc()
    # 202: stored, normalized later (the job's session is not recorded yet, or the database said no for now).
    return Reply(202 if status == "pending" else 200,
                 {"status": "duplicate" if stored.duplicate else "stored",
                  "normalized": "processed" if status == "duplicate" else status, "inbox_id": stored.inbox_id})


def _flask_response(reply: Reply):
    return current_app.response_class(reply.json(), reply.status, mimetype="application/json")


@bp.post("/callbacks/gladia/<token>")
def gladia_callback(token: str):
    """The route as Flask knows it; in the app its POSTs are answered by :class:`CallbackRoute` first."""
    return _flask_response(receive_gladia_callback(settings(), token, request.environ))


class CallbackRoute:
    """WSGI middleware: answers ``POST /callbacks/gladia/<token>`` itself and passes every other request on.

    The answer carries what the app's hooks add to every response
    (``headers.SECURITY_HEADERS``, ``Cache-Control: no-store``); an unexpected
    error is logged and answered 500 with the app's JSON error body.
    """

    HEADERS = [*SECURITY_HEADERS.items(), ("Cache-Control", "no-store")]

    def __init__(self, app: Callable, cfg: Settings):
        self.app = app
        self.cfg = cfg

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] != "POST" or not path.startswith(CALLBACK_PREFIX):
            return self.app(environ, start_response)
        token = path[len(CALLBACK_PREFIX):]
        if not token or "/" in token:  # not the route: Flask's own 404
            return self.app(environ, start_response)
        try:
            reply = receive_gladia_callback(self.cfg, token, environ)
        except Exception:  # noqa: BLE001 - as the app's error handler: logged, and a JSON 500
            log.exception("unhandled error")
            reply = Reply.error(500, "internal server error")
        data = reply.json()
        start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *self.HEADERS])
        return [data]


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
    return _flask_response(_receive_webhook(settings()))


def _receive_webhook(cfg: Settings) -> Reply:
    received_at = utcnow()
    if not cfg.gladia_webhook_secret:
        # Unsigned webhooks would let anyone schedule work and fill the inbox: without a secret the route is off.
        return Reply.error(404, "not found")
    limit = cfg.max_callback_bytes
    try:
        raw = _read_body(request.environ, limit)
    except RequestEntityTooLarge:
        return _refuse(413, "too_large", f"body larger than {limit} bytes", kind="webhook")
    problem = _verify_webhook(raw)
    if problem is not None:
        return _refuse(401, "bad_signature", f"webhook signature refused: {problem}")
    if not _is_json_content_type(request.environ):
        return _refuse(400, "content_type", "Content-Type must be application/json", kind="webhook")
    try:
        body = parse_json_body(raw)
        hook = validate_webhook(body)
    except InvalidMessage as exc:
        return _refuse(400, "invalid_body", str(exc), kind="webhook")
    label = ingest.metric_event(hook.event)
    with job_context(None, hook.gladia_id):
        try:
            received = ingest.receive_webhook(
                cfg, raw=raw, body=body, headers=_request_headers(request.environ), webhook=hook,
                received_at=received_at,
            )
        except DBAPIError as exc:
            return _unavailable(exc)
    if received is None:  # a session this service does not know: counted, not stored; 2xx so it is not retried
        return Reply(200, {"status": "dropped", "reason": "unknown session"})
    return _stored(label, *received)
