"""Queries over jobs shared by the CLI, the JSON API and the dashboard, and the one job summary shape.

A job is summarized by :func:`job_summary` for both `webhook-service status
--json` and `GET /api/sessions`: the same keys with the same meaning in both.
The two outputs were published with two different spellings of the same
values, which their readers rely on, so a :class:`SummaryFormat` says how each
output writes them: timestamps (``+00:00`` in the CLI, ``Z`` in the API) and
the batch (its name in the CLI, ``{"id", "name"}`` in the API). ``id`` and
``job_id`` are the same value: the CLI's name and the API's name for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_scope
from ..models import Batch, Job, JobSession
from .redaction import public_text


def iso_z(value: Optional[datetime]) -> Optional[str]:
    """A stored timestamp as the JSON API writes it: ISO-8601 in UTC with a ``Z``."""
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def _iso_offset(value: Optional[datetime]) -> Optional[str]:
    return value.isoformat() if value else None  # stored timestamps are UTC: ``+00:00``


def batch_ref(batch: Optional[Batch]) -> Optional[dict[str, Any]]:
    return None if batch is None else {"id": batch.id, "name": batch.name}


def _batch_name(batch: Optional[Batch]) -> Optional[str]:
    return None if batch is None else batch.name


@dataclass(frozen=True)
class SummaryFormat:
    """How one output writes the values the CLI and the API have always spelled differently."""

    timestamp: Callable[[Optional[datetime]], Optional[str]]
    batch: Callable[[Optional[Batch]], Any]


STATUS_FORMAT = SummaryFormat(timestamp=_iso_offset, batch=_batch_name)  # `webhook-service status --json`
API_FORMAT = SummaryFormat(timestamp=iso_z, batch=batch_ref)  # GET /api/sessions[/<id>]


def job_summary(job: Job, batch: Optional[Batch], fmt: SummaryFormat = API_FORMAT) -> dict[str, Any]:
    """One job: where it is in its lifecycle and its progress (never its WebSocket URL or callback token)."""
    stamp = fmt.timestamp
    return {
        "job_id": job.id,
        "id": job.id,
        "gladia_id": job.gladia_id,
        "batch": fmt.batch(batch),
        "source_path": job.source_path,
        "state": job.state,
        "created_at": stamp(job.created_at),
        "updated_at": stamp(job.updated_at),
        "done_at": stamp(job.done_at),
        "reconciled_at": stamp(job.reconciled_at),
        "audio_duration_s": job.audio_duration_s,
        "bytes_total": job.bytes_total,
        "bytes_sent": job.bytes_sent,
        "bytes_acked": job.bytes_acked,
        "attempts": job.attempts,
        "retries": job.retries or 0,  # runs after the first, each with a fresh Gladia session
        "cancelled_at": stamp(job.cancelled_at),
        "reconnects": job.reconnects,
        "heartbeat_at": stamp(job.heartbeat_at),
        "worker_id": job.worker_id,
        # Set while the job's task waits in the broker (no free session slot, Gladia's 429).
        "retry_at": stamp(job.retry_at),
        "last_error": public_text(job.last_error),
    }


def job_summaries(settings: Settings, job_or_batch: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """One job, every job of a batch (id or name), or the most recent jobs, as `status --json` shows them.

    Raises LookupError when ``job_or_batch`` names nothing.
    """
    with session_scope(settings.database_url) as session:
        query = select(Job, Batch).outerjoin(Batch, Job.batch_id == Batch.id)
        if job_or_batch:
            if find_batch_id(session, job_or_batch) is None:
                job = find_job(session, job_or_batch)
                job_or_batch = job.id if job is not None else job_or_batch
            batch_ids = select(Batch.id).where(or_(Batch.id == job_or_batch, Batch.name == job_or_batch))
            query = query.where(or_(Job.id == job_or_batch, Job.gladia_id == job_or_batch,
                                    Job.batch_id.in_(batch_ids))).order_by(Job.created_at)
        else:
            query = query.order_by(Job.created_at.desc()).limit(limit)
        rows = [job_summary(job, batch, STATUS_FORMAT) for job, batch in session.execute(query)]
    if job_or_batch and not rows:
        raise LookupError(f"no job or batch named {job_or_batch!r}")
    return rows


MIN_PREFIX = 8  # `status` shows the first 8 characters of a job id


class AmbiguousReference(LookupError):
    """A prefix that starts more than one job id or Gladia session id."""


def find_job(session: Session, ref: str) -> Optional[Job]:
    """A job by its id or its Gladia session id, whole or by a unique prefix of at least 8 characters.

    `status` prints 8-character job ids, so every command that takes a job accepts what it shows.
    Raises :class:`AmbiguousReference` when a prefix starts several ids; returns None when nothing
    matches.
    """
    ref = ref.strip()
    if not ref or len(ref) > 64 or "\x00" in ref:
        return None
    job = session.get(Job, ref) or session.execute(select(Job).where(Job.gladia_id == ref)).scalar_one_or_none()
    if job is not None or len(ref) < MIN_PREFIX:
        return job
    matches = session.execute(
        select(Job).where(or_(Job.id.startswith(ref, autoescape=True),
                              Job.gladia_id.startswith(ref, autoescape=True))).limit(6)).scalars().all()
    if len(matches) > 1:
        shown = ", ".join(sorted(j.id[:13] for j in matches[:5]))
        raise AmbiguousReference(f"{ref!r} starts several jobs ({shown}); give more characters")
    return matches[0] if matches else None


class NoSuchJob(LookupError):
    """No job by this id, Gladia id or prefix."""


def require_job(session: Session, ref: str, noun: str = "session or job") -> Job:
    """:func:`find_job`, for callers that cannot go on without one: raises :class:`NoSuchJob` (or
    :class:`AmbiguousReference`, both LookupErrors) with a message naming ``ref``."""
    job = find_job(session, ref)
    if job is None:
        raise NoSuchJob(f"no {noun} with id {ref!r}")
    return job


def find_batch_id(session: Session, batch_id_or_name: str) -> Optional[str]:
    """The id of the batch with this id or name, or None."""
    return session.execute(
        select(Batch.id).where(or_(Batch.id == batch_id_or_name, Batch.name == batch_id_or_name))).scalar()


def batch_names(session: Session) -> list[str]:
    """Every batch name, sorted (the dashboard's batch filter)."""
    return list(session.execute(select(Batch.name).order_by(Batch.name)).scalars().all())


def previous_sessions(session: Session, job_ids: list[str], fmt: SummaryFormat = API_FORMAT
                      ) -> dict[str, list[dict[str, Any]]]:
    """The sessions each job had before it was run again (oldest first), by job id."""
    found: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(job_ids), 500):
        for record in session.execute(select(JobSession).where(JobSession.job_id.in_(job_ids[start:start + 500]))
                                      .order_by(JobSession.run)).scalars():
            found.setdefault(record.job_id, []).append({
                "gladia_id": record.gladia_id,
                "run": record.run,
                "state": record.state,
                "last_error": public_text(record.last_error),
                "bytes_acked": record.bytes_acked,
                "bytes_total": record.bytes_total,
                "replaced_at": fmt.timestamp(record.replaced_at),
                "replaced_by": record.replaced_by,
                "results_deleted_at": fmt.timestamp(record.results_deleted_at),
            })
    return found
