"""Global limit on live Gladia sessions, shared by every worker through the database.

Gladia plans allow a fixed number of concurrent live sessions (1 free, 30
paid). Each live session holds one row of ``concurrency_slots``; the slot
number is the primary key and is below ``MAX_CONCURRENT_SESSIONS``, so the
database itself refuses a session too many: taking a slot is an
``INSERT ... ON CONFLICT DO NOTHING`` of a free number, and only the
writer whose row landed owns it. A slot is a lease: the streamer renews it
with every heartbeat, and a slot whose lease ran out (its worker died) may be
taken over by a conditional UPDATE, so a crash never leaks capacity for longer
than the lease. Resumptions of recorded sessions go before new sessions (see
:func:`acquire_slot`): Gladia ends a disconnected session after a grace period.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_scope
from ..models import ACTIVE_STATES, ConcurrencySlot, Job, utcnow

# A new stream on standby (``SLOT_STANDBY``) waits on its thread this long for a slot, then its task goes
# back to the broker. Longer than most sessions, so that the runs waiting behind a wave of sessions are
# still on standby when the wave ends, and each freed slot is handed over within the process; bounded,
# so that a stream task's time limits (worker.config) cover the wait plus Gladia's session cap.
STANDBY_WAIT_S = 300.0


def _insert(session: Session):
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    return dialect.insert(ConcurrencySlot)


def acquire_slot(database_url: str, job_id: str, limit: int, lease_s: float,
                 now: Optional[datetime] = None, *, new_session: bool = False) -> Optional[int]:
    """Take (or keep) a slot for ``job_id``; None when all ``limit`` slots are held by live leases.

    A job that already holds a slot (a resumed stream) keeps it and has its
    lease renewed: resuming never needs a second slot.

    Resumptions come first: Gladia keeps a disconnected session only for a
    grace period, while a new session can wait. So a ``new_session`` takes a
    slot only when more slots are free than there are resumptions waiting for
    one (jobs whose session is recorded, in ``starting``/``streaming``, that
    hold no live slot: their worker died or handed them back).
    """
    with session_scope(database_url) as session:
        return acquire_slot_in(session, job_id, limit, lease_s, now, new_session=new_session)


def acquire_slot_in(session: Session, job_id: str, limit: int, lease_s: float,
                    now: Optional[datetime] = None, *, new_session: bool = False) -> Optional[int]:
    """:func:`acquire_slot` within the caller's transaction (e.g. the one counting the run's attempt)."""
    now = now or utcnow()
    expires = now + timedelta(seconds=lease_s)
    held = session.execute(
        update(ConcurrencySlot).where(ConcurrencySlot.job_id == job_id)
        .values(expires_at=expires).returning(ConcurrencySlot.slot)
    ).scalar_one_or_none()
    if held is not None:
        return held
    taken = dict(session.execute(
        select(ConcurrencySlot.slot, ConcurrencySlot.expires_at).where(ConcurrencySlot.slot < limit)
    ).all())
    if new_session:
        free = limit - sum(1 for expires_at in taken.values() if expires_at >= now)
        if free <= 0 or _waiting_resumptions(session, job_id, now) >= free:
            return None
    # In random order: runs starting together (a batch just submitted) would otherwise all try slot 0,
    # each waiting on PostgreSQL for the previous one's uncommitted row, then all try slot 1...
    for slot in random.sample(range(limit), limit):
        if slot not in taken:
            inserted = session.execute(
                _insert(session).values(slot=slot, job_id=job_id, acquired_at=now, expires_at=expires)
                .on_conflict_do_nothing().returning(ConcurrencySlot.slot)
            ).scalar_one_or_none()
            if inserted is not None:
                return slot
        elif taken[slot] < now:
            result = session.execute(
                update(ConcurrencySlot)
                .where(ConcurrencySlot.slot == slot, ConcurrencySlot.expires_at < now)
                .values(job_id=job_id, acquired_at=now, expires_at=expires)
            )
            if result.rowcount == 1:
                return slot
    return None


def _waiting_resumptions(session: Session, job_id: str, now: datetime) -> int:
    live_slot = exists().where(ConcurrencySlot.job_id == Job.id, ConcurrencySlot.expires_at >= now)
    return session.execute(
        select(func.count()).select_from(Job)
        .where(Job.state.in_(ACTIVE_STATES), Job.ws_url.is_not(None), Job.id != job_id, ~live_slot)
    ).scalar_one()


def hold_slot(database_url: str, job_id: str, lease_s: float, now: Optional[datetime] = None) -> bool:
    """Extend the lease of the slot ``job_id`` holds, if any, so the job's next run finds it.

    Used when a stream is handed over (its worker died or shut down): its
    Gladia session still counts against the plan's limit, and the run that
    resumes it must not compete with new sessions for capacity.
    """
    now = now or utcnow()
    with session_scope(database_url) as session:
        return session.execute(
            update(ConcurrencySlot).where(ConcurrencySlot.job_id == job_id)
            .values(expires_at=now + timedelta(seconds=lease_s))
        ).rowcount == 1


def renew_slots(session: Session, job_ids: list[str], lease_s: float, now: Optional[datetime] = None) -> None:
    """Extend the leases of live streams (called with the heartbeat, in its transaction)."""
    if not job_ids:
        return
    now = now or utcnow()
    session.execute(
        update(ConcurrencySlot).where(ConcurrencySlot.job_id.in_(job_ids))
        .values(expires_at=now + timedelta(seconds=lease_s))
    )


def release_slot(database_url: str, job_id: str) -> bool:
    """Give back the slot ``job_id`` holds; whether it held one."""
    with session_scope(database_url) as session:
        return release_slot_in(session, job_id)


def release_slot_in(session: Session, job_id: str) -> bool:
    """:func:`release_slot` within the caller's transaction (e.g. the one recording the stream's end)."""
    return session.execute(delete(ConcurrencySlot).where(ConcurrencySlot.job_id == job_id)).rowcount == 1


# Candidates read per hand-off: a few, in case concurrent hand-offs take the first ones.
_HANDOFF_CANDIDATES = 8


def next_waiting(database_url: str, now: Optional[datetime] = None) -> Optional[str]:
    """Pick the oldest new job waiting for a slot and mark its task due now; its id, or None.

    Called by a run that has just freed a slot, before it sends the job's task
    again (a wake-up): the job's deferred task would otherwise come back only
    after ``SLOT_RETRY_S``. Waiting means ``queued``, unclaimed, without a
    recorded session (resumptions wait on their own thread and are not woken
    here; :func:`acquire_slot` keeps them first anyway), and not already due
    (``retry_at`` in the future, or never deferred: a task still in the
    broker's backlog). The pick is a compare-and-set on ``retry_at``, so two
    slots freed at once wake two different jobs. ``retry_at = now`` is the
    sweeper's cue if the wake-up is lost: the task is then overdue after a
    lease and sent again, so the job is never lost, only delayed.
    """
    now = now or utcnow()
    # Due within a second counts as due: a concurrent hand-off whose clock is a little behind must not
    # take the job this one just marked.
    waiting = ((Job.state == "queued") & Job.worker_id.is_(None) & Job.ws_url.is_(None)
               & (Job.retry_at.is_(None) | (Job.retry_at > now + timedelta(seconds=1))))
    with session_scope(database_url) as session:
        candidates = session.scalars(
            select(Job.id).where(waiting).order_by(Job.created_at, Job.id).limit(_HANDOFF_CANDIDATES)
        ).all()
        for job_id in candidates:
            if session.execute(update(Job).where(Job.id == job_id, waiting).values(retry_at=now)).rowcount == 1:
                return job_id
    return None


def slots_in_use(database_url: str, now: Optional[datetime] = None) -> int:
    now = now or utcnow()
    with session_scope(database_url) as session:
        return len(session.execute(
            select(ConcurrencySlot.slot).where(ConcurrencySlot.expires_at >= now)
        ).all())


def lease_s(settings: Settings) -> float:
    """Concurrency-slot lease: long enough to survive a few missed heartbeats."""
    return max(settings.stale_heartbeat_s, 3 * settings.heartbeat_interval_s)
