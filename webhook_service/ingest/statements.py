"""Every INSERT/UPDATE of ingestion, built once per SQL dialect, and the rows they take.

The receiver is the hot path (Gladia posts one callback per message of every
live session), so its statements are built once per dialect and executed on
a Core connection with plain parameter dicts; SQLAlchemy then reuses their
compiled form and psycopg its server-side prepared statements. On PostgreSQL
the common message types are normalized by ONE statement of data-modifying
CTEs (:func:`pg_single_statements`).

Every derived row is an upsert whose ``WHERE`` keeps the most advanced
version, so messages applied in any order, any number of times, give the same
end state.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Iterable, Mapping, Optional

from sqlalchemy import (
    Connection,
    String,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.orm import Session

from ..gladia.keys import message_key
from ..models import (
    INBOX_KEY_SESSION,
    SETTLED_STATES,
    AddonResult,
    Event,
    InboxItem,
    Job,
    SessionResult,
    UTCDateTime,
    Utterance,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

EVENT_COLUMNS = ("gladia_id", "job_id", "message_key", "type", "source", "created_at", "received_at", "inbox_id",
                 "payload")
UTTERANCE_COLUMNS = ("gladia_id", "job_id", "utterance_id", "is_final", "channel", "start_s", "end_s", "text",
                     "language", "confidence", "words", "word_count", "source", "created_at", "received_at",
                     "updated_at")


def connection(executor: Session | Connection) -> Connection:
    return executor.connection() if isinstance(executor, Session) else executor


def _ts(column):
    return func.coalesce(column, literal(_EPOCH, UTCDateTime()))


@functools.lru_cache(maxsize=None)
def statements(dialect: str) -> SimpleNamespace:
    """Every INSERT/UPDATE of ingestion, for one SQL dialect."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    ev, ut, ib, sr = (m.__table__ for m in (Event, Utterance, InboxItem, SessionResult))
    inbox_key = _inbox_key_columns(dialect)
    return SimpleNamespace(
        event_insert=insert(ev).on_conflict_do_nothing(index_elements=["gladia_id", "message_key"]).returning(ev.c.id),
        utterance_upsert=utterance_upsert(insert(ut)),
        utterance_repair=utterance_upsert(insert(ut), reference_wins=True),
        addon_upsert=_addon_upsert(insert(AddonResult.__table__)),
        result_ensure=insert(sr).on_conflict_do_nothing(index_elements=["gladia_id"]),
        inbox_insert=insert(ib).on_conflict_do_nothing(index_elements=inbox_key).returning(ib.c.id),
        # By the whole unique key (the session, then the key), so that PostgreSQL reads it through its index.
        inbox_duplicate=update(ib)
        .where(func.coalesce(ib.c.gladia_id, literal_column("''"))
               == func.coalesce(bindparam("b_gladia", type_=String()), literal_column("''")),
               ib.c.dedupe_key == bindparam("b_key"))
        .values(duplicates=ib.c.duplicates + 1, last_duplicate_at=bindparam("b_at", type_=UTCDateTime()))
        .returning(ib.c.id, ib.c.status),
        inbox_processed=update(ib)
        .where(ib.c.id == bindparam("b_id"))
        .values(status="processed", processed_at=bindparam("b_now", type_=UTCDateTime()), error=None,
                attempts=ib.c.attempts + 1, job_id=func.coalesce(ib.c.job_id, bindparam("b_job", type_=String()))),
        inbox_failed=update(ib)
        .where(ib.c.id == bindparam("b_id"))
        .values(status="failed", error=bindparam("b_error", type_=Text()), attempts=ib.c.attempts + 1),
        job_session=select(*(Job.__table__.c[name] for name in JOB_FACT_COLUMNS))
        .where(Job.__table__.c.id == bindparam("b_job")),
        inbox_insert_open=_inbox_insert_open(insert(ib), inbox_key),
    )


def _inbox_key_columns(dialect: str) -> list[Any]:
    """The columns of the inbox's unique key on ``dialect``, as an ``ON CONFLICT`` target (see ``models.InboxItem``)."""
    return [text(INBOX_KEY_SESSION), "dedupe_key"] if dialect == "postgresql" else ["dedupe_key"]


