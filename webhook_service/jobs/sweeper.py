"""The sweeper: re-drive stale work from SQL state (Celery beat, every SWEEP_INTERVAL_S).

The database, not the broker, says what remains to be done, so anything the
broker lost (a message dropped by Redis, a task on a SIGKILLed worker under
the filesystem transport, which never redelivers) is found here and sent
again. One sweep:

1. schedules a reconciliation for every job whose stream has ended but that
   nobody scheduled (``stream_closed``/``processing``/``done`` with no
   ``reconcile_after``);
2. enqueues ``tasks.reconcile`` for every job whose ``reconcile_after`` is due;
3. re-drives jobs in ``starting``/``streaming`` (or claimed while
   ``queued``) whose heartbeat went stale (the worker died), jobs
   ``queued`` but never picked up, and ``queued`` jobs whose deferred task is
   overdue (``retry_at``; the task was lost): ``tasks.stream_job`` again,
   which resumes on the same session;
4. re-runs the normalization of inbox rows left ``pending`` (the receiver
   died between commit and normalization) or ``failed`` (bounded attempts);
5. applies retention (``RETENTION_DAYS``, ``INBOX_RETENTION_DAYS``,
   ``GLADIA_DELETE_AFTER_RECONCILE``): one bounded batch of each per sweep
   (:mod:`webhook_service.retention.policy`).

Every task is idempotent, so a double enqueue is harmless; to avoid
flooding, each re-drive is claimed with a compare-and-set UPDATE that pushes
the job's ``reconcile_after`` (reconciliations), ``heartbeat_at`` or
``retry_at`` (streams) forward by a lease: the same job is not re-driven again before the
lease runs out, even by two sweeps running at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import and_, func, or_, select, update

from .. import metrics
from ..config import Settings
from ..db import session_scope
from ..ingest import process_inbox_item
from ..models import ACTIVE_STATES, ENDED_STATES, InboxItem, Job, utcnow
from . import slots
from .dispatch import Dispatcher

log = logging.getLogger(__name__)

# How many rows of each kind one sweep handles (the next sweep takes the rest).
SWEEP_BATCH = 500


@dataclass
class SweepReport:
    """What one sweep did (logged, returned to tests and the CLI)."""

    scheduled: list[str] = field(default_factory=list)  # reconcile_after set by the sweep
    reconciles: list[str] = field(default_factory=list)  # tasks.reconcile sent
    cleared: list[str] = field(default_factory=list)  # stale reconcile_after of settled jobs
    restarted_stale: list[str] = field(default_factory=list)  # stream_job for a silent worker
    restarted_queued: list[str] = field(default_factory=list)  # stream_job for a lost task
    inbox_retried: list[int] = field(default_factory=list)
    inbox_errors: int = 0
    dispatch_errors: int = 0
    retention: dict[str, int] = field(default_factory=dict)  # what retention erased (PurgeReport.as_dict)

    def summary(self) -> dict[str, int]:
        return {
            "scheduled": len(self.scheduled),
            "reconciles": len(self.reconciles),
            "cleared": len(self.cleared),
            "restarted_stale": len(self.restarted_stale),
            "restarted_queued": len(self.restarted_queued),
            "inbox_retried": len(self.inbox_retried),
            "inbox_errors": self.inbox_errors,
            "dispatch_errors": self.dispatch_errors,
            **{f"retention_{k}": v for k, v in self.retention.items()},
        }


def reconcile_lease_s(settings: Settings) -> float:
    """How long an enqueued reconciliation owns its job before a sweep sends it again.

    Long enough for a run to finish (its GET retries take seconds), short
    enough that a task lost with its worker is sent again soon.
    """
    return max(settings.stale_heartbeat_s, 2 * settings.sweep_interval_s)


def sweep(settings: Settings, *, dispatcher: Dispatcher,
          now: Optional[datetime] = None) -> SweepReport:
    """Run one sweep; see the module docstring. Safe to run concurrently with itself."""
    now = now or utcnow()
    report = SweepReport()
    with metrics.SWEEP_SECONDS.time():
        _schedule_unscheduled(settings, now, report)
        _enqueue_due_reconciliations(settings, now, dispatcher, report)
        _restart_stale_streams(settings, now, dispatcher, report)
        _restart_lost_queued(settings, now, dispatcher, report)
        _retry_inbox(settings, now, report)
        _apply_retention(settings, now, report)
    metrics.SWEEPS.inc()
    summary = {k: v for k, v in report.summary().items() if v}
    for action, count in summary.items():
        metrics.SWEEP_ACTIONS.labels(action).inc(count)
    if summary:
        log.info("sweep: %s", ", ".join(f"{k}={v}" for k, v in summary.items()))
    return report


def _schedule_unscheduled(settings: Settings, now: datetime, report: SweepReport) -> None:
    """Jobs whose stream ended but that nobody scheduled for reconciliation.

    ``done`` is due at once; otherwise RECONCILE_DELAY_S after the stream
    closed, the same delay the worker uses when it closes a stream.
    """
    delay = timedelta(seconds=settings.reconcile_delay_s)
    with session_scope(settings.database_url) as session:
        jobs = session.scalars(
            select(Job)
            .where(Job.state.in_(ENDED_STATES), Job.gladia_id.is_not(None), Job.reconcile_after.is_(None))
            .limit(SWEEP_BATCH)
        ).all()
        for job in jobs:
            if job.state == "done":
                job.reconcile_after = now
            else:
                closed = job.stream_closed_at or job.processing_at or now
                job.reconcile_after = max(now, closed + delay)
            report.scheduled.append(job.id)


def _enqueue_due_reconciliations(settings: Settings, now: datetime, dispatcher: Dispatcher,
                                 report: SweepReport) -> None:
    lease_until = now + timedelta(seconds=reconcile_lease_s(settings))
    with session_scope(settings.database_url) as session:
        # A settled job needs no further look (e.g. an end_session callback
        # that arrived after the session was reconciled).
        cleared = session.scalars(
            update(Job)
            .where(Job.state == "reconciled", Job.reconcile_after.is_not(None))
            .values(reconcile_after=None)
            .returning(Job.id)
        ).all()
        report.cleared.extend(cleared)
        due = session.scalars(
            select(Job.id)
            .where(Job.reconcile_after <= now, Job.state != "reconciled")
            .order_by(Job.reconcile_after)
            .limit(SWEEP_BATCH)
        ).all()
    for job_id in due:
        # Claim: only the sweep whose UPDATE matched sends the task.
        with session_scope(settings.database_url) as session:
            claimed = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.reconcile_after <= now)
                .values(reconcile_after=lease_until)
            ).rowcount
        if not claimed:
            continue
        if _dispatch(lambda: dispatcher.reconcile(job_id, "sweep"), report):
            report.reconciles.append(job_id)


def _restart_stale_streams(settings: Settings, now: datetime, dispatcher: Dispatcher,
                           report: SweepReport) -> None:
    """Jobs a worker owned but stopped reporting on: send stream_job again.

    The stream task resumes on the job's existing session url from the last
    acknowledged byte (it never creates a second session). The silent
    owner's claim is released (``worker_id`` cleared: should that worker
    still be alive, its next heartbeat finds it lost the job and it stops),
    and the heartbeat is pushed to now, so the next re-drive of this job
    waits another STALE_HEARTBEAT_S: the new run's own heartbeats take over
    from there.
    """
    cutoff = now - timedelta(seconds=settings.stale_heartbeat_s)
    last_sign = func.coalesce(Job.heartbeat_at, Job.starting_at, Job.queued_at, Job.created_at)
    # A job still ``queued`` but claimed by a worker (it died between its
    # claim and the session's creation) is as stale as a silent stream.
    owned = or_(Job.state.in_(ACTIVE_STATES), and_(Job.state == "queued", Job.worker_id.is_not(None)))
    with session_scope(settings.database_url) as session:
        stale = session.scalars(select(Job.id).where(owned, last_sign < cutoff).limit(SWEEP_BATCH)).all()
    for job_id in stale:
        if _claim_stream(settings, job_id, now, cutoff, owned, release_owner=True):
            # The dead owner's live-session slot stays with the job (its session still counts at
            # Gladia), its lease extended: the resumed run finds it held for it and never competes
            # with new sessions, whose wait is harmless, while Gladia's reconnect grace runs out.
            slots.hold_slot(settings.database_url, job_id, slots.lease_s(settings), now)
            if _dispatch(lambda: dispatcher.stream(job_id, resume=True), report):
                report.restarted_stale.append(job_id)


def _restart_lost_queued(settings: Settings, now: datetime, dispatcher: Dispatcher,
                         report: SweepReport) -> None:
    """Queued jobs whose task the broker lost.

    Either no worker ever touched the job for ``STALE_QUEUED_S`` (a backlog
    legitimately waits in the broker that long), or its task was deferred and
    is overdue by a lease (:func:`reconcile_lease_s`): a deferred task waits in
    a worker's memory, and a worker that dies takes it along.
    """
    cutoff = now - timedelta(seconds=settings.stale_queued_s)
    last_sign = func.coalesce(Job.heartbeat_at, Job.queued_at, Job.created_at)
    never_started = and_(Job.state == "queued", Job.worker_id.is_(None), Job.retry_at.is_(None))
    overdue_before = now - timedelta(seconds=reconcile_lease_s(settings))
    deferred = and_(Job.state == "queued", Job.worker_id.is_(None), Job.retry_at < overdue_before)
    with session_scope(settings.database_url) as session:
        lost = session.scalars(select(Job.id).where(never_started, last_sign < cutoff).limit(SWEEP_BATCH)).all()
        overdue = session.scalars(select(Job.id).where(deferred).limit(SWEEP_BATCH)).all()
    for job_id in lost:
        if _claim_stream(settings, job_id, now, cutoff, never_started):
            if _dispatch(lambda: dispatcher.stream(job_id, resume=False), report):
                report.restarted_queued.append(job_id)
    for job_id in overdue:
        # Compare-and-set on retry_at: the task sent now is due now, so it is overdue again only
        # after another lease (and a concurrent sweep's UPDATE matches nothing).
        with session_scope(settings.database_url) as session:
            claimed = session.execute(
                update(Job).where(Job.id == job_id, deferred).values(retry_at=now)
            ).rowcount == 1
        if claimed and _dispatch(lambda: dispatcher.stream(job_id, resume=False), report):
            report.restarted_queued.append(job_id)


def _claim_stream(settings: Settings, job_id: str, now: datetime, cutoff: datetime, condition, *,
                  release_owner: bool = False) -> bool:
    """Compare-and-set: only the sweep whose UPDATE matched re-drives the job."""
    last_sign = func.coalesce(Job.heartbeat_at, Job.starting_at, Job.queued_at, Job.created_at)
    values: dict = {"heartbeat_at": now}
    if release_owner:
        values["worker_id"] = None
    with session_scope(settings.database_url) as session:
        return session.execute(
            update(Job).where(Job.id == job_id, condition, last_sign < cutoff).values(**values)
        ).rowcount == 1


def _retry_inbox(settings: Settings, now: datetime, report: SweepReport) -> None:
    """Normalize again the inbox rows the receiver could not finish.

    ``pending`` rows older than INBOX_RETRY_AFTER_S were committed by a
    receiver that died before normalizing them; ``failed`` rows are retried
    until INBOX_MAX_ATTEMPTS. Runs here directly rather than through the
    broker: ingest must never depend on it.
    """
    cutoff = now - timedelta(seconds=settings.inbox_retry_after_s)
    with session_scope(settings.database_url) as session:
        ids = session.scalars(
            select(InboxItem.id)
            .where(
                or_(
                    and_(InboxItem.status == "pending", InboxItem.received_at < cutoff),
                    and_(InboxItem.status == "failed", InboxItem.attempts < settings.inbox_max_attempts),
                )
            )
            .order_by(InboxItem.id)
            .limit(SWEEP_BATCH)
        ).all()
    for inbox_id in ids:
        try:
            process_inbox_item(settings, inbox_id)
            report.inbox_retried.append(inbox_id)
        except Exception:  # recorded on the row by process_inbox_item; keep sweeping the rest
            log.exception("inbox item %s still fails", inbox_id)
            report.inbox_errors += 1


def _apply_retention(settings: Settings, now: datetime, report: SweepReport) -> None:
    """One bounded batch of each retention step; the next sweep takes the rest."""
    from ..retention import purge

    try:
        report.retention = purge(settings, now, max_batches=1).as_dict()
    except Exception:  # retention must never stop the sweeper's other work
        log.exception("retention failed; the next sweep tries again")


def _dispatch(send, report: SweepReport) -> bool:
    """Send one task; a broker outage is logged and retried by the next sweep after the lease."""
    try:
        send()
        return True
    except Exception:
        log.exception("could not enqueue a task; the next sweep retries after the lease")
        report.dispatch_errors += 1
        return False
