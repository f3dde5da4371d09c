"""One session in full: as JSON for `GET /api/sessions/<id>`, as stored rows for the dashboard's page.

The JSON is the job, its state timeline, durations, the final transcript, the
utterances with their words and add-ons, post-processing results, callback
counts and the latest reconciliation. Secrets never leave: the WebSocket URL
(its token is Gladia's credential) and the callback token are not in it, and
the whole answer goes through :func:`.redaction.public_copy`, so a token that
an older row (or a quoted error) still holds is redacted too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

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
from .queries import API_FORMAT, find_job, iso_z, job_summary, previous_sessions
from .redaction import public_copy

MAX_TIMELINE_EVENTS = 500


# ------------------------------------------------------------------ as JSON

@dataclass
class _Stored:
    """What the store holds for one Gladia session."""

    utterances: list[Utterance] = field(default_factory=list)
    addons: list[AddonResult] = field(default_factory=list)
    result: Optional[SessionResult] = None
    events: dict[str, dict[str, int]] = field(default_factory=dict)
    inbox: dict[str, Any] = field(default_factory=lambda: {"received": 0, "duplicates": 0, "by_status": {}})
    latest_run: Optional[ReconciliationRun] = None
    runs: int = 0


def session_detail(session: Session, gladia_id: str) -> Optional[dict[str, Any]]:
    """The JSON-ready detail of a session (by Gladia id, or by job id), or None when nothing matches."""
    found = _job_and_batch(session, gladia_id)
    if found is None:
        return None
    job, batch = found
    stored = _load_stored(session, job.gladia_id) if job.gladia_id else _Stored()
    by_utterance, session_addons = _addons_by_utterance(stored.addons)
    stored_ids = {u.utterance_id for u in stored.utterances}
    return public_copy({
        "job": _job_json(job, batch),
        "timeline": _timeline(job),
        "durations": _durations(job),
        "result": _result_json(stored.result),
        "utterances": [_utterance_json(u, by_utterance.get(u.utterance_id, [])) for u in stored.utterances],
        # Add-ons whose utterance was never stored (or that failed without naming one).
        "orphan_addons": [a for uid, items in by_utterance.items() if uid not in stored_ids for a in items],
        "post_processing": session_addons,
        "events": stored.events,
        "callbacks": stored.inbox,
        "reconciliation": _reconciliation_json(stored.latest_run, stored.runs),
        # Sessions of earlier runs (the job was run again): their results stay until the new one is reconciled.
        "previous_sessions": previous_sessions(session, [job.id]).get(job.id, []),
    })


def _job_and_batch(session: Session, ref: str) -> Optional[tuple[Job, Optional[Batch]]]:
    """The job (by Gladia id, job id or a unique prefix of either) and its batch."""
    job = find_job(session, ref)
    if job is None:
        return None
    return job, (session.get(Batch, job.batch_id) if job.batch_id else None)


def _load_stored(session: Session, gid: str) -> _Stored:
    stored = _Stored()
    stored.utterances = list(session.scalars(
        select(Utterance).where(Utterance.gladia_id == gid)
        .order_by(Utterance.start_s, Utterance.channel, Utterance.utterance_id)
    ))
    stored.addons = list(session.scalars(
        select(AddonResult).where(AddonResult.gladia_id == gid)
        .order_by(AddonResult.kind, AddonResult.utterance_id, AddonResult.target_language)
    ))
    stored.result = session.get(SessionResult, gid)
    for etype, source, count in session.execute(
        select(Event.type, Event.source, func.count()).where(Event.gladia_id == gid).group_by(Event.type, Event.source)
    ):
        stored.events.setdefault(etype, {})[source] = count
    for status, count, dups in session.execute(
        select(InboxItem.status, func.count(), func.coalesce(func.sum(InboxItem.duplicates), 0))
        .where(InboxItem.gladia_id == gid).group_by(InboxItem.status)
    ):
        stored.inbox["by_status"][status] = count
        stored.inbox["received"] += count
        stored.inbox["duplicates"] += int(dups)
    stored.latest_run = session.scalars(
        select(ReconciliationRun).where(ReconciliationRun.gladia_id == gid)
        .order_by(ReconciliationRun.started_at.desc(), ReconciliationRun.id.desc()).limit(1)
    ).first()
    stored.runs = session.scalar(select(func.count()).select_from(ReconciliationRun)
                                 .where(ReconciliationRun.gladia_id == gid)) or 0
    return stored


def _job_json(job: Job, batch: Optional[Batch]) -> dict[str, Any]:
    return {
        **job_summary(job, batch, API_FORMAT),
        "audio_sha256": job.audio_sha256,
        "audio_channels": job.audio_channels,
        "audio_sample_rate": job.audio_sample_rate,
        "custom_metadata": job.custom_metadata,
        "session_config": job.session_config,
        "gladia_created_at": iso_z(job.gladia_created_at),
        "reconcile_after": iso_z(job.reconcile_after),
        # Set once the transcript and results were erased (delete or retention), and Gladia's copy deleted.
        "content_deleted_at": iso_z(job.content_deleted_at),
        "gladia_deleted_at": iso_z(job.gladia_deleted_at),
    }


def _timeline(job: Job) -> list[dict[str, Any]]:
    """Each state the job reached with the first time it reached it, in lifecycle order.

    Lifecycle order rather than time order: the times of ``processing`` and
    ``done`` are Gladia's (the message's ``created_at``), the others ours, and
    two clocks must not reorder a lifecycle.
    """
    return [
        {"state": state, "at": iso_z(getattr(job, f"{state}_at"))}
        for state in JOB_STATES
        if getattr(job, f"{state}_at") is not None
    ]


def _seconds(start: Optional[datetime], end: Optional[datetime]) -> Optional[float]:
    return round((end - start).total_seconds(), 3) if start and end else None


def _durations(job: Job) -> dict[str, Optional[float]]:
    finished = job.done_at or job.reconciled_at or job.failed_at
    return {
        "queue_s": _seconds(job.queued_at, job.streaming_at),
        "streaming_s": _seconds(job.streaming_at, job.stream_closed_at or job.processing_at),
        "post_processing_s": _seconds(job.processing_at, job.done_at),
        "total_s": _seconds(job.queued_at, finished),
    }


def _result_json(result: Optional[SessionResult]) -> Optional[dict[str, Any]]:
    if result is None:
        return None
    return {
        "full_transcript": result.full_transcript,
        "languages": result.languages,
        "audio_duration_s": result.audio_duration_s,
        "billing_time_s": result.billing_time_s,
        "transcription_time_s": result.transcription_time_s,
        "number_of_channels": result.number_of_channels,
        "gladia_status": result.gladia_status,
        "gladia_error_code": result.gladia_error_code,
        "gladia_completed_at": iso_z(result.gladia_completed_at),
        "fetched_at": iso_z(result.fetched_at),
    }


def _addon_json(addon: AddonResult) -> dict[str, Any]:
    return {
        "kind": addon.kind,
        "target_language": addon.target_language or None,
        "data": addon.data,
        "error": addon.error,
        "source": addon.source,
        "created_at": iso_z(addon.created_at),
    }


def _addons_by_utterance(addons: list[AddonResult]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Add-ons of utterances by utterance id; session-level add-ons (post-processing) by kind."""
    by_utterance: dict[str, list[dict[str, Any]]] = {}
    session_addons: dict[str, Any] = {}
    for addon in addons:
        if addon.utterance_id:
            by_utterance.setdefault(addon.utterance_id, []).append(_addon_json(addon))
        else:
            session_addons.setdefault(addon.kind, []).append(_addon_json(addon))
    return by_utterance, session_addons


