"""What each kind of Gladia message writes beyond its ``events`` row: a registry of handlers.

One handler per family of the catalogue (``gladia.messages``), registered with
:func:`handles`; a type whose storage differs from its family's can have a
handler of its own (a type's handler wins over its family's). Adding an event
type is one catalogue entry and, for a new family, one decorated function
here; :func:`handler_for` finds it, and an import-time check refuses a
catalogue family without a handler.

A handler runs inside the normalization transaction, after the event row was
inserted, and only when that row is new (a duplicate message changes
nothing), except for handlers that move the job (``moves_job``): those run for
a duplicate too, in case the first copy arrived before the job was known, and
the job row is locked before the event insert (one lock order everywhere).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Callable, Optional

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from .. import metrics
from ..gladia.messages import (
    ACK,
    CATALOGUE,
    LIFECYCLE,
    LIFECYCLE_STATES,
    POST_ADDON,
    POST_TRANSCRIPT,
    REALTIME_ADDON,
    SPEECH,
    TRANSCRIPT,
)
from ..models import AFTER_AUDIO_STATES, Job, SessionResult, utcnow
from .locks import ROW_LOCK
from .statements import utterance_row

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Normalizing:
    """One message being normalized: what a handler may read and where it writes."""

    session: Session
    conn: Connection
    sql: SimpleNamespace  # statements(dialect)
    message: dict[str, Any]
    gladia_id: str
    job_id: Optional[str]
    source: str
    created_at: Optional[datetime]  # Gladia's, when the message has one
    received_at: datetime
    now: datetime
    new: bool  # the event row was inserted by this message (not a duplicate)
    reconcile_delay_s: float  # RECONCILE_DELAY_S: see :func:`schedule_reconciliation`

    @property
    def type(self) -> str:
        return self.message["type"]

    @property
    def data(self) -> Any:
        return self.message.get("data")


HandlerFn = Callable[[Normalizing], None]


@dataclass(frozen=True)
class Handler:
    apply: HandlerFn
    moves_job: bool = False
    # The statement of ``statements.pg_single_statements()`` that does the same in one round trip
    # (the PostgreSQL receiver's fast path), when there is one.
    single_statement: Optional[str] = None


_BY_FAMILY: dict[str, Handler] = {}
_BY_TYPE: dict[str, Handler] = {}


def handles(*, families: tuple[str, ...] = (), types: tuple[str, ...] = (), moves_job: bool = False,
            single_statement: Optional[str] = None) -> Callable[[HandlerFn], HandlerFn]:
    """Register a handler for every message of ``families`` and for the ``types`` named."""
    def register(apply: HandlerFn) -> HandlerFn:
        entry = Handler(apply, moves_job, single_statement)
        _BY_FAMILY.update(dict.fromkeys(families, entry))
        _BY_TYPE.update(dict.fromkeys(types, entry))
        return apply
    return register


def handler_for(mtype: str) -> Handler:
    """The handler of a message type: its own, else its family's, else the one for unknown types."""
    entry = _BY_TYPE.get(mtype)
    if entry is None:
        known = CATALOGUE.get(mtype)
        entry = _BY_FAMILY[known.family] if known is not None else _UNKNOWN
    return entry


def moves_job(mtype: str) -> bool:
    """Whether normalizing a message of this type locks and may advance the job row."""
    return handler_for(mtype).moves_job


# --------------------------------------------------------------------- handlers


@handles(families=(ACK, SPEECH), single_statement="event_only")
def _event_only(m: Normalizing) -> None:
    """Acknowledgements and voice activity: the ``events`` row is the whole record."""


@handles(families=(LIFECYCLE,), moves_job=True)
def _lifecycle(m: Normalizing) -> None:
    if m.job_id is None:
        return
    apply_lifecycle(m.session, m.job_id, m.type, m.created_at or m.received_at,
                    reconcile_in=m.reconcile_delay_s if m.new and m.source != "reconcile" else None)


@handles(families=(TRANSCRIPT,), single_statement="transcript")
def _transcript(m: Normalizing) -> None:
    m.conn.execute(m.sql.utterance_upsert, utterance_row(
        m.data, gladia_id=m.gladia_id, job_id=m.job_id, source=m.source, created_at=m.created_at,
        received_at=m.received_at, now=m.now,
    ))


@handles(families=(REALTIME_ADDON, POST_ADDON))
def _addon(m: Normalizing) -> None:
    entry = CATALOGUE[m.type]
    data = m.data if isinstance(m.data, dict) else None
    per_utterance = entry.family == REALTIME_ADDON
    m.conn.execute(m.sql.addon_upsert, dict(
        gladia_id=m.gladia_id, job_id=m.job_id, kind=entry.addon_kind,
        utterance_id=(data or {}).get("utterance_id", "") if per_utterance else "",
        target_language=(data or {}).get("target_language", "") if m.type == "translation" else "",
        data=data, error=m.message.get("error"), source=m.source, created_at=m.created_at,
        received_at=m.received_at,
    ))