# What the receiver reads (and caches) of a callback's job: its session, whether it is settled, its audio.
JOB_FACT_COLUMNS = ("gladia_id", "state", "done_at", "updated_at", "audio_duration_s", "audio_channels")


def _inbox_insert_open(insert_into_inbox, inbox_key: list[Any]):
    """The inbox INSERT of a callback, made conditional on its job being still open.

    ``INSERT ... SELECT <the row> WHERE <the job is neither settled nor past its
    end_session by more than the grace period>``: the receiver's cached view
    of the job can be stale (reconciliation, the sweeper or another process
    settled it), so the database checks it again in the very statement that
    stores the row, at no extra round trip. ``b_job`` is the job id and
    ``b_cutoff`` the oldest end still open: the grace runs from the later of
    Gladia's ``end_session`` time (``done_at``) and the row's last change on
    this service's clock, so neither a skewed clock nor a forged
    ``created_at`` closes a job early. Returns no id for a
    duplicate and for a closed job alike (``inbox_duplicate`` tells them apart).
    """
    ib, jobs = InboxItem.__table__, Job.__table__
    columns = ("dedupe_key", "kind", "received_at", "headers", "body", "event", "gladia_id", "job_id", "status",
               "attempts", "duplicates")
    open_job = exists().where(
        jobs.c.id == bindparam("b_job", type_=String()),
        jobs.c.state.not_in(SETTLED_STATES),
        or_(jobs.c.done_at.is_(None), jobs.c.done_at > bindparam("b_cutoff", type_=UTCDateTime()),
            jobs.c.updated_at > bindparam("b_cutoff", type_=UTCDateTime())),
    )
    row = select(*(bindparam(name, type_=ib.c[name].type) for name in columns)).where(open_job)
    return (insert_into_inbox.from_select(list(columns), row)
            .on_conflict_do_nothing(index_elements=inbox_key).returning(ib.c.id))


def _addon_upsert(addon):
    """``addon`` (an INSERT into addon_results) made an upsert: the latest message wins."""
    new, old = addon.excluded, AddonResult.__table__.c
    # On equal created_at a success beats an error.
    newer = or_(
        _ts(new.created_at) > _ts(old.created_at),
        and_(_ts(new.created_at) == _ts(old.created_at), old.data.is_(None)),
    )
    return addon.on_conflict_do_update(
        index_elements=["gladia_id", "kind", "utterance_id", "target_language"],
        set_=dict(data=new.data, error=new.error, source=new.source, created_at=new.created_at,
                  received_at=new.received_at, job_id=func.coalesce(new.job_id, old.job_id)),
        where=newer)


def utterance_upsert(utt, *, reference_wins: bool = False):
    """``utt`` (an INSERT into utterances, either dialect) made an upsert that keeps the most advanced version.

    ``reference_wins``: the same upsert for reconciliation's repair of a final
    utterance that differs from Gladia's final transcript. Both versions are
    final and the reference carries no later ``created_at``, so the ranking
    below cannot prefer it; the reference (``GET /v2/live/:id``) wins instead.
    """
    ut = Utterance.__table__
    new, old = utt.excluded, ut.c
    # Rank = (is_final, created_at, text): a final beats any partial, a later
    # message beats an earlier one, and the text breaks exact ties, so the
    # stored row never depends on arrival order.
    utt_more_advanced = or_(
        new.is_final > old.is_final,
        and_(
            new.is_final == old.is_final,
            or_(
                _ts(new.created_at) > _ts(old.created_at),
                and_(_ts(new.created_at) == _ts(old.created_at), new.text >= old.text),
            ),
        ),
    )
    utt_set = {name: getattr(new, name) for name in (
        "is_final", "channel", "start_s", "end_s", "text", "language", "confidence", "words", "word_count",
        "source", "created_at", "updated_at")}
    utt_set["job_id"] = func.coalesce(new.job_id, old.job_id)
    return utt.on_conflict_do_update(index_elements=["gladia_id", "utterance_id"], set_=utt_set,
                                     where=None if reference_wins else utt_more_advanced)


