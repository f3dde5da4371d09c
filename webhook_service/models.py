"""ORM models: the whole schema of the service.

The schema itself is owned by Alembic (``migrations/``); these models must
match it exactly, which a test checks. Conventions:

* every timestamp is UTC, stored timezone-aware on PostgreSQL and naive-UTC on
  SQLite (the :class:`UTCDateTime` type hides the difference);
* JSON columns use ``JSON`` with a JSONB variant on PostgreSQL;
* Gladia's session id is called ``gladia_id`` everywhere;
* natural keys carry UNIQUE constraints so that every writer can use
  ``INSERT ... ON CONFLICT`` and stay idempotent.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Optional[datetime], dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY.
BigID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# --------------------------------------------------------------------------- jobs

JOB_STATES = (
    "queued",  # row written by submit, task sent to the broker
    "starting",  # a worker owns it and is creating (or finding) the Gladia session
    "streaming",  # the WebSocket is open and audio is flowing
    "stream_closed",  # every byte acknowledged, socket closed with 1000 (or stop_recording sent)
    "processing",  # Gladia said end_recording: post-processing under way
    "done",  # Gladia said end_session: results available
    "reconciled",  # stored results checked against GET /v2/live/:id
    "failed",  # terminal, with last_error
)
# Forward order of the happy path; ``failed`` is outside it.
STATE_RANK = {state: rank for rank, state in enumerate(JOB_STATES[:-1])}
# The groups of states the rest of the service asks about, defined here once.
ACTIVE_STATES = ("starting", "streaming")  # a worker owns the job and streams its session
CLAIMABLE_STATES = ("queued",) + ACTIVE_STATES  # a run may claim the job (free, or its owner went silent)
ENDED_STATES = ("stream_closed", "processing", "done")  # the stream is over; reconciliation is due
STREAMED_STATES = ENDED_STATES + ("reconciled",)  # every byte was sent (or the session ended)
RESULT_STATES = ("done", "reconciled")  # Gladia's results are available
SETTLED_STATES = ("reconciled", "failed")  # terminal: nothing moves the job any more
AFTER_AUDIO_STATES = ("processing", "done")  # lifecycle states only a session that received audio reaches


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    session_config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """One audio file -> one Gladia live session."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued','starting','streaming','stream_closed','processing','done','reconciled','failed')",
            name="state_valid",
        ),
        Index("ix_jobs_state_heartbeat_at", "state", "heartbeat_at"),
        Index("ix_jobs_batch_id_state", "batch_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    batch_id: Mapped[Optional[str]] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"))
    source_path: Mapped[str] = mapped_column(Text)
    audio_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    audio_duration_s: Mapped[Optional[float]] = mapped_column(Float)
    audio_channels: Mapped[Optional[int]] = mapped_column(Integer)
    audio_sample_rate: Mapped[Optional[int]] = mapped_column(Integer)
    # The POST /v2/live body this job uses (without callback_config.url, which holds a secret).
    session_config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    custom_metadata: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # One timestamp per transition: the first time the job reached that state.
    queued_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime, default=utcnow)
    starting_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    streaming_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    stream_closed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    processing_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    done_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    reconciled_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    failed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)

    gladia_id: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    gladia_created_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Secret: the token in this URL is Gladia's credential for the socket. Never log it in full.
    ws_url: Mapped[Optional[str]] = mapped_column(Text)

    bytes_total: Mapped[Optional[int]] = mapped_column(BigInteger)
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_acked: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reconnects: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    worker_id: Mapped[Optional[str]] = mapped_column(String(200))
    # A deferred stream task is due back from the broker at this time (the sweeper's cue if it never comes).
    retry_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    # When the reconciler should look at this job next (None: not scheduled).
    reconcile_after: Mapped[Optional[datetime]] = mapped_column(UTCDateTime, index=True)
    # Runs after the first (each with a fresh Gladia session; see JobSession) and when an operator cancelled it.
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancelled_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # The transcript and results were erased (operator delete or retention); the row stays for reports.
    content_deleted_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Gladia's copy of the session was deleted (DELETE /v2/live/:id).
    gladia_deleted_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)

    def advance(self, state: str, when: Optional[datetime] = None) -> bool:
        """Record that the job reached ``state``; move forward only.

        Messages arrive out of order (an ``end_session`` callback may beat the
        worker's own ``stream_closed``), so a state is never moved backwards,
        but the timestamp of every state reached is still kept. ``failed`` is
        terminal except that reconciliation may still settle a job. Returns
        True when ``state`` changed.
        """
        when = when or utcnow()
        if state not in JOB_STATES:
            raise ValueError(f"unknown job state {state!r}")
        stamp = f"{state}_at"
        if getattr(self, stamp) is None:
            setattr(self, stamp, when)
        current = self.state or "queued"
        if state == "failed":
            changed = current not in SETTLED_STATES
        elif current == "failed":
            changed = state == "reconciled"
        else:
            changed = STATE_RANK[state] > STATE_RANK[current]
        if changed:
            self.state = state
        return changed


