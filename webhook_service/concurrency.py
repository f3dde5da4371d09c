"""Global limit on live Gladia sessions, shared by every worker through the database.

Gladia plans allow a fixed number of concurrent live sessions (1 free, 30
paid). Each live session holds one row of ``concurrency_slots``; the slot
number is the primary key and is below ``MAX_CONCURRENT_SESSIONS``, so the
database itself refuses a session too many: taking a slot is an
``INSERT ... ON CONFLICT DO NOTHING`` of the lowest free number, and only the
writer whose row landed owns it. A slot is a lease: the streamer renews it
with every heartbeat, and a slot whose lease ran out (its worker died) may be
taken over by a conditional UPDATE, so a crash never leaks capacity for longer
than the lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import session_scope
from .models import ConcurrencySlot, utcnow


def _insert(session: Session):
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    return dialect.insert(ConcurrencySlot)


def acquire_slot(database_url: str, job_id: str, limit: int, lease_s: float,
                 now: Optional[datetime] = None) -> Optional[int]:
    """Take (or keep) a slot for ``job_id``; None when all ``limit`` slots are held by live leases.

    A job that already holds a slot (a resumed stream) keeps it and has its
    lease renewed: resuming never needs a second slot.
    """
    now = now or utcnow()
    expires = now + timedelta(seconds=lease_s)
    with session_scope(database_url) as session:
        held = session.execute(
            update(ConcurrencySlot).where(ConcurrencySlot.job_id == job_id)
            .values(expires_at=expires).returning(ConcurrencySlot.slot)
        ).scalar_one_or_none()
        if held is not None:
            return held
        taken = dict(session.execute(
            select(ConcurrencySlot.slot, ConcurrencySlot.expires_at).where(ConcurrencySlot.slot < limit)
        ).all())
        for slot in range(limit):
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


def renew_slots(session: Session, job_ids: list[str], lease_s: float, now: Optional[datetime] = None) -> None:
    """Extend the leases of live streams (called with the heartbeat, in its transaction)."""
    if not job_ids:
        return
    now = now or utcnow()
    session.execute(
        update(ConcurrencySlot).where(ConcurrencySlot.job_id.in_(job_ids))
        .values(expires_at=now + timedelta(seconds=lease_s))
    )


def release_slot(database_url: str, job_id: str) -> None:
    with session_scope(database_url) as session:
        session.execute(delete(ConcurrencySlot).where(ConcurrencySlot.job_id == job_id))


def slots_in_use(database_url: str, now: Optional[datetime] = None) -> int:
    now = now or utcnow()
    with session_scope(database_url) as session:
        return len(session.execute(
            select(ConcurrencySlot.slot).where(ConcurrencySlot.expires_at >= now)
        ).all())
