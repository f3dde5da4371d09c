"""One stored delivery -> normalized, in a transaction of its own, never lost.

The raw row is already committed when this runs (``inbox``). Normalization of
it either commits together with the row's ``processed`` status, or leaves the
row ``failed`` with the error (``pending`` if even that cannot be written) for
the sweeper's :func:`process_inbox_item`: a bad message or a database error
never loses a delivery and never raises to the receiver.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable, Optional

from sqlalchemy import Connection, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from .. import metrics
from ..config import Settings
from ..db import get_engine, session_scope
from ..gladia.messages import KNOWN_EVENTS, WEBHOOK_EVENTS
from ..gladia.validation import (
    Callback,
    InvalidMessage,
    Webhook,
    parse_json_body,
    validate_callback,
    validate_webhook,
)
from ..logging_setup import job_context
from ..models import InboxItem, Job, utcnow
from .handlers import moves_job
from .inbox import UnknownJob, job_id_for, read_job_facts
from .locks import ATTEMPTS, ROW_LOCK, retryable, write_lock
from .normalize import apply_webhook, normalize
from .statements import statements

log = logging.getLogger(__name__)


def metric_event(event: Any) -> str:
    """A bounded label for metrics: unknown event names are grouped as ``other``."""
    return event if isinstance(event, str) and (event in KNOWN_EVENTS or event in WEBHOOK_EVENTS) else "other"


def normalize_inbox(
    settings: Settings,
    inbox_id: int,
    *,
    kind: str,
    body: Any,
    job_id: Optional[str],
    received_at: datetime,
    event: Optional[str] = None,
    conn: Optional[Connection] = None,
    item: Callback | Webhook | None = None,
) -> str:
    """Normalize one stored delivery in its own transaction; returns the row's new status.

    ``item``: ``body`` already validated by the caller; without it ``body`` is
    validated inside the transaction (a failure is recorded on the row). Never
    raises for a bad message or a database error: the row is marked
    ``failed`` with the error (or stays ``pending`` if even that cannot be
    written) and the sweeper retries it.
    """
    if conn is None:
        with get_engine(settings.database_url).connect() as own:
            return normalize_inbox(settings, inbox_id, kind=kind, body=body, job_id=job_id,
                                   received_at=received_at, event=event, conn=own, item=item)

    def transaction() -> None:
        nonlocal job_id
        with write_lock(conn), conn.begin():
            if conn.dialect.name == "postgresql":
                # No fsync wait for this commit: if a crash loses it, the inbox row
                # is still 'pending' (its status changes in this same transaction)
                # and the sweeper normalizes it again. The raw row, committed
                # before, stays synchronous.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            job_id = _normalize_stored(conn, inbox_id, kind=kind, body=body, job_id=job_id,
                                       received_at=received_at, item=item,
                                       reconcile_delay_s=settings.reconcile_delay_s)

    return guarded(conn, transaction, inbox_id=inbox_id, event=event, received_at=received_at)


def guarded(conn: Connection, transaction: Callable[[], None], *, inbox_id: int, event: Optional[str],
            received_at: datetime) -> str:
    """Run a normalization ``transaction``, retrying deadlocks; on failure mark the inbox row ``failed``.

    Returns the row's status afterwards: ``processed``, ``failed``, or
    ``pending`` when even the failure could not be recorded (the sweeper
    finds the row either way). Never raises.
    """
    try:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                transaction()
                break
            except OperationalError as exc:
                if attempt == ATTEMPTS or not retryable(exc):
                    raise
                log.info("normalizing inbox row %s hit %s; trying again", inbox_id, type(exc.orig).__name__)
    except Exception as exc:  # noqa: BLE001 - any failure must leave the raw row for a retry
        metrics.CALLBACKS_FAILED.labels(metric_event(event)).inc()
        log.warning("normalizing inbox row %s failed: %s: %s", inbox_id, type(exc).__name__, exc)
        return _mark_failed(conn, inbox_id, exc)
    metrics.CALLBACK_PROCESSING_SECONDS.observe(max(0.0, (utcnow() - received_at).total_seconds()))
    return "processed"


def _mark_failed(conn: Connection, inbox_id: int, exc: Exception) -> str:
    """Record why normalization failed on the inbox row: ``failed``, or ``pending`` if even that fails."""
    try:
        if conn.invalidated or conn.closed:
            raise RuntimeError("connection lost")
        if conn.in_transaction():  # autocommit connections autobegin (nothing to undo in the database)
            conn.rollback()
        with write_lock(conn), conn.begin():
            conn.execute(statements(conn.dialect.name).inbox_failed,
                         {"b_id": inbox_id, "b_error": f"{type(exc).__name__}: {exc}"[:2000]})
    except Exception:  # noqa: BLE001 - the row stays pending; the sweeper finds it
        log.exception("could not mark inbox row %s failed", inbox_id)
        return "pending"
    return "failed"


def _normalize_stored(conn: Connection, inbox_id: int, *, kind: str, body: Any, job_id: Optional[str],
                      received_at: datetime, item: Callback | Webhook | None,
                      reconcile_delay_s: float) -> Optional[str]:
    """One normalization transaction's statements; returns the job id it settled on.

    Lock order, the same in every transaction of the receiver so that none
    can wait on another in a cycle: the job row (lifecycle messages only),
    then the inbox row, then the normalized rows.
    """
    if item is None:
        item = validate_webhook(body) if kind == "webhook" else validate_callback(body)
    if isinstance(item, Webhook):
        lifecycle = item.event in WEBHOOK_EVENTS
    else:
        lifecycle = moves_job(item.payload["type"])
    job_id = job_id or job_id_for(conn, item.gladia_id)
    # The session joins this connection's transaction and never commits it.
    session = Session(bind=conn, join_transaction_mode="rollback_only")
    try:
        with job_context(job_id, item.gladia_id):
            if lifecycle and job_id is not None:
                session.get(Job, job_id, with_for_update=ROW_LOCK)
            conn.execute(statements(conn.dialect.name).inbox_processed,
                         {"b_id": inbox_id, "b_now": utcnow(), "b_job": job_id})
            if isinstance(item, Webhook):
                apply_webhook(session, item, job_id, reconcile_delay_s=reconcile_delay_s)
            else:
                normalize(session, item.payload, source="callback", job_id=job_id, gladia_id=item.gladia_id,
                          inbox_id=inbox_id, received_at=received_at, validated=True,
                          reconcile_delay_s=reconcile_delay_s)
            session.flush()
    finally:
        session.close()
    return job_id


def _job_takes(settings: Settings, job_id: str, gladia_id: Optional[str]) -> bool:
    """Whether a stored callback can be normalized now; raises :class:`InvalidMessage` if it never can.

    The receiver stores a callback that beats the worker's record of the
    session raw: it waits (False) until the job names a session, is normalized
    if that session is the callback's, and is rejected if it is another one or
    if the job settled meanwhile (a settled job changes only through
    reconciliation).
    """
    with get_engine(settings.database_url).connect() as conn:
        try:
            facts = read_job_facts(conn, job_id)
        except UnknownJob:
            raise InvalidMessage("the callback's job no longer exists") from None
    if facts.closed(utcnow(), settings.callback_grace_s):
        raise InvalidMessage("the job no longer takes callbacks: its results change only through reconciliation")
    if facts.gladia_id is None:
        return False
    if facts.gladia_id != gladia_id:
        raise InvalidMessage("the body names another session than its job's")
    return True


def process_inbox_item(settings: Settings, inbox_id: int) -> str:
    """Re-run normalization of a ``pending`` or ``failed`` inbox row (the sweeper's retry).

    Returns the row's status afterwards (``missing`` if there is no such row;
    ``pending`` for a callback whose job has no session recorded yet).
    A row already ``processed`` is left alone, so a redelivered task is harmless.
    """
    with session_scope(settings.database_url) as session:
        row = session.get(InboxItem, inbox_id)
        if row is None:
            return "missing"
        if row.status not in ("pending", "failed"):
            return row.status
        kind, raw, job_id, event, received_at = row.kind, row.body, row.job_id, row.event, row.received_at
        gladia_id = row.gladia_id
    try:
        body = parse_json_body(raw)
        if kind == "callback" and job_id is not None and not _job_takes(settings, job_id, gladia_id):
            return "pending"
    except InvalidMessage as exc:
        with session_scope(settings.database_url) as session:
            session.execute(
                update(InboxItem.__table__).where(InboxItem.__table__.c.id == inbox_id)
                .values(status="rejected", error=str(exc)[:2000])
            )
        return "rejected"
    return normalize_inbox(settings, inbox_id, kind=kind, body=body, job_id=job_id, received_at=received_at,
                           event=event)
