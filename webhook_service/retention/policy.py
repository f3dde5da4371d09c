"""Retention: what the settings say may no longer be kept is erased, a bounded batch at a time.

* ``RETENTION_DAYS``: a settled job (``reconciled`` or ``failed``) that ended longer ago has its content
  erased (:func:`.erase.erase_content`; the job row and its figures stay for the reports);
* ``INBOX_RETENTION_DAYS``: a callback request received longer ago loses its raw body (its row stays:
  status, time, redeliveries, which the callback-health report counts); rows still waiting for
  normalization (``pending``, or ``failed`` with attempts left) are kept;
* ``GLADIA_DELETE_AFTER_RECONCILE``: a reconciled session is deleted at Gladia (``DELETE /v2/live/:id``).

0 days keeps forever. Each step works on at most a batch of rows per transaction (:data:`JOB_BATCH`,
:data:`INBOX_BATCH`), so a large purge never holds a long lock: the sweeper runs one batch of each per
sweep, ``webhook-service purge`` loops until nothing is left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Optional

from sqlalchemy import and_, func, not_, or_, select, text, update

from ..config import Settings
from ..db import session_scope
from ..gladia.client import GladiaClient, GladiaError
from ..models import DeletionAudit, InboxItem, Job, utcnow
from ..reports import refresh_session_stats
from .erase import erase_content

log = logging.getLogger(__name__)

JOB_BATCH = 50  # jobs erased per transaction
INBOX_BATCH = 500  # callback bodies blanked per transaction
GLADIA_BATCH = 20  # Gladia sessions deleted per sweep (one HTTP request each)
ACTOR = "retention"


@dataclass
class PurgeReport:
    sessions: list[str] = field(default_factory=list)  # job ids whose content was erased
    inbox_bodies: int = 0
    gladia_deleted: list[str] = field(default_factory=list)  # Gladia ids
    gladia_errors: int = 0

    def as_dict(self) -> dict:
        return {"sessions": len(self.sessions), "inbox_bodies": self.inbox_bodies,
                "gladia_deleted": len(self.gladia_deleted), "gladia_errors": self.gladia_errors}


@dataclass(frozen=True)
class PurgePlan:
    """What a purge would do now (``purge --dry-run``)."""

    sessions: int
    sessions_before: Optional[datetime]
    inbox_bodies: int
    inbox_before: Optional[datetime]
    gladia_sessions: int


def _settled_before(cutoff: datetime):
    ended = func.coalesce(Job.reconciled_at, Job.failed_at, Job.updated_at)
    return and_(Job.state.in_(("reconciled", "failed")), Job.content_deleted_at.is_(None), ended < cutoff)


def _expired_bodies(settings: Settings, cutoff: datetime):
    retryable = or_(InboxItem.status == "pending",
                    and_(InboxItem.status == "failed", InboxItem.attempts < settings.inbox_max_attempts))
    # The literal predicate is the one of the partial index ix_callback_inbox_body_kept (migration 0006).
    return and_(InboxItem.received_at < cutoff, text("length(callback_inbox.body) > 0"), not_(retryable))


def _gladia_due():
    return and_(Job.state == "reconciled", Job.gladia_id.is_not(None), Job.gladia_deleted_at.is_(None))


def cutoffs(settings: Settings, now: datetime) -> tuple[Optional[datetime], Optional[datetime]]:
    sessions = now - timedelta(days=settings.retention_days) if settings.retention_days else None
    inbox = now - timedelta(days=settings.inbox_retention_days) if settings.inbox_retention_days else None
    return sessions, inbox


def plan(settings: Settings, now: Optional[datetime] = None) -> PurgePlan:
    now = now or utcnow()
    sessions_before, inbox_before = cutoffs(settings, now)
    with session_scope(settings.database_url) as session:
        def count(model, condition) -> int:
            return int(session.scalar(select(func.count()).select_from(model).where(condition)) or 0)

        return PurgePlan(
            sessions=count(Job, _settled_before(sessions_before)) if sessions_before else 0,
            sessions_before=sessions_before,
            inbox_bodies=count(InboxItem, _expired_bodies(settings, inbox_before)) if inbox_before else 0,
            inbox_before=inbox_before,
            gladia_sessions=count(Job, _gladia_due()) if settings.gladia_delete_after_reconcile else 0,
        )


def purge(settings: Settings, now: Optional[datetime] = None, *, max_batches: Optional[int] = None,
          client_factory: Optional[Callable[[Settings], GladiaClient]] = None) -> PurgeReport:
    """Apply retention; at most ``max_batches`` batches of each kind (None: until nothing is left)."""
    now = now or utcnow()
    report = PurgeReport()
    sessions_before, inbox_before = cutoffs(settings, now)
    if sessions_before:
        _purge_sessions(settings, sessions_before, now, max_batches, report)
    if inbox_before:
        _purge_inbox(settings, inbox_before, now, max_batches, report)
    if settings.gladia_delete_after_reconcile:
        _delete_at_gladia(settings, now, max_batches, report, client_factory or GladiaClient.from_settings)
    summary = {k: v for k, v in report.as_dict().items() if v}
    if summary:
        log.info("retention: %s", ", ".join(f"{k}={v}" for k, v in summary.items()))
    return report


def _batches(max_batches: Optional[int]):
    done = 0
    while max_batches is None or done < max_batches:
        yield done
        done += 1


def _purge_sessions(settings: Settings, cutoff: datetime, now: datetime, max_batches: Optional[int],
                    report: PurgeReport) -> None:
    refreshed = False
    for _ in _batches(max_batches):
        with session_scope(settings.database_url) as session:
            ids = session.scalars(select(Job.id).where(_settled_before(cutoff)).order_by(Job.id)
                                  .limit(JOB_BATCH)).all()
        if not ids:
            return
        if not refreshed:  # the figures the reports keep are the ones computed from the rows about to go
            refresh_session_stats(settings.database_url)
            refreshed = True
        with session_scope(settings.database_url) as session:
            jobs = session.scalars(select(Job).where(Job.id.in_(ids), _settled_before(cutoff))
                                   .with_for_update(skip_locked=True)).all()
            for job in jobs:
                erase_content(session, job, actor=ACTOR, action="retention", now=now)
                report.sessions.append(job.id)
        if len(ids) < JOB_BATCH:
            return


def _purge_inbox(settings: Settings, cutoff: datetime, now: datetime, max_batches: Optional[int],
                 report: PurgeReport) -> None:
    for _ in _batches(max_batches):
        with session_scope(settings.database_url) as session:
            ids = session.scalars(select(InboxItem.id).where(_expired_bodies(settings, cutoff))
                                  .order_by(InboxItem.received_at).limit(INBOX_BATCH)).all()
            if not ids:
                return
            blanked = session.execute(update(InboxItem).where(InboxItem.id.in_(ids),
                                                              _expired_bodies(settings, cutoff))
                                      .values(body=b"")).rowcount or 0
            session.add(DeletionAudit(at=now, actor=ACTOR, action="inbox_retention",
                                      rows={"callback_inbox_bodies": blanked}))
            report.inbox_bodies += blanked
        if len(ids) < INBOX_BATCH:
            return


def _delete_at_gladia(settings: Settings, now: datetime, max_batches: Optional[int], report: PurgeReport,
                      client_factory: Callable[[Settings], GladiaClient]) -> None:
    client = client_factory(settings)
    failed: set[str] = set()
    try:
        for _ in _batches(max_batches):
            with session_scope(settings.database_url) as session:
                due = session.execute(select(Job.id, Job.gladia_id).where(_gladia_due(), Job.id.not_in(failed))
                                      .order_by(Job.reconciled_at, Job.id).limit(GLADIA_BATCH)).all()
            if not due:
                return
            for job_id, gladia_id in due:
                try:
                    answer = "deleted" if client.delete_live(gladia_id) else "already gone (404)"
                except GladiaError as exc:  # retried by the next sweep
                    log.warning("retention: Gladia did not delete session %s: %s", gladia_id, exc)
                    report.gladia_errors += 1
                    failed.add(job_id)
                    continue
                with session_scope(settings.database_url) as session:
                    session.execute(update(Job).where(Job.id == job_id).values(gladia_deleted_at=now))
                    session.add(DeletionAudit(at=now, actor=ACTOR, action="gladia_after_reconcile", job_id=job_id,
                                              gladia_id=gladia_id, rows={}, gladia=answer))
                report.gladia_deleted.append(gladia_id)
            if len(due) < GLADIA_BATCH:
                return
    finally:
        client.close()
