"""Read-only JSON API over sessions: what happened to each job and what Gladia returned.

``GET /api/sessions`` lists jobs (one job = one Gladia live session) newest
first, filtered by state, batch and creation date, paginated either by
``limit``/``offset`` or by an opaque ``cursor`` (keyset pagination: stable
while new jobs arrive, and as fast on page 1,000 as on page 1).

``GET /api/sessions/<gladia_id>`` is one session in full (see
:mod:`webhook_service.jobs.session_detail`); ``GET
/api/sessions/<gladia_id>/transcript.<fmt>`` its transcript as a file (TXT, SRT,
WebVTT, JSON); ``DELETE /api/sessions/<gladia_id>`` (admin) erases it here and at
Gladia (:mod:`webhook_service.retention`). Secrets never leave: the WebSocket
URL (its token is Gladia's credential) and the callback token are not in any
answer.

This module parses and checks the query parameters and writes the answer; the
queries are the domain's (:mod:`webhook_service.jobs`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime, timezone
from typing import Optional

from flask import Blueprint, g, jsonify, request
from werkzeug.datastructures import MultiDict

from ..jobs import session_detail as detail, sessions
from ..jobs.queries import iso_z
from ..models import JOB_STATES
from ..transcripts import TRANSCRIPT_FORMATS, TranscriptDeleted, TranscriptUnavailable
from .auth import admin_required
from .context import db, json_error, settings
from .transcript_response import transcript_response

bp = Blueprint("api", __name__, url_prefix="/api")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# The largest offset a page may start at: far beyond any real list, and within
# every database's integer range once the page's extra row is added.
MAX_OFFSET = 2**31 - 1
MAX_ID_LENGTH = 64  # job ids are UUIDs (36 characters), Gladia ids too
MAX_BATCH_LENGTH = 200  # a batch's name column
_INTEGER = re.compile(r"[+-]?[0-9]{1,100}")  # longer is not a number anyone means; shorter gets its range
LIST_PARAMS = frozenset({"state", "batch", "since", "until", "limit", "offset", "cursor"})


class InvalidQuery(ValueError):
    """A query parameter is invalid; the message names it."""


def _parse_when(name: str, raw: str) -> datetime:
    """A query parameter's ISO-8601 date or date-time, UTC when it has no offset."""
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves it out of years 1..9999
        raise InvalidQuery(f"{name} must be an ISO-8601 date or date-time between years 1 and 9999 (UTC), "
                           f"got {raw[:40]!r}") from None


def _parse_int(name: str, raw: str, minimum: int, maximum: Optional[int] = None) -> int:
    if not _INTEGER.fullmatch(raw.strip()):
        raise InvalidQuery(f"{name} must be an integer, got {raw[:40]!r}")
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise InvalidQuery(f"{name} must be {bound}, got {value}")
    return value