RERUN_TRIGGERS = ("operator", "auto")


class JobSession(Base):
    """A Gladia session a job had before it was run again with a fresh one.

    The job keeps its id across runs; ``jobs.gladia_id`` is the current session.
    The rows of a replaced session (utterances, events, results, inbox) stay,
    detached from the job (``job_id`` NULL), until the new session is
    reconciled: then they are deleted (``results_deleted_at``).
    """

    __tablename__ = "job_sessions"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    gladia_id: Mapped[str] = mapped_column(String(64), unique=True)
    run: Mapped[int] = mapped_column(Integer)  # 1 = the job's first run
    state: Mapped[str] = mapped_column(String(20))  # the job's state when it was re-run (failed)
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    bytes_acked: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[Optional[int]] = mapped_column(BigInteger)
    created_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)  # Gladia's
    replaced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    replaced_by: Mapped[str] = mapped_column(String(16))  # operator | auto
    results_deleted_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


class ConcurrencySlot(Base):
    """Live-session slots shared by every worker; the primary key bounds concurrency.

    A worker takes the lowest free slot number below the limit with an
    INSERT that fails on conflict; a slot whose lease expired (its worker died)
    can be taken over.
    """

    __tablename__ = "concurrency_slots"

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


# ------------------------------------------------------------------ callback inbox

INBOX_STATUSES = ("pending", "processed", "failed", "rejected")
# PostgreSQL: the inbox's unique key, and the expression of its first column (the conflict target of its inserts).
INBOX_KEY_INDEX = "uq_callback_inbox_session_dedupe_key"
INBOX_KEY_SESSION = "(coalesce(gladia_id, ''))"
# Schema objects that exist on one database only (their ``ddl_if``), by name.
DIALECT_ONLY = {"uq_callback_inbox_dedupe_key": "sqlite", INBOX_KEY_INDEX: "postgresql"}


