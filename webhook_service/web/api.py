"""Read-only JSON API over sessions: what happened to each job and what Gladia returned.

``GET /api/sessions`` lists jobs (one job = one Gladia live session) newest
first, filtered by state, batch and creation date, paginated either by
``limit``/``offset`` or by an opaque ``cursor`` (keyset pagination: stable
while new jobs arrive, and as fast on page 1,000 as on page 1).

``GET /api/sessions/<gladia_id>`` is one session in full: the job, its state
timeline, durations, the final transcript, the utterances with their words and
add-ons, post-processing results, callback counts and the latest
reconciliation. Secrets never leave: the WebSocket URL (its token is Gladia's
credential) and the callback token are not in any answer.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import Any, Optional

from flask import Blueprint, jsonify, request
from sqlalchemy import and_, func, or_, select

from ..models import (
    JOB_STATES,
    AddonResult,
    Batch,
    Event,
    InboxItem,
    Job,
    ReconciliationRun,
    SessionResult,
    Utterance,
)
from . import db, json_error

bp = Blueprint("api", __name__, url_prefix="/api")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
LIST_PARAMS = frozenset({"state", "batch", "since", "until", "limit", "offset", "cursor"})


class InvalidQuery(ValueError):
    """A query parameter is invalid; the message names it."""


def _iso(value: Optional[datetime]) -> Optional[str]:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def _parse_when(name: str, raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidQuery(f"{name} must be an ISO-8601 date or date-time, got {raw[:40]!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _parse_int(name: str, raw: str, minimum: int, maximum: Optional[int] = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidQuery(f"{name} must be an integer, got {raw[:40]!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise InvalidQuery(f"{name} must be {bound}, got {value}")
    return value


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([_iso(job.created_at), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(raw: str) -> tuple[datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(job_id, str) or not isinstance(created, str):
            raise ValueError
        return _parse_when("cursor", created), job_id
    except (ValueError, TypeError, binascii.Error, InvalidQuery):
        raise InvalidQuery("cursor is not a cursor this API returned") from None


def _batch_json(batch: Optional[Batch]) -> Optional[dict[str, Any]]:
    return None if batch is None else {"id": batch.id, "name": batch.name}


def _job_summary(job: Job, batch: Optional[Batch]) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "gladia_id": job.gladia_id,
        "batch": _batch_json(batch),
        "source_path": job.source_path,
        "state": job.state,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "done_at": _iso(job.done_at),
        "reconciled_at": _iso(job.reconciled_at),
        "audio_duration_s": job.audio_duration_s,
        "retry_at": _iso(job.retry_at),  # a deferred job's task is due then (no free slot, Gladia's 429)
        "last_error": job.last_error,
    }


@bp.errorhandler(InvalidQuery)
def _bad_request(exc: InvalidQuery):
    return json_error(400, str(exc))


@bp.get("/sessions")
def list_sessions():
    args = request.args
    unknown = sorted(set(args) - LIST_PARAMS)
    if unknown:
        raise InvalidQuery(f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(LIST_PARAMS))}")
    limit = _parse_int("limit", args["limit"], 1, MAX_LIMIT) if "limit" in args else DEFAULT_LIMIT
    offset = _parse_int("offset", args["offset"], 0) if "offset" in args else 0
    if "cursor" in args and "offset" in args:
        raise InvalidQuery("use either cursor or offset, not both")

    query = select(Job, Batch).outerjoin(Batch, Batch.id == Job.batch_id)
    if "state" in args:
        states = [s.strip() for s in args["state"].split(",") if s.strip()]
        bad = [s for s in states if s not in JOB_STATES]
        if bad or not states:
            raise InvalidQuery(f"state must be one or more of {', '.join(JOB_STATES)} (comma-separated)")
        query = query.where(Job.state.in_(states))
    if "batch" in args:
        batch = args["batch"].strip()
        query = query.where(or_(Batch.id == batch, Batch.name == batch))
    since = _parse_when("since", args["since"]) if "since" in args else None
    until = _parse_when("until", args["until"]) if "until" in args else None
    if since and until and since >= until:
        raise InvalidQuery("since must be before until")
    if since:
        query = query.where(Job.created_at >= since)
    if until:
        query = query.where(Job.created_at < until)
    if "cursor" in args:
        created, job_id = _decode_cursor(args["cursor"])
        query = query.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id)))

    rows = db().execute(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1).offset(offset)).all()
    page, more = rows[:limit], len(rows) > limit
    return jsonify({
        "items": [_job_summary(job, batch) for job, batch in page],
        "limit": limit,
        "offset": offset if "cursor" not in args else None,
        "next_cursor": _encode_cursor(page[-1][0]) if more else None,
    })


def _seconds(start: Optional[datetime], end: Optional[datetime]) -> Optional[float]:
    return round((end - start).total_seconds(), 3) if start and end else None


def _timeline(job: Job) -> list[dict[str, Any]]:
    """Each state the job reached with the first time it reached it, in lifecycle order.

    Lifecycle order rather than time order: the times of ``processing`` and
    ``done`` are Gladia's (the message's ``created_at``), the others ours, and
    two clocks must not reorder a lifecycle.
    """
    return [
        {"state": state, "at": _iso(getattr(job, f"{state}_at"))}
        for state in JOB_STATES
        if getattr(job, f"{state}_at") is not None
    ]


def _addon_json(addon: AddonResult) -> dict[str, Any]:
    return {
        "kind": addon.kind,
        "target_language": addon.target_language or None,
        "data": addon.data,
        "error": addon.error,
        "source": addon.source,
        "created_at": _iso(addon.created_at),
    }


@bp.get("/sessions/<gladia_id>")
def session_detail(gladia_id: str):
    session = db()
    found = session.execute(
        select(Job, Batch).outerjoin(Batch, Batch.id == Job.batch_id).where(Job.gladia_id == gladia_id)
    ).first()
    if found is None:  # also reachable by job id, for jobs whose session is not created yet
        found = session.execute(
            select(Job, Batch).outerjoin(Batch, Batch.id == Job.batch_id).where(Job.id == gladia_id)
        ).first()
    if found is None:
        return json_error(404, "no session or job with this id")
    job, batch = found
    gid = job.gladia_id

    utterances: list[Utterance] = []
    addons: list[AddonResult] = []
    result: Optional[SessionResult] = None
    events: dict[str, dict[str, int]] = {}
    inbox: dict[str, Any] = {"received": 0, "duplicates": 0, "by_status": {}}
    latest: Optional[ReconciliationRun] = None
    runs = 0
    if gid:
        utterances = list(session.scalars(
            select(Utterance).where(Utterance.gladia_id == gid)
            .order_by(Utterance.start_s, Utterance.channel, Utterance.utterance_id)
        ))
        addons = list(session.scalars(
            select(AddonResult).where(AddonResult.gladia_id == gid)
            .order_by(AddonResult.kind, AddonResult.utterance_id, AddonResult.target_language)
        ))
        result = session.get(SessionResult, gid)
        for etype, source, count in session.execute(
            select(Event.type, Event.source, func.count()).where(Event.gladia_id == gid).group_by(Event.type, Event.source)
        ):
            events.setdefault(etype, {})[source] = count
        for status, count, dups in session.execute(
            select(InboxItem.status, func.count(), func.coalesce(func.sum(InboxItem.duplicates), 0))
            .where(InboxItem.gladia_id == gid).group_by(InboxItem.status)
        ):
            inbox["by_status"][status] = count
            inbox["received"] += count
            inbox["duplicates"] += int(dups)
        latest = session.scalars(
            select(ReconciliationRun).where(ReconciliationRun.gladia_id == gid)
            .order_by(ReconciliationRun.started_at.desc(), ReconciliationRun.id.desc()).limit(1)
        ).first()
        runs = session.scalar(select(func.count()).select_from(ReconciliationRun)
                              .where(ReconciliationRun.gladia_id == gid)) or 0

    by_utterance: dict[str, list[dict[str, Any]]] = {}
    session_addons: dict[str, Any] = {}
    for addon in addons:
        if addon.utterance_id:
            by_utterance.setdefault(addon.utterance_id, []).append(_addon_json(addon))
        else:
            session_addons.setdefault(addon.kind, []).append(_addon_json(addon))

    stored_ids = {u.utterance_id for u in utterances}
    finished = job.done_at or job.reconciled_at or job.failed_at
    body = {
        "job": {
            **_job_summary(job, batch),
            "audio_sha256": job.audio_sha256,
            "audio_channels": job.audio_channels,
            "audio_sample_rate": job.audio_sample_rate,
            "custom_metadata": job.custom_metadata,
            "session_config": job.session_config,
            "gladia_created_at": _iso(job.gladia_created_at),
            "bytes_total": job.bytes_total,
            "bytes_sent": job.bytes_sent,
            "bytes_acked": job.bytes_acked,
            "attempts": job.attempts,
            "reconnects": job.reconnects,
            "heartbeat_at": _iso(job.heartbeat_at),
            "reconcile_after": _iso(job.reconcile_after),
        },
        "timeline": _timeline(job),
        "durations": {
            "queue_s": _seconds(job.queued_at, job.streaming_at),
            "streaming_s": _seconds(job.streaming_at, job.stream_closed_at or job.processing_at),
            "post_processing_s": _seconds(job.processing_at, job.done_at),
            "total_s": _seconds(job.queued_at, finished),
        },
        "result": None if result is None else {
            "full_transcript": result.full_transcript,
            "languages": result.languages,
            "audio_duration_s": result.audio_duration_s,
            "billing_time_s": result.billing_time_s,
            "transcription_time_s": result.transcription_time_s,
            "number_of_channels": result.number_of_channels,
            "gladia_status": result.gladia_status,
            "gladia_error_code": result.gladia_error_code,
            "gladia_completed_at": _iso(result.gladia_completed_at),
            "fetched_at": _iso(result.fetched_at),
        },
        "utterances": [
            {
                "utterance_id": u.utterance_id,
                "is_final": u.is_final,
                "channel": u.channel,
                "start": u.start_s,
                "end": u.end_s,
                "text": u.text,
                "language": u.language,
                "confidence": u.confidence,
                "word_count": u.word_count,
                "words": u.words,
                "source": u.source,
                "addons": by_utterance.get(u.utterance_id, []),
            }
            for u in utterances
        ],
        # Add-ons whose utterance was never stored (or that failed without naming one).
        "orphan_addons": [a for uid, items in by_utterance.items() if uid not in stored_ids for a in items],
        "post_processing": session_addons,
        "events": events,
        "callbacks": inbox,
        "reconciliation": None if latest is None else {
            "runs": runs,
            "trigger": latest.trigger,
            "outcome": latest.outcome,
            "reason": latest.reason,
            "started_at": _iso(latest.started_at),
            "finished_at": _iso(latest.finished_at),
            "expected": latest.expected,
            "received": latest.received,
            "missing": latest.missing,
            "duplicates": latest.duplicates,
            "mismatched": latest.mismatched,
            "repaired": latest.repaired,
        },
    }
    return jsonify(body)
