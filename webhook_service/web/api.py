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

The query parameters are checked against the operation's ``parameters`` in
``openapi.yaml`` (:mod:`.params`: types, ranges, allowed states, lengths,
defaults), then for what a schema cannot say (the cursor, since before
until); the queries are the domain's (:mod:`webhook_service.jobs`).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone

from flask import Blueprint, g, jsonify, request
from werkzeug.datastructures import MultiDict

from ..jobs import session_detail as detail, sessions
from ..jobs.queries import iso_z
from ..transcripts import TRANSCRIPT_FORMATS, TranscriptDeleted, TranscriptUnavailable
from .auth import admin_required
from .context import db, json_error, settings
from .params import InvalidParameter, parse_query
from .transcript_response import transcript_response

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_ID_LENGTH = 64  # job ids are UUIDs (36 characters), Gladia ids too


class InvalidQuery(ValueError):
    """A query parameter is invalid; the message names it."""


def _parse_when(name: str, raw: str) -> datetime:
    """A query parameter's ISO-8601 date or date-time, UTC when it has no offset."""
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves it out of years 1..9999
        raise InvalidQuery(f"{name} must be an ISO-8601 date or date-time between years 1 and 9999 (UTC), "
                           f"got {raw[:40]!r}") from None


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


def _parse_list_query(args: MultiDict) -> tuple[sessions.SessionFilter, int, int]:
    """The list's filters, limit and offset: the description's rules (``listSessions``), then what it cannot say."""
    query = parse_query("listSessions", args)
    if query["cursor"] is not None and "offset" in args:
        raise InvalidQuery("use either cursor or offset, not both")
    since = _parse_when("since", query["since"]) if query["since"] is not None else None
    until = _parse_when("until", query["until"]) if query["until"] is not None else None
    if since and until and since >= until:
        raise InvalidQuery("since must be before until")
    after = _decode_cursor(query["cursor"]) if query["cursor"] is not None else None
    filters = sessions.SessionFilter(states=query["state"] or (), batch=(query["batch"] or "").strip() or None,
                                     since=since, until=until, after=after)
    return filters, query["limit"], query["offset"]


@bp.errorhandler(InvalidParameter)
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
    channel = parse_query("getSessionTranscript", request.args)["channel"]
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