@functools.lru_cache(maxsize=None)
def pg_single_statements() -> SimpleNamespace:
    """PostgreSQL: one callback's normalization as ONE statement of data-modifying CTEs.

    ``new_event`` inserts the event (nothing on a duplicate message),
    ``inbox_done`` marks the inbox row processed, and for a transcript
    ``utterance`` upserts the utterance only when ``new_event`` inserted a row,
    exactly as the general path does in three statements (the handlers that
    name these statements, in ``handlers``). The statement
    returns how many events it inserted (0 or 1). One statement is one
    transaction (atomic: any error leaves nothing) and one round trip instead
    of six (BEGIN, three statements, COMMIT). Parameters are named ``e_*``
    (event), ``u_*`` (utterance) and ``b_*`` (inbox).
    """
    from sqlalchemy.dialects.postgresql import insert

    ev, ut = Event.__table__, Utterance.__table__

    def params(table, prefix: str, names: Iterable[str]) -> dict[str, Any]:
        # Typed casts: a bare parameter in a SELECT list would reach PostgreSQL as text.
        return {name: cast(bindparam(prefix + name, type_=table.c[name].type), table.c[name].type) for name in names}

    event_values = params(ev, "e_", EVENT_COLUMNS)
    # The payload arrives as its canonical JSON text, already serialized for its key.
    event_values["payload"] = cast(bindparam("e_payload", type_=Text()), ev.c.payload.type)
    new_event = (insert(ev).values(event_values)
                 .on_conflict_do_nothing(index_elements=["gladia_id", "message_key"])
                 .returning(ev.c.id).cte("new_event"))
    inbox_done = statements("postgresql").inbox_processed.returning(InboxItem.__table__.c.id).cte("inbox_done")
    utt_values = params(ut, "u_", UTTERANCE_COLUMNS)
    utterance = utterance_upsert(insert(ut).from_select(
        list(UTTERANCE_COLUMNS), select(*utt_values.values()).where(exists(new_event.select())),
    )).returning(ut.c.id).cte("utterance")
    inserted = select(func.count()).select_from(new_event)
    return SimpleNamespace(
        event_only=inserted.add_cte(inbox_done),
        transcript=inserted.add_cte(inbox_done, utterance),
    )


def _utterance_on_conflict(*, epoch: str) -> str:
    """The ``ON CONFLICT`` clause of the receivers' plain-SQL utterance upserts: :func:`utterance_upsert`'s ranking.

    ``epoch``: the SQL literal of the time a missing ``created_at`` ranks as.
    """
    created = (f"coalesce(excluded.created_at, {epoch})", f"coalesce(utterances.created_at, {epoch})")
    ranked = ("excluded.is_final > utterances.is_final OR (excluded.is_final = utterances.is_final AND "
              f"({created[0]} > {created[1]} OR ({created[0]} = {created[1]} AND excluded.text >= utterances.text)))")
    replaced = ", ".join(f"{c} = excluded.{c}" for c in (
        "is_final", "channel", "start_s", "end_s", "text", "language", "confidence", "words", "word_count",
        "source", "created_at", "updated_at"))
    return ("ON CONFLICT (gladia_id, utterance_id) DO UPDATE SET "
            f"job_id = coalesce(excluded.job_id, utterances.job_id), {replaced} WHERE {ranked}")


