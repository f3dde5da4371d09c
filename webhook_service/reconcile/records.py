"""What a run reads of the job and writes of itself: the job view, the run rows, the pending list.

Each read is a short transaction of its own: the run's HTTP call happens
between them, never inside one (SQLite allows one writer at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_scope
from ..jobs.queries import require_job
from ..models import ENDED_STATES, InboxItem, Job, ReconciliationRun, utcnow


class JobNotFound(LookupError):
    """No job has this id or Gladia session id."""


@dataclass
class ReconcileResult:
    """What one call of :func:`reconcile_job` did (also stored as a run row)."""

    job_id: str
    gladia_id: Optional[str]
    outcome: str  # reconciled | retry | failed | skipped
    reason: Optional[str] = None
    expected: int = 0
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    mismatched: int = 0
    repaired: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    run_id: Optional[int] = None
    next_attempt_at: Optional[datetime] = None

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items()}
        if self.next_attempt_at:
            data["next_attempt_at"] = self.next_attempt_at.isoformat()
        return data


@dataclass
class JobView:
    """The few job fields a run needs, read in a short transaction."""

    id: str
    gladia_id: Optional[str]
    state: str
    session_config: dict[str, Any]
    deadline_from: Optional[datetime]
    previous_retries: int
    # Whether the worker finished with the audio (closed the stream, or gave up on the job). A
    # session can be `done` at Gladia while the job's audio was never sent: one created by a run
    # that lost its claim and then ended by Gladia for lack of audio. Settling the job on it
    # would report a transcript that does not exist.
    stream_finished: bool = True
    stream_progress: str = ""
    # A worker holds the job and reported recently: it may still be streaming or replacing the session.
    owned_by_live_worker: bool = False


def find_job_id(settings: Settings, job_or_session_id: str) -> str:
    """The job id for a job id or a Gladia session id (or a unique prefix); raises :class:`JobNotFound`."""
    with session_scope(settings.database_url) as session:
        try:
            return require_job(session, job_or_session_id, noun="job or session").id
        except LookupError as exc:  # unknown, or a prefix of several jobs
            raise JobNotFound(str(exc)) from None


def load_job_view(settings: Settings, job_id: str) -> JobView:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        retries = 0
        first_run = None
        if job.gladia_id:
            retries, first_run = session.execute(
                select(
                    func.count().filter(ReconciliationRun.outcome == "retry"),
                    func.min(ReconciliationRun.started_at),
                ).where(ReconciliationRun.gladia_id == job.gladia_id)
            ).one()
        # Every byte of the file acknowledged. A stream that reached its end records the file's
        # exact length there; ``stream_closed`` alone is not enough, since a run also closes the job
        # when the session ended under it with audio still unsent.
        if job.bytes_total:
            finished = (job.bytes_acked or 0) >= job.bytes_total
        else:
            finished = job.stream_closed_at is not None
        deadline_from = job.stream_closed_at or job.failed_at or first_run
        if finished:
            deadline_from = deadline_from or job.processing_at or job.done_at
        alive_since = utcnow() - timedelta(seconds=settings.stale_heartbeat_s)
        owned = job.worker_id is not None and job.heartbeat_at is not None and job.heartbeat_at >= alive_since
        return JobView(job.id, job.gladia_id, job.state, dict(job.session_config or {}),
                        deadline_from, int(retries or 0), finished,
                        f"{job.bytes_acked or 0} of {job.bytes_total or '?'} bytes acknowledged", owned)


def count_duplicates(session: Session, gladia_id: str) -> int:
    return int(session.scalar(
        select(func.coalesce(func.sum(InboxItem.duplicates), 0)).where(InboxItem.gladia_id == gladia_id)
    ) or 0)


def record_run(session: Session, result: ReconcileResult, trigger: str, started: datetime) -> int:
    run = ReconciliationRun(
        job_id=result.job_id,
        gladia_id=result.gladia_id,
        trigger=trigger[:32],
        started_at=started,
        finished_at=utcnow(),
        outcome=result.outcome,
        reason=result.reason,
        expected=result.expected,
        received=result.received,
        missing=result.missing,
        duplicates=result.duplicates,
        mismatched=result.mismatched,
        repaired=result.repaired,
        details=result.details or None,
    )
    session.add(run)
    session.flush()
    return run.id


def pending_job_ids(settings: Settings, limit: int = 10_000) -> list[str]:
    """Jobs awaiting reconciliation: a session exists and the job is not settled.

    Used by ``webhook-service reconcile --pending``: every job with a Gladia
    session whose stream has ended (or that has a reconciliation scheduled)
    and that is neither reconciled nor failed for good.
    """
    with session_scope(settings.database_url) as session:
        return list(session.scalars(
            select(Job.id)
            .where(Job.gladia_id.is_not(None))
            .where(
                Job.state.in_(ENDED_STATES)
                | (Job.reconcile_after.is_not(None) & (Job.state != "reconciled"))
            )
            .order_by(Job.created_at)
            .limit(limit)
        ))