def compared_on(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` on ``dialect``: the models as that database has them (:data:`DIALECT_ONLY`)."""
    def include(obj: Any, name: Optional[str], type_: str, reflected: bool, compare_to: Any) -> bool:
        return DIALECT_ONLY.get(name or "", dialect) == dialect
    return include


class InboxItem(Base):
    """A raw callback or webhook exactly as received, committed before we answer 2xx."""

    __tablename__ = "callback_inbox"
    __table_args__ = (
        CheckConstraint("status IN ('pending','processed','failed','rejected')", name="status_valid"),
        # What the sweeper, the gauges and the error report look for; on PostgreSQL only those rows (0007).
        Index("ix_callback_inbox_status_received_at", "status", "received_at",
              postgresql_where=text("status <> 'processed'")),
        Index("ix_callback_inbox_gladia_id_event", "gladia_id", "event"),
        # Requests that still hold their raw body (INBOX_RETENTION_DAYS blanks it): migration 0006.
        Index("ix_callback_inbox_body_kept", "received_at", sqlite_where=text("length(body) > 0"),
              postgresql_where=text("length(body) > 0")),
        # A delivery is known by its dedupe key (migration 0008). On PostgreSQL the unique index leads with the
        # session, so that a session's callbacks share the index leaves they write: a key alone is random, and
        # on a large inbox every callback would then change a leaf of its own, logged whole (a full-page image)
        # as the first change after a checkpoint. The key hashes the body, which names the session, so both
        # indexes refuse the same rows. SQLite keeps the constraint the table was created with.
        UniqueConstraint("dedupe_key", name="uq_callback_inbox_dedupe_key")
        .ddl_if(dialect=DIALECT_ONLY["uq_callback_inbox_dedupe_key"]),
        Index(INBOX_KEY_INDEX, text(INBOX_KEY_SESSION), "dedupe_key", unique=True)
        .ddl_if(dialect=DIALECT_ONLY[INBOX_KEY_INDEX]),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    # sha256 of the canonical body (Gladia sends no delivery id).
    dedupe_key: Mapped[str] = mapped_column(String(64))  # unique: see __table_args__
    kind: Mapped[str] = mapped_column(String(16), default="callback")  # callback | webhook
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    event: Mapped[Optional[str]] = mapped_column(String(64))
    gladia_id: Mapped[Optional[str]] = mapped_column(String(64))
    job_id: Mapped[Optional[str]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[Optional[str]] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    last_duplicate_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    processed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


# --------------------------------------------------------------- normalized results

EVENT_SOURCES = ("callback", "websocket", "reconcile")


class Event(Base):
    """Every Gladia message we hold for a session, whichever way it reached us."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("gladia_id", "message_key"),
        CheckConstraint("source IN ('callback','websocket','reconcile')", name="source_valid"),
        Index("ix_events_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    gladia_id: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[Optional[str]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    # sha256 of the canonical message JSON: the same message from a callback and
    # from GET result.messages has the same key.
    message_key: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))  # the WebSocket type, e.g. "transcript"
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)  # Gladia's
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # ours
    inbox_id: Mapped[Optional[int]] = mapped_column(ForeignKey("callback_inbox.id", ondelete="SET NULL"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)


class Utterance(Base):
    """One utterance per (session, transcript id); the final replaces the partials."""

    __tablename__ = "utterances"
    __table_args__ = (
        UniqueConstraint("gladia_id", "utterance_id"),
        CheckConstraint("source IN ('callback','websocket','reconcile')", name="source_valid"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    gladia_id: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[Optional[str]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    utterance_id: Mapped[str] = mapped_column(String(64))  # transcript data.id
    is_final: Mapped[bool] = mapped_column(Boolean, default=False)
    channel: Mapped[int] = mapped_column(Integer, default=0)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[Optional[str]] = mapped_column(String(16))
    confidence: Mapped[Optional[float]] = mapped_column(Float)
    words: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    word_count: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)  # Gladia's
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


ADDON_KINDS = (
    "translation",
    "named_entity_recognition",
    "sentiment_analysis",
    "summarization",
    "chapterization",
)


class AddonResult(Base):
    """Realtime add-ons per utterance, and post-processing add-ons per session.

    ``utterance_id`` and ``target_language`` are '' rather than NULL where they
    do not apply, so the natural key stays UNIQUE on every database.
    """

    __tablename__ = "addon_results"
    __table_args__ = (
        UniqueConstraint("gladia_id", "kind", "utterance_id", "target_language"),
        CheckConstraint(
            "kind IN ('translation','named_entity_recognition','sentiment_analysis','summarization','chapterization')",
            name="kind_valid",
        ),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    gladia_id: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[Optional[str]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    utterance_id: Mapped[str] = mapped_column(String(64), default="")
    target_language: Mapped[str] = mapped_column(String(16), default="")
    data: Mapped[Optional[Any]] = mapped_column(JSONType)
    error: Mapped[Optional[Any]] = mapped_column(JSONType)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SessionResult(Base):
    """Per-session results: post-processing messages and the final GET /v2/live/:id."""

    __tablename__ = "session_results"

    gladia_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[Optional[str]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    full_transcript: Mapped[Optional[str]] = mapped_column(Text)
    languages: Mapped[Optional[list[Any]]] = mapped_column(JSONType)
    audio_duration_s: Mapped[Optional[float]] = mapped_column(Float)
    billing_time_s: Mapped[Optional[float]] = mapped_column(Float)
    transcription_time_s: Mapped[Optional[float]] = mapped_column(Float)
    number_of_channels: Mapped[Optional[int]] = mapped_column(Integer)
    post_transcript: Mapped[Optional[Any]] = mapped_column(JSONType)  # live.post_transcript data
    post_final_transcript: Mapped[Optional[Any]] = mapped_column(JSONType)  # live.post_final_transcript data
    post_final_received_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    gladia_status: Mapped[Optional[str]] = mapped_column(String(16))  # from GET
    gladia_error_code: Mapped[Optional[int]] = mapped_column(Integer)
    gladia_completed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    gladia_response: Mapped[Optional[Any]] = mapped_column(JSONType)  # the whole GET body
    fetched_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ReconciliationRun(Base):
    """What one reconciliation found and repaired for one session."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (
        CheckConstraint("outcome IN ('reconciled','retry','failed')", name="outcome_valid"),
        Index("ix_reconciliation_runs_gladia_id_started_at", "gladia_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    job_id: Mapped[Optional[str]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    gladia_id: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(32))  # end_session | webhook | stream_closed | sweep | cli
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[Optional[str]] = mapped_column(Text)
    expected: Mapped[int] = mapped_column(Integer, default=0)
    received: Mapped[int] = mapped_column(Integer, default=0)
    missing: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    mismatched: Mapped[int] = mapped_column(Integer, default=0)
    repaired: Mapped[int] = mapped_column(Integer, default=0)
    details: Mapped[Optional[Any]] = mapped_column(JSONType)


# ------------------------------------------------------------------ deletion and retention

DELETION_ACTIONS = ("delete", "retention", "inbox_retention", "gladia_after_reconcile")


class DeletionAudit(Base):
    """One erasure: who (a token's name, a dashboard user, ``cli`` or ``retention``), when, and what:
    ids and row counts per table, never content."""

    __tablename__ = "deletion_audit"
    __table_args__ = (
        CheckConstraint("action IN ('delete','retention','inbox_retention','gladia_after_reconcile')",
                        name="action_valid"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[Optional[str]] = mapped_column(String(36), index=True)
    gladia_id: Mapped[Optional[str]] = mapped_column(String(64))
    rows: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # What Gladia answered: "deleted", "already gone", "not asked" ...
    gladia: Mapped[Optional[str]] = mapped_column(String(200))


# ------------------------------------------------------------------ reporting cache

class SessionStats(Base):
    """Per-session aggregates of the large tables, so reports stay fast at any size.

    Reports read utterances, events, callbacks and reconciliation runs through
    this table instead of scanning millions of rows. Triggers (migration 0002) log a session in
    :class:`SessionStatsStale` whenever one of its rows changes;
    ``reports.refresh_session_stats`` recomputes exactly those sessions before
    a report is read. Every column has the meaning of the view
    ``report_session_summary`` (docs/reporting.md).
    """

    __tablename__ = "session_stats"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    utterances: Mapped[int] = mapped_column(Integer, default=0)
    words: Mapped[int] = mapped_column(Integer, default=0)
    speech_s: Mapped[float] = mapped_column(Float, default=0.0)
    confidence_mean: Mapped[Optional[float]] = mapped_column(Float)
    confidence_p10: Mapped[Optional[float]] = mapped_column(Float)
    languages: Mapped[Optional[str]] = mapped_column(String(200))
    events: Mapped[int] = mapped_column(Integer, default=0)
    callback_events: Mapped[int] = mapped_column(Integer, default=0)
    websocket_events: Mapped[int] = mapped_column(Integer, default=0)
    reconcile_events: Mapped[int] = mapped_column(Integer, default=0)
    callback_delay_median_s: Mapped[Optional[float]] = mapped_column(Float)
    callback_delay_max_s: Mapped[Optional[float]] = mapped_column(Float)
    callbacks_received: Mapped[int] = mapped_column(Integer, default=0)
    callback_duplicates: Mapped[int] = mapped_column(Integer, default=0)
    callbacks_failed: Mapped[int] = mapped_column(Integer, default=0)
    callbacks_rejected: Mapped[int] = mapped_column(Integer, default=0)
    callbacks_pending: Mapped[int] = mapped_column(Integer, default=0)
    reconciliation_runs: Mapped[int] = mapped_column(Integer, default=0)
    failed_runs: Mapped[int] = mapped_column(Integer, default=0)
    reconciliation_outcome: Mapped[Optional[str]] = mapped_column(String(16))  # latest run
    expected_messages: Mapped[Optional[int]] = mapped_column(Integer)  # latest run
    missing_found: Mapped[Optional[int]] = mapped_column(Integer)  # summed over runs
    duplicates_found: Mapped[Optional[int]] = mapped_column(Integer)
    repaired: Mapped[Optional[int]] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SessionLanguageStats(Base):
    """Final utterances per session and language ('' = language not reported)."""

    __tablename__ = "session_language_stats"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    language: Mapped[str] = mapped_column(String(16), primary_key=True)
    utterances: Mapped[int] = mapped_column(Integer, default=0)
    words: Mapped[int] = mapped_column(Integer, default=0)
    speech_s: Mapped[float] = mapped_column(Float, default=0.0)


class SessionStatsStale(Base):
    """Sessions whose :class:`SessionStats` row must be recomputed, appended by triggers.

    An append-only log rather than one row per session: the triggers run inside
    the receiver's and the worker's transactions, and a plain INSERT takes no
    lock another writer could wait for, so it can add no deadlock to theirs.
    """

    __tablename__ = "session_stats_stale"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    marked_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


# ------------------------------------------------------------------ operator credentials

TOKEN_SCOPES = ("read", "admin")


class OperatorToken(Base):
    """An operator's API token: only the SHA-256 of the secret is stored, the secret is shown once.

    A name is unique among tokens still in force; a revoked token keeps its row
    (who had access, until when) and frees its name for a successor.
    """

    __tablename__ = "operator_tokens"
    __table_args__ = (
        CheckConstraint("scope IN ('read','admin')", name="scope_valid"),
        Index("uq_operator_tokens_active_name", "name", unique=True,
              sqlite_where=text("revoked_at IS NULL"), postgresql_where=text("revoked_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8), default="read")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    last_used_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