def _encode_cursor(position: sessions.Position) -> str:
    created, job_id = position
    raw = json.dumps([iso_z(created), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(raw: str) -> sessions.Position:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(job_id, str) or not isinstance(created, str) or not _is_id(job_id):
            raise ValueError
        return _parse_when("cursor", created), job_id
    except (ValueError, TypeError, binascii.Error, InvalidQuery):
        raise InvalidQuery("cursor is not a cursor this API returned") from None


def _is_id(value: str, max_length: int = MAX_ID_LENGTH) -> bool:
    """A value a stored id or name could have: not too long, no NUL (PostgreSQL refuses NUL in text)."""
    return 0 < len(value) <= max_length and "\x00" not in value


def _parse_states(raw: str) -> tuple[str, ...]:
    states = tuple(s.strip() for s in raw.split(",") if s.strip())
    if not states or any(s not in JOB_STATES for s in states):
        raise InvalidQuery(f"state must be one or more of {', '.join(JOB_STATES)} (comma-separated)")
    return states


def _parse_list_query(args: MultiDict) -> tuple[sessions.SessionFilter, int, int]:
    """The list's filters, limit and offset from the query string, checked in a fixed order."""
    unknown = sorted(set(args) - LIST_PARAMS)
    if unknown:
        raise InvalidQuery(f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(LIST_PARAMS))}")
    limit = _parse_int("limit", args["limit"], 1, MAX_LIMIT) if "limit" in args else DEFAULT_LIMIT
    offset = _parse_int("offset", args["offset"], 0, MAX_OFFSET) if "offset" in args else 0
    if "cursor" in args and "offset" in args:
        raise InvalidQuery("use either cursor or offset, not both")
    states = _parse_states(args["state"]) if "state" in args else ()
    batch = args["batch"].strip() if "batch" in args else None
    if batch and not _is_id(batch, MAX_BATCH_LENGTH):
        raise InvalidQuery(f"batch must be a batch id or name (1 to {MAX_BATCH_LENGTH} characters, no NUL)")
    since = _parse_when("since", args["since"]) if "since" in args else None
    until = _parse_when("until", args["until"]) if "until" in args else None
    if since and until and since >= until:
        raise InvalidQuery("since must be before until")
    after = _decode_cursor(args["cursor"]) if "cursor" in args else None
    return sessions.SessionFilter(states=states, batch=batch, since=since, until=until, after=after), limit, offset


@bp.errorhandler(InvalidQuery)
def _bad_request(exc: InvalidQuery):
    return json_error(400, str(exc))


@bp.get("/sessions")
def list_sessions():
    filters, limit, offset = _parse_list_query(request.args)
    page = sessions.sessions_page(db(), filters, limit=limit, offset=offset)
    return jsonify({
        "items": page.items,
        "limit": limit,
        "offset": offset if filters.after is None else None,
        "next_cursor": _encode_cursor(page.next_after) if page.next_after is not None else None,
    })


@bp.get("/sessions/<gladia_id>")
def session_detail(gladia_id: str):
    if not _is_id(gladia_id):
        return json_error(404, "no session or job with this id")
    try:
        body = detail.session_detail(db(), gladia_id)
    except LookupError as exc:  # a prefix of several ids
        return json_error(404, str(exc))
    if body is None:
        return json_error(404, "no session or job with this id")
    return jsonify(body)


@bp.get("/sessions/<gladia_id>/transcript.<fmt>")
def session_transcript(gladia_id: str, fmt: str):
    if fmt not in TRANSCRIPT_FORMATS:
        return json_error(400, f"format must be one of {', '.join(TRANSCRIPT_FORMATS)}, got {fmt[:20]!r}")
    unknown = sorted(set(request.args) - {"channel"})
    if unknown:
        raise InvalidQuery(f"unknown parameter(s) {', '.join(unknown)}; allowed: channel")
    channel = _parse_int("channel", request.args["channel"], 0, 1023) if "channel" in request.args else None
    if not _is_id(gladia_id):
        return json_error(404, "no session or job with this id")
    try:
        return transcript_response(gladia_id, fmt, channel)
    except TranscriptDeleted as exc:
        return json_error(410, str(exc))
    except TranscriptUnavailable as exc:  # no speech on that channel
        return json_error(404, str(exc))
    except LookupError as exc:  # unknown, or a prefix of several ids
        return json_error(404, str(exc))


@bp.delete("/sessions/<gladia_id>")
@admin_required
def delete_session(gladia_id: str):
    from ..retention import DeleteRefused, GladiaRefused, delete_session as erase

    if not _is_id(gladia_id):
        return json_error(404, "no session or job with this id")
    db().close()  # the erasure runs in transactions of its own (SQLite: one writer at a time)
    try:
        erased = erase(settings(), gladia_id, actor=f"token:{g.operator.name}")
    except GladiaRefused as exc:
        return json_error(502, str(exc))
    except DeleteRefused as exc:
        return json_error(409, str(exc))
    except LookupError as exc:
        return json_error(404, str(exc))
    return jsonify({"deleted": erased.as_dict()})
