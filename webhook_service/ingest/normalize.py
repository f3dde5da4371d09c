"""One Gladia message -> its ``events`` row and what its handler derives from it.

:func:`normalize_message` is the one entry point for a Gladia message whichever
way it reached us: a callback, the WebSocket, or ``result.messages`` of
``GET /v2/live/:id`` during reconciliation. It is idempotent and independent
of order: each message is one ``events`` row keyed by (session, sha256 of the
message), and every derived row is an upsert whose ``WHERE`` keeps the most
advanced version (a final beats a partial, a later message beats an earlier
one), so applying any set of messages in any order, any number of times, gives
the same end state. What a message derives is its handler's business
(``handlers``); this module only orders the steps.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy.orm import Session

from ..gladia.messages import parse_timestamp
from ..gladia.validation import Webhook, validate_message
from ..models import EVENT_SOURCES, SETTLED_STATES, Job, utcnow
from .handlers import Normalizing, handler_for, schedule_reconciliation
from .locks import ROW_LOCK
from .statements import event_values, statements


def normalize_message(
    session: Session,
    message: dict[str, Any],
    *,
    source: str,
    job: Optional[Job],
    gladia_id: str,
    inbox_id: Optional[int] = None,
    received_at: Optional[datetime] = None,
    reconcile_delay_s: float,
) -> bool:
    """Store one Gladia message and everything derived from it; True when it was new.

    ``message`` is the WebSocket-shaped message (a callback's ``payload``, or one
    decoded item of ``result.messages``). Runs inside the caller's transaction;
    the caller commits. A message already stored for this session changes
    nothing except the job's state, in case the first copy arrived before the
    job was known. Raises :class:`InvalidMessage` (nothing written) for a
    message that lacks what normalization needs. ``reconcile_delay_s``: the
    service's RECONCILE_DELAY_S, for an ``end_session`` to schedule the job's
    reconciliation (:func:`~.handlers.schedule_reconciliation`); required, as a
    caller that forgot it would have every session reconciled before its
    callbacks in flight land.
    """
    return normalize(session, message, source=source, job_id=job.id if job is not None else None,
                     gladia_id=gladia_id, inbox_id=inbox_id, received_at=received_at,
                     reconcile_delay_s=reconcile_delay_s)


def normalize(
    session: Session,
    message: dict[str, Any],
    *,
    source: str,
    job_id: Optional[str],
    gladia_id: str,
    inbox_id: Optional[int],
    received_at: Optional[datetime],
    validated: bool = False,
    reconcile_delay_s: float,
) -> bool:
    """:func:`normalize_message` given the job's id; ``validated``: the caller ran ``validate_message``."""
    if source not in EVENT_SOURCES:
        raise ValueError(f"unknown source {source!r}")
    if not validated:
        validate_message(message)
    conn = session.connection()
    sql = statements(conn.dialect.name)
    handler = handler_for(message["type"])
    now = utcnow()
    received_at = received_at or now
    created_at = parse_timestamp(message.get("created_at"))
    if handler.moves_job and job_id is not None:
        # The job row first, before any insert that references it: one lock order everywhere.
        session.get(Job, job_id, with_for_update=ROW_LOCK)

    new = conn.execute(sql.event_insert, event_values(
        message, gladia_id=gladia_id, job_id=job_id, source=source, created_at=created_at,
        received_at=received_at, inbox_id=inbox_id,
    )).scalar() is not None

    if new or handler.moves_job:
        handler.apply(Normalizing(session=session, conn=conn, sql=sql, message=message, gladia_id=gladia_id,
                                  job_id=job_id, source=source, created_at=created_at, received_at=received_at,
                                  now=now, new=new, reconcile_delay_s=reconcile_delay_s))
    return new


def apply_webhook(session: Session, hook: Webhook, job_id: Optional[str], *, reconcile_delay_s: float) -> None:
    """An account webhook says a lifecycle step happened; it carries no message content and moves nothing.

    Its word is not the reference (a webhook secret is one more credential
    that can leak, and a signed ``live.end_session`` for a job still streaming
    must not end it): ``live.end_session`` only schedules reconciliation,
    ``reconcile_delay_s`` from now as a callback's does (whose ``GET /v2/live/:id``
    decides), and never later than it was already due: a repeated webhook
    whose body differs is no duplicate, and must not keep postponing it. Other
    events are kept in the inbox only.
    """
    if job_id is None or hook.event != "live.end_session":
        return
    job = session.get(Job, job_id, with_for_update=ROW_LOCK, populate_existing=True)
    if job is None or job.state in SETTLED_STATES:
        return
    already_due = job.reconcile_after
    schedule_reconciliation(job, reconcile_delay_s)
    if already_due is not None:
        job.reconcile_after = min(already_due, job.reconcile_after)
    session.flush()