def _utterance_json(u: Utterance, addons: list[dict[str, Any]]) -> dict[str, Any]:
    return {
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
        "addons": addons,
    }


def _reconciliation_json(latest: Optional[ReconciliationRun], runs: int) -> Optional[dict[str, Any]]:
    if latest is None:
        return None
    return {
        "runs": runs,
        "trigger": latest.trigger,
        "outcome": latest.outcome,
        "reason": latest.reason,
        "started_at": iso_z(latest.started_at),
        "finished_at": iso_z(latest.finished_at),
        "expected": latest.expected,
        "received": latest.received,
        "missing": latest.missing,
        "duplicates": latest.duplicates,
        "mismatched": latest.mismatched,
        "repaired": latest.repaired,
    }


# ------------------------------------------------------- as stored rows

@dataclass
class SessionRows:
    """What the dashboard's session page shows, as the store holds it."""

    job: Job
    batch: Optional[Batch]
    result: Optional[SessionResult]
    utterances: list[Utterance]  # final ones, in time order
    events: list[Event]  # the first MAX_TIMELINE_EVENTS, in order of receipt
    events_truncated: bool
    runs: list[ReconciliationRun]
    inbox: list[Any]  # (status, event, received_at, duplicates, error) of each request


def session_rows(session: Session, job: Job) -> SessionRows:
    """One job's batch, result, final utterances, messages, reconciliation runs and callback requests."""
    batch = session.get(Batch, job.batch_id) if job.batch_id else None
    result = session.get(SessionResult, job.gladia_id) if job.gladia_id else None
    utterances = session.execute(
        select(Utterance).where(Utterance.job_id == job.id, Utterance.is_final.is_(True))
        .order_by(Utterance.start_s, Utterance.channel, Utterance.id)
    ).scalars().all()
    events = session.execute(
        select(Event).where(Event.job_id == job.id)
        .order_by(Event.received_at, Event.id).limit(MAX_TIMELINE_EVENTS + 1)
    ).scalars().all()
    runs = session.execute(
        select(ReconciliationRun).where(ReconciliationRun.job_id == job.id).order_by(ReconciliationRun.started_at)
    ).scalars().all()
    inbox = session.execute(
        select(InboxItem.status, InboxItem.event, InboxItem.received_at, InboxItem.duplicates, InboxItem.error)
        .where(InboxItem.job_id == job.id).order_by(InboxItem.received_at, InboxItem.id)
    ).all()
    return SessionRows(job=job, batch=batch, result=result, utterances=list(utterances),
                       events=list(events[:MAX_TIMELINE_EVENTS]), events_truncated=len(events) > MAX_TIMELINE_EVENTS,
                       runs=list(runs), inbox=list(inbox))
