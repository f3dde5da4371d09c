"""The service's gauges, read from the database when Prometheus scrapes the operator side.

The database is the source of truth for job state, so these are counted there
(a few indexed aggregates per scrape) rather than kept by any one process:
every replica of the operator side reports the same values, and no process
restart resets them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import func, select

from ..config import Settings
from ..db import session_scope
from ..models import ACTIVE_STATES, ENDED_STATES, JOB_STATES, ConcurrencySlot, InboxItem, Job, utcnow

Samples = list[tuple[dict[str, str], float]]


def _age_s(now: datetime, oldest: Optional[datetime]) -> float:
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


def read_gauges(settings: Settings, now: Optional[datetime] = None) -> dict[str, Samples]:
    """{gauge name: [(labels, value)]}; the names are :data:`webhook_service.metrics.DATABASE_GAUGES`."""
    now = now or utcnow()
    stale_before = now - timedelta(seconds=settings.stale_heartbeat_s)
    with session_scope(settings.database_url) as session:
        by_state = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        stalled = session.scalar(select(func.count()).select_from(Job).where(
            Job.state.in_(ACTIVE_STATES), Job.heartbeat_at < stale_before))
        oldest_unsettled = session.scalar(select(func.min(Job.stream_closed_at)).where(Job.state.in_(ENDED_STATES)))
        slots = session.scalar(select(func.count()).select_from(ConcurrencySlot)
                               .where(ConcurrencySlot.expires_at >= now))
        inbox = dict(session.execute(select(InboxItem.status, func.count())
                                     .where(InboxItem.status.in_(("pending", "failed")))
                                     .group_by(InboxItem.status)).all())
        oldest_pending = session.scalar(select(func.min(InboxItem.received_at)).where(InboxItem.status == "pending"))
    return {
        "webhook_jobs": [({"state": state}, float(by_state.get(state, 0))) for state in JOB_STATES],
        "webhook_jobs_stalled": [({}, float(stalled or 0))],
        "webhook_jobs_oldest_unsettled_seconds": [({}, _age_s(now, oldest_unsettled))],
        "webhook_slots_in_use": [({}, float(slots or 0))],
        "webhook_slots_limit": [({}, float(settings.max_concurrent_sessions))],
        "webhook_inbox_rows": [({"status": status}, float(inbox.get(status, 0))) for status in ("pending", "failed")],
        "webhook_inbox_oldest_pending_seconds": [({}, _age_s(now, oldest_pending))],
    }
