"""Queries over jobs shared by the CLI and the JSON API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from ..config import Settings
from ..db import session_scope
from ..models import Batch, Job


def job_summary(job: Job, batch_name: str | None) -> dict[str, Any]:
    return {
        "id": job.id,
        "batch": batch_name,
        "source_path": job.source_path,
        "state": job.state,
        "gladia_id": job.gladia_id,
        "bytes_total": job.bytes_total,
        "bytes_sent": job.bytes_sent,
        "bytes_acked": job.bytes_acked,
        "audio_duration_s": job.audio_duration_s,
        "attempts": job.attempts,
        "reconnects": job.reconnects,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "updated_at": job.updated_at.isoformat() if job.updated_at else None,
        "heartbeat_at": job.heartbeat_at.isoformat() if job.heartbeat_at else None,
        "worker_id": job.worker_id,
        # Set while the job's task waits in the broker (no free session slot, Gladia's 429).
        "retry_at": job.retry_at.isoformat() if job.retry_at else None,
        "last_error": job.last_error,
    }


def job_summaries(settings: Settings, job_or_batch: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """One job, every job of a batch (id or name), or the most recent jobs.

    Raises LookupError when ``job_or_batch`` names nothing.
    """
    with session_scope(settings.database_url) as session:
        query = select(Job, Batch.name).outerjoin(Batch, Job.batch_id == Batch.id)
        if job_or_batch:
            batch_ids = select(Batch.id).where(or_(Batch.id == job_or_batch, Batch.name == job_or_batch))
            query = query.where(or_(Job.id == job_or_batch, Job.gladia_id == job_or_batch,
                                    Job.batch_id.in_(batch_ids))).order_by(Job.created_at)
        else:
            query = query.order_by(Job.created_at.desc()).limit(limit)
        rows = [job_summary(job, name) for job, name in session.execute(query)]
    if job_or_batch and not rows:
        raise LookupError(f"no job or batch named {job_or_batch!r}")
    return rows