@functools.lru_cache(maxsize=None)
def pg_receive_statements() -> SimpleNamespace:
    """PostgreSQL: a callback stored AND normalized by ONE statement (one round trip, one commit).

    The inbox row is inserted already ``processed`` (only if its job is still
    open, as :func:`_inbox_insert_open` checks it; nothing on a duplicate
    delivery), the event row takes its id, and for a transcript the utterance
    is upserted when the event is new, with the ranking of
    :func:`utterance_upsert`, as :func:`pg_single_statements` does after a
    separate inbox INSERT. One statement is atomic: if any part fails, nothing
    is written and the receiver stores the raw row on its own first (the
    two-step path), so a normalization failure never loses the delivery. The
    statement returns the inbox row's id, or no row (a duplicate, or a closed
    job: nothing written; the two-step path tells which).

    Plain SQL for the driver (``exec_driver_sql``), kept under psycopg's
    4096-byte limit for caching a statement's parsing; the payload arrives
    once, as its canonical JSON text (``e_payload``), parsed once by the
    event's INSERT: the utterance reads its words from the event row that
    INSERT returns (none on a duplicate message, so no utterance either)
    rather than from the text again.
    ``tests/ingest`` checks that both paths store the same rows.
    """
    settled = ", ".join(f"'{state}'" for state in SETTLED_STATES)
    inbox = (
        "WITH inbox AS (INSERT INTO callback_inbox (dedupe_key, kind, received_at, headers, body, event, "
        "gladia_id, job_id, status, attempts, duplicates, processed_at) "
        "SELECT %(i_key)s::text, 'callback', %(i_at)s::timestamptz, %(i_headers)s::jsonb, %(i_body)s::bytea, "
        "%(i_event)s::text, %(gladia)s::text, %(job)s::text, 'processed', 1, 0, %(now)s::timestamptz "
        f"WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.id = %(job)s::text AND jobs.state NOT IN ({settled}) "
        "AND (jobs.done_at IS NULL OR jobs.done_at > %(cutoff)s OR jobs.updated_at > %(cutoff)s)) "
        f"ON CONFLICT ({INBOX_KEY_SESSION}, dedupe_key) DO NOTHING RETURNING id), "
        "new_event AS (INSERT INTO events (gladia_id, job_id, message_key, type, source, created_at, received_at, "
        "inbox_id, payload) SELECT %(gladia)s::text, %(job)s::text, %(e_key)s::text, %(e_type)s::text, 'callback', "
        "%(created)s::timestamptz, %(i_at)s::timestamptz, inbox.id, %(e_payload)s::jsonb FROM inbox "
        "ON CONFLICT (gladia_id, message_key) DO NOTHING RETURNING id, payload)"
    )
    words = "(new_event.payload #> '{data,utterance,words}')"
    on_conflict = _utterance_on_conflict(epoch="'epoch'")
    utterance = (
        ", utterance AS (INSERT INTO utterances (gladia_id, job_id, utterance_id, is_final, channel, start_s, end_s, "
        "text, language, confidence, words, word_count, source, created_at, received_at, updated_at) "
        "SELECT %(gladia)s::text, %(job)s::text, %(u_id)s::text, %(u_final)s::boolean, %(u_channel)s::int, "
        "%(u_start)s::float8, %(u_end)s::float8, %(u_text)s::text, %(u_language)s::text, %(u_confidence)s::float8, "
        f"CASE WHEN jsonb_typeof({words}) = 'array' THEN {words} ELSE '[]'::jsonb END, %(u_count)s::int, "
        "'callback', %(created)s::timestamptz, %(i_at)s::timestamptz, %(now)s::timestamptz "
        f"FROM new_event {on_conflict})"
    )
    return SimpleNamespace(event_only=inbox + " SELECT id FROM inbox",
                           transcript=inbox + utterance + " SELECT id FROM inbox")