@handles(families=(POST_TRANSCRIPT,))
def _post_transcript(m: Normalizing) -> None:
    m.conn.execute(m.sql.result_ensure, dict(gladia_id=m.gladia_id, job_id=m.job_id, updated_at=m.now))
    _store_transcription(m.session, m.gladia_id, m.job_id, m.type, m.data, m.created_at or m.received_at)


def _unknown(m: Normalizing) -> None:
    metrics.UNKNOWN_EVENTS.labels(m.source).inc()
    log.warning("stored a message of unknown type %r for session %s", m.type[:64], m.gladia_id)


_UNKNOWN = Handler(_unknown)

_unhandled = {entry.family for entry in CATALOGUE.values()} - set(_BY_FAMILY)
if _unhandled:
    raise RuntimeError(f"message families without a handler in ingest.handlers: {sorted(_unhandled)}")

# Message types whose whole normalization is the event row plus at most one
# utterance: on PostgreSQL the receiver writes them in one statement. The
# others (lifecycle, add-ons, session results, unknown types) take the general path.
SINGLE_STATEMENT_TYPES = frozenset(name for name in CATALOGUE if handler_for(name).single_statement)


# ------------------------------------------------------------ what they write


def apply_lifecycle(session: Session, job_id: str, mtype: str, when: datetime, *,
                    reconcile_in: Optional[float]) -> None:
    """Advance the job to the state a lifecycle message proves was reached.

    ``reconcile_in``: an ``end_session`` schedules the job's reconciliation
    that many seconds after it was sent (:func:`schedule_reconciliation`);
    None, it schedules nothing (the message came from reconciliation itself).
    """
    # Lock the job row (PostgreSQL; SQLite transactions are serialized anyway)
    # and re-read it, so concurrent callbacks of one session cannot lose each
    # other's transition. Pending changes of the caller are flushed first.
    # FOR NO KEY UPDATE, not FOR UPDATE: it does not wait for the KEY SHARE
    # locks that every insert referencing the job takes (foreign keys), which
    # would otherwise deadlock with concurrent callbacks of the same session.
    job = session.get(Job, job_id, with_for_update=ROW_LOCK, populate_existing=True)
    if job is None:
        return
    state = LIFECYCLE_STATES[mtype]
    if job.ws_url is None and state in AFTER_AUDIO_STATES:
        # No run has recorded a socket for this session: it is an orphan whose creator died before
        # recording its socket, it never received audio, and Gladia ends it after its grace. The job
        # is not over: its next run replaces the session.
        log.info("job %s: %s of a session no run streams to; the job's state stays %s", job_id, mtype, job.state)
        return
    if job.advance(state, when=when):
        metrics.JOBS_STATE_CHANGES.labels(state).inc()
    if mtype == "end_session" and reconcile_in is not None:
        schedule_reconciliation(job, reconcile_in, ended_at=when)
    session.flush()


def schedule_reconciliation(job: Job, delay_s: float, *, ended_at: Optional[datetime] = None) -> None:
    """The session ended (``end_session``): reconcile it ``delay_s`` (RECONCILE_DELAY_S) after that.

    Not at once: the reconciler leaves a session completed less than
    RECONCILE_DELAY_S ago for later, so that callbacks still in flight land
    first and are not counted missing; a run sooner than that would only fetch
    the whole session from Gladia to learn it. Gladia completes a session
    before it sends ``end_session``, so the run due ``delay_s`` after the
    message's own time (``ended_at``, its ``created_at``; never later than now,
    whatever Gladia's clock says) finds it settled, and a message delivered
    late (retried, or stored while the receiver was away) does not wait again.
    It replaces an earlier time (the worker's, from its close of the stream,
    before Gladia's post-processing ended): that one could only come too soon.
    """
    now = utcnow()
    job.reconcile_after = min(ended_at or now, now) + timedelta(seconds=delay_s)


def _store_transcription(session: Session, gladia_id: str, job_id: Optional[str], mtype: str,
                         data: dict[str, Any], when: datetime) -> None:
    """Fill the session's result row; post_final_transcript wins over post_transcript."""
    row = session.get(SessionResult, gladia_id, with_for_update=ROW_LOCK, populate_existing=True)
    assert row is not None  # ensured by the caller in this transaction
    if row.job_id is None:
        row.job_id = job_id
    if mtype == "post_transcript":
        row.post_transcript = data
        if row.post_final_received_at is None:
            row.full_transcript = data.get("full_transcript")
            row.languages = data.get("languages")
    else:
        transcription = data.get("transcription") or {}
        meta = data.get("metadata") or {}
        row.post_final_transcript = data
        row.post_final_received_at = when
        row.full_transcript = transcription.get("full_transcript", row.full_transcript)
        row.languages = transcription.get("languages", row.languages)
        row.audio_duration_s = meta.get("audio_duration", row.audio_duration_s)
        row.billing_time_s = meta.get("billing_time", row.billing_time_s)
        row.transcription_time_s = meta.get("transcription_time", row.transcription_time_s)
        row.number_of_channels = meta.get("number_of_distinct_channels", row.number_of_channels)
    row.updated_at = utcnow()
    session.flush()