@functools.lru_cache(maxsize=None)
def sqlite_receive_statements() -> SimpleNamespace:
    """SQLite: what :func:`pg_receive_statements` does, as three statements for the driver in one transaction.

    ``inbox`` inserts the raw row already ``processed`` if its job is still
    open (no row: a duplicate delivery or a closed job), ``event`` the event
    row with the inbox row's id (``inbox_id``; no row: a duplicate message),
    ``utterance`` upserts a transcript's utterance with the ranking of
    :func:`utterance_upsert`. The receiver runs them under a savepoint of
    the write transaction that admitted the callback, on the sqlite3
    connection itself (SQLAlchemy's execution context would cost more than
    the statements), so a failure rolls all of them back and the raw row is
    then stored on its own. Parameters are named as in
    :func:`pg_receive_statements`, with times already in the column's stored
    form (:func:`sqlite_time`); the payload arrives as its canonical JSON text
    and the utterance's words are read from it by SQLite.
    """
    settled = ", ".join(f"'{state}'" for state in SETTLED_STATES)
    words = "json_extract(:e_payload, '$.data.utterance.words')"
    on_conflict = _utterance_on_conflict(epoch=f"'{sqlite_time(_EPOCH)}'")
    return SimpleNamespace(
        inbox=(
            "INSERT INTO callback_inbox (dedupe_key, kind, received_at, headers, body, event, gladia_id, job_id, "
            "status, attempts, duplicates, processed_at) "
            "SELECT :i_key, 'callback', :i_at, :i_headers, :i_body, :i_event, :gladia, :job, 'processed', 1, 0, :now "
            f"WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.id = :job AND jobs.state NOT IN ({settled}) "
            "AND (jobs.done_at IS NULL OR jobs.done_at > :cutoff OR jobs.updated_at > :cutoff)) "
            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"),
        event=(
            "INSERT INTO events (gladia_id, job_id, message_key, type, source, created_at, received_at, inbox_id, "
            "payload) VALUES (:gladia, :job, :e_key, :e_type, 'callback', :created, :i_at, :inbox_id, :e_payload) "
            "ON CONFLICT (gladia_id, message_key) DO NOTHING RETURNING id"),
        utterance=(
            "INSERT INTO utterances (gladia_id, job_id, utterance_id, is_final, channel, start_s, end_s, text, "
            "language, confidence, words, word_count, source, created_at, received_at, updated_at) "
            "SELECT :gladia, :job, :u_id, :u_final, :u_channel, :u_start, :u_end, :u_text, :u_language, "
            f":u_confidence, CASE WHEN json_type({words}) = 'array' THEN {words} ELSE '[]' END, :u_count, "
            f"'callback', :created, :i_at, :now WHERE true {on_conflict}"),
    )


_sqlite_time_processor = UTCDateTime().dialect_impl(sqlite_dialect.dialect()).bind_processor(sqlite_dialect.dialect())


def sqlite_time(value: Optional[datetime]) -> Optional[str]:
    """A time as SQLite's ``UTCDateTime`` columns store it (what SQLAlchemy would bind)."""
    return _sqlite_time_processor(value)


# ------------------------------------------------------------------------- rows


def event_values(message: dict[str, Any], *, gladia_id: str, job_id: Optional[str], source: str,
                 created_at: Optional[datetime], received_at: datetime, inbox_id: Optional[int],
                 key: Optional[str] = None) -> dict[str, Any]:
    """The ``events`` row of one message (columns :data:`EVENT_COLUMNS`); ``key``: its message_key if known."""
    return dict(gladia_id=gladia_id, job_id=job_id, message_key=key or message_key(message), type=message["type"],
                source=source, created_at=created_at, received_at=received_at, inbox_id=inbox_id, payload=message)


def utterance_row(data: Mapping[str, Any], *, gladia_id: str, job_id: Optional[str], source: str,
                  created_at: Optional[datetime], received_at: datetime, now: datetime) -> dict[str, Any]:
    """The ``utterances`` row of a transcript message's ``data`` (columns :data:`UTTERANCE_COLUMNS`)."""
    return dict(gladia_id=gladia_id, job_id=job_id, source=source, created_at=created_at, received_at=received_at,
                updated_at=now, **utterance_values(data))


def utterance_values(data: Mapping[str, Any]) -> dict[str, Any]:
    utt = data["utterance"]
    words = utt.get("words") or []
    return dict(
        utterance_id=data["id"],
        is_final=bool(data["is_final"]),
        channel=int(utt.get("channel") or 0),
        start_s=float(utt["start"]),
        end_s=float(utt["end"]),
        text=utt["text"],
        language=utt.get("language"),
        confidence=float(utt["confidence"]) if utt.get("confidence") is not None else None,
        words=words,
        word_count=len(words),
    )
