"""The receiver's whole write path: commit the raw delivery, then normalize it.

:func:`receive_callback` and :func:`receive_webhook` are what the Flask routes
call once a body is parsed and validated; they answer what the inbox made of
the delivery and the row's status after normalization (``processed``,
``failed``, ``pending``, or ``duplicate`` when an earlier copy was already
processed). The raw row is committed first and a normalization failure never
raises (``delivery``), so a :class:`~sqlalchemy.exc.DBAPIError` out of here
means the delivery was not stored.

This is the hot path (one callback per message of every live session). A
common callback takes one commit: on PostgreSQL one statement (see
:func:`_receive_callback_pg`), on SQLite three statements under a savepoint
of the transaction that admits it (:func:`_store_normalized_sqlite`); what
they cost is what ``bench/bench_callbacks.py`` measures.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
from datetime import datetime
from typing import Any, Callable, Mapping, Optional

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from .. import metrics
from ..config import Settings
from ..db import get_engine, make_engine
from ..gladia.keys import callback_key, canonical_json, sha256_hex
from ..gladia.messages import parse_timestamp
from ..gladia.validation import Callback, Webhook, check_within_audio
from ..models import utcnow
from .delivery import guarded, metric_event, normalize_inbox
from .inbox import (
    Forbidden,
    Gone,
    JobFacts,
    Stored,
    check_job_session,
    forget_job_session,
    job_id_for,
    open_cutoff,
    store_inbox,
)
from .locks import ATTEMPTS, retryable, write_lock
from .handlers import handler_for
from .statements import (
    event_values,
    pg_receive_statements,
    pg_single_statements,
    sqlite_receive_statements,
    sqlite_time,
    utterance_row,
    utterance_values,
)

log = logging.getLogger(__name__)


def receive_callback(settings: Settings, *, raw: bytes, body: Any, headers: Mapping[str, str], callback: Callback,
                     job_id: str, received_at: datetime) -> tuple[Stored, str]:
    """Store and normalize a per-session callback whose URL names ``job_id``.

    ``callback`` is ``validate_callback(body)``. The body's session must be the
    job's: raises :class:`UnknownJob` or :class:`Forbidden`. A job that no
    longer takes callbacks (settled, or past its end_session by
    ``CALLBACK_GRACE_S``) raises :class:`Gone`, and a message beyond the job's
    audio :class:`InvalidMessage`; nothing is written then. A job whose session
    the worker has not recorded yet gets the row stored raw and ``pending``:
    it is normalized once the binding exists. A conflict (the job was deleted
    meanwhile) is decided again from the database once, then refused as
    :class:`Forbidden`.
    """
    for attempt in (1, 2):
        try:
            if get_engine(settings.database_url).dialect.name == "postgresql":
                return _receive_callback_pg(settings, raw=raw, body=body, headers=headers, item=callback,
                                            job_id=job_id, received_at=received_at)
            return _store_and_normalize(settings, kind="callback", raw=raw, body=body, headers=headers,
                                        item=callback, job_id=job_id, received_at=received_at)
        except Gone:
            forget_job_session(settings.database_url, job_id)
            raise
        except IntegrityError:
            # Forget what we knew of the job and decide again from the database.
            forget_job_session(settings.database_url, job_id)
            if attempt == 2:
                raise Forbidden("the body names a session of another job") from None
    raise AssertionError("unreachable")


def receive_webhook(settings: Settings, *, raw: bytes, body: Any, headers: Mapping[str, str], webhook: Webhook,
                    received_at: datetime) -> Optional[tuple[Stored, str]]:
    """Store and normalize an account webhook; its job is looked up by session id. ``webhook``: the validated body.

    None when no job has that session: such a webhook is counted
    (``WEBHOOKS_UNKNOWN_SESSION``) and dropped, never stored, so that nobody
    can fill the inbox with bodies about sessions this service never created.
    """
    with get_engine(settings.database_url).connect() as conn:
        job_id = job_id_for(conn, webhook.gladia_id)
    if job_id is None:
        metrics.WEBHOOKS_UNKNOWN_SESSION.labels(metric_event(webhook.event)).inc()
        log.info("account webhook %s for unknown session %s dropped", webhook.event[:64], webhook.gladia_id)
        return None
    return _store_and_normalize(settings, kind="webhook", raw=raw, body=body, headers=headers, item=webhook,
                                job_id=job_id, received_at=received_at)


def _store_and_normalize(settings: Settings, *, kind: str, raw: bytes, body: Any, headers: Mapping[str, str],
                         item: Callback | Webhook, job_id: Optional[str],
                         received_at: datetime) -> tuple[Stored, str]:
    """The general path (SQLite, and webhooks everywhere): the raw row's transaction, then normalization's.

    On SQLite a common callback is stored already normalized in the first
    transaction (:func:`_store_normalized_sqlite`) and the second is skipped.
    """
    url = settings.database_url
    bound = True
    with get_engine(url).connect() as conn:
        in_one = conn.dialect.name == "sqlite"  # try storing and normalizing in one transaction
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with write_lock(conn), conn.begin():
                    open_after = stored = None
                    if kind == "callback":
                        assert job_id is not None and isinstance(item, Callback)
                        bound = _admit(conn, settings, job_id, item, received_at) is not None
                        open_after = open_cutoff(received_at, settings.callback_grace_s)
                        if bound and in_one:
                            stored = _store_normalized_sqlite(conn, item, raw, body, headers, job_id=job_id,
                                                              received_at=received_at, open_after=open_after)
                    if stored is None:
                        stored = store_inbox(conn, kind=kind, raw=raw, body=body, headers=headers,
                                             event=item.event, gladia_id=item.gladia_id, job_id=job_id,
                                             received_at=received_at, open_after=open_after)
                break
            except _TransactionLost as lost:
                log.warning("storing and normalizing a callback in one transaction lost the transaction (%s); "
                            "storing it first", lost)
                in_one = False
            except OperationalError as exc:
                if attempt == ATTEMPTS or not retryable(exc):
                    raise
                log.info("storing a callback hit %s; trying again", type(exc.orig).__name__)
        if stored.status == "processed":
            return stored, "duplicate" if stored.duplicate else "processed"
        if kind == "callback" and not bound:
            return stored, "pending"
        status = normalize_inbox(settings, stored.inbox_id, kind=kind, body=body, job_id=job_id,
                                 received_at=received_at, event=item.event, conn=conn, item=item)
    return stored, status


def _admit(conn: Connection, settings: Settings, job_id: str, item: Callback,
           received_at: datetime) -> Optional[JobFacts]:
    """Check a callback against its job before anything is stored; None when the job has no session yet.

    Raises :class:`UnknownJob`, :class:`Forbidden`, :class:`Gone`, or
    :class:`InvalidMessage` for times or durations beyond the job's audio.
    Reads the job only when its facts are not cached (``check_job_session``).
    """
    facts = check_job_session(conn, settings.database_url, job_id, item.gladia_id, now=received_at,
                              grace_s=settings.callback_grace_s)
    if facts.audio_duration_s is not None:
        check_within_audio(item.payload, facts.audio_duration_s, facts.audio_channels or 1)
    return facts if facts.gladia_id is not None else None


class _TransactionLost(Exception):
    """SQLite ended the receiver's transaction itself while it stored a callback in one (nothing is written)."""


def _store_normalized_sqlite(conn: Connection, item: Callback, raw: bytes, body: Any, headers: Mapping[str, str], *,
                             job_id: str, received_at: datetime, open_after: datetime) -> Optional[Stored]:
    """SQLite: a callback's raw row, already processed, and its normalized rows, in the admitting transaction.

    What :func:`_store_normalized` does on PostgreSQL, for the message types
    of :data:`~.handlers.SINGLE_STATEMENT_TYPES`: the statements of
    :func:`~.statements.sqlite_receive_statements` under a savepoint, so one
    commit (the caller's) writes everything. None when they wrote nothing (a
    duplicate delivery, or the job closed meanwhile) or failed: the savepoint
    is rolled back and the caller stores the raw row on its own, then
    normalizes it in a transaction of its own, as for any other message (a
    normalization failure then leaves the row ``failed``, never lost).
    Raises :class:`_TransactionLost` when SQLite rolled the whole transaction
    back, so that the caller begins again that way.
    """
    message = item.payload
    single_statement = handler_for(message["type"]).single_statement
    if single_statement is None:
        return None
    payload_json = canonical_json(message)
    now = utcnow()
    params = _receive_params(item, raw, headers, payload_json, dedupe_key=callback_key(body, payload_json),
                             job_id=job_id, received_at=received_at, now=now, cutoff=open_after, time=sqlite_time)
    statements = sqlite_receive_statements()
    # The sqlite3 connection itself, in the transaction SQLAlchemy began (BEGIN IMMEDIATE).
    driver = conn.connection.driver_connection
    driver.execute("SAVEPOINT receive_callback")
    try:
        inbox = driver.execute(statements.inbox, params).fetchall()
        if inbox:
            params["inbox_id"] = inbox[0][0]
            new_event = driver.execute(statements.event, params).fetchall()
            if new_event and single_statement == "transcript":
                params.update(_utterance_params(message["data"]))
                driver.execute(statements.utterance, params)
    except sqlite3.Error as exc:
        try:
            driver.execute("ROLLBACK TO receive_callback")
            driver.execute("RELEASE receive_callback")
        except sqlite3.Error:
            # SQLite rolled the whole transaction back itself (a trigger's RAISE(ROLLBACK), an I/O
            # error): nothing is stored, and the caller begins again with the raw row on its own.
            raise _TransactionLost(f"{type(exc).__name__}: {exc}") from exc
        log.warning("storing and normalizing a callback in one transaction failed (%s); storing it first",
                    type(exc).__name__)
        return None
    if not inbox:
        driver.execute("ROLLBACK TO receive_callback")
    driver.execute("RELEASE receive_callback")
    return _processed(inbox[0][0], now, received_at) if inbox else None


@functools.lru_cache(maxsize=None)
def _receiver_engine(url: str) -> Engine:
    """PostgreSQL: the callback receiver's own pool, in autocommit and without a pre-ping.

    On the receiver's hot path every transaction is a single statement (the
    inbox INSERT, then the normalization statement of
    :func:`~.statements.pg_single_statements`), so autocommit saves a BEGIN and
    a COMMIT round trip for each. The pool's pre-ping (one more round trip per
    request) is replaced by :func:`_receive_callback_pg` storing again on a
    fresh connection when the first statement finds its pooled connection
    dead: the inbox INSERT is idempotent, so trying it twice is safe. In
    autocommit no transaction outlives a statement, so a connection goes back
    to the pool without the ROLLBACK that resets it elsewhere.
    """
    return make_engine(url, pool_pre_ping=False, isolation_level="AUTOCOMMIT", pool_reset_on_return=None)


def _receive_callback_pg(settings: Settings, *, raw: bytes, body: Any, headers: Mapping[str, str], item: Callback,
                         job_id: str, received_at: datetime) -> tuple[Stored, str]:
    """:func:`receive_callback` on PostgreSQL: one statement in the common case, else two steps.

    0. The common case (the job's facts known, a message type of
       :data:`~.handlers.SINGLE_STATEMENT_TYPES`): the raw row, already
       processed, and its normalized rows in one statement and one commit
       (:func:`_store_normalized`). When it writes nothing or fails, the two
       steps below run.
    1. The raw delivery: one ``INSERT ... ON CONFLICT DO NOTHING`` in
       autocommit, committed (synchronously) before anything else, and only
       if the job is still open (the INSERT itself checks it). The job's
       facts (session, settled-ness, audio) are cached per process; when they
       are not, one SELECT reads them before the INSERT.
    2. The normalization, in a transaction of its own: one statement for the
       common message types (:data:`~.handlers.SINGLE_STATEMENT_TYPES`), else the
       general path of :func:`normalize_inbox` (several statements and row
       locks) on a transactional connection of the shared engine.
    """
    url = settings.database_url
    # Serialized once: for the inbox's dedupe key, the event's key and the stored payload.
    payload_json = canonical_json(item.payload)
    dedupe_key = callback_key(body, payload_json)
    single_statement = handler_for(item.payload["type"]).single_statement
    for attempt in (1, 2):
        try:
            with _receiver_engine(url).connect() as conn:
                facts = _admit(conn, settings, job_id, item, received_at)
                if facts is not None and single_statement is not None:
                    stored = _store_normalized(conn, item, raw, headers, payload_json, single_statement,
                                               dedupe_key=dedupe_key, job_id=job_id,
                                               received_at=received_at, grace_s=settings.callback_grace_s)
                    if stored is not None:
                        return stored, "processed"
                stored = store_inbox(conn, kind="callback", raw=raw, body=body, headers=headers, event=item.event,
                                     gladia_id=item.gladia_id, job_id=job_id, received_at=received_at,
                                     dedupe_key=dedupe_key,
                                     open_after=open_cutoff(received_at, settings.callback_grace_s))
                if stored.duplicate and stored.status == "processed":
                    return stored, "duplicate"
                if facts is None:  # normalized once the worker records the job's session
                    return stored, "pending"
                if single_statement is None:
                    with get_engine(url).connect() as tx_conn:  # a transaction of several statements
                        return stored, normalize_inbox(settings, stored.inbox_id, kind="callback", body=body,
                                                       job_id=job_id, received_at=received_at, event=item.event,
                                                       conn=tx_conn, item=item)
                return stored, _normalize_single(conn, stored.inbox_id, item, payload_json, single_statement,
                                                 job_id=job_id, received_at=received_at)
        except DBAPIError as exc:
            # Normalization never raises, so this is the raw INSERT (or the session check):
            # nothing was committed, or it was and the second INSERT finds the row
            # (counted then as a duplicate delivery, and normalized if still pending).
            if attempt == 2 or not (exc.connection_invalidated or retryable(exc)):
                raise
            log.info("storing a callback hit %s; trying again", type(exc.orig).__name__)
    raise AssertionError("unreachable")


def _store_normalized(conn: Connection, item: Callback, raw: bytes, headers: Mapping[str, str], payload_json: str,
                      single_statement: str, *, dedupe_key: str, job_id: str, received_at: datetime,
                      grace_s: float) -> Optional[Stored]:
    """The common callback in ONE statement and one commit: its raw row, already processed, and its rows.

    See :func:`~.statements.pg_receive_statements`. None when the statement
    wrote nothing (a duplicate delivery, or the job closed meanwhile) or failed
    on something other than the connection: the caller then takes the
    two-step path, which stores the raw row first and tells those cases apart
    (a normalization failure leaves the row ``failed``, never lost). A lost
    connection is raised, for the caller's retry on a fresh one.
    """
    now = utcnow()
    params = _receive_params(item, raw, headers, payload_json, dedupe_key=dedupe_key, job_id=job_id,
                             received_at=received_at, now=now, cutoff=open_cutoff(received_at, grace_s))
    if single_statement == "transcript":
        params.update(_utterance_params(item.payload["data"]))
    statement = getattr(pg_receive_statements(), single_statement)
    try:
        # On psycopg's connection itself: SQLAlchemy's execution context would cost as much as the
        # statement (the pool still hands the connection out and takes it back).
        row = conn.connection.driver_connection.execute(statement, params).fetchone()
    except psycopg.Error as exc:
        if conn.connection.driver_connection.broken:
            # The connection is gone (the server dropped it): through SQLAlchemy this time, which sees the
            # disconnect, invalidates the pool's older connections and raises for the caller's retry on a
            # fresh one.
            row = conn.exec_driver_sql(statement, params).fetchone()
            return None if row is None else _processed(row[0], now, received_at)
        log.warning("storing and normalizing a callback in one statement failed (%s); storing it first",
                    type(exc).__name__)
        return None
    return None if row is None else _processed(row[0], now, received_at)


def _receive_params(item: Callback, raw: bytes, headers: Mapping[str, str], payload_json: str, *, dedupe_key: str,
                    job_id: str, received_at: datetime, now: datetime, cutoff: datetime,
                    time: Callable[[Optional[datetime]], Any] = lambda value: value) -> dict[str, Any]:
    """The named parameters of the inbox and event statements of :mod:`.statements`, on either database.

    ``time`` converts each timestamp to what the driver binds: PostgreSQL
    takes datetimes as they are, SQLite its text form (``sqlite_time``).
    """
    message = item.payload
    return {
        "i_key": dedupe_key, "i_at": time(received_at), "i_event": item.event, "i_body": raw,
        "i_headers": json.dumps(headers, separators=(",", ":")), "gladia": item.gladia_id, "job": job_id,
        "now": time(now), "cutoff": time(cutoff), "e_key": sha256_hex(payload_json), "e_type": message["type"],
        "created": time(parse_timestamp(message.get("created_at"))), "e_payload": payload_json,
    }


def _utterance_params(data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``u_*`` parameters of the utterance upsert, for a transcript message's ``data``."""
    utt = utterance_values(data)
    return {"u_id": utt["utterance_id"], "u_final": utt["is_final"], "u_channel": utt["channel"],
            "u_start": utt["start_s"], "u_end": utt["end_s"], "u_text": utt["text"], "u_language": utt["language"],
            "u_confidence": utt["confidence"], "u_count": utt["word_count"]}


def _processed(inbox_id: int, now: datetime, received_at: datetime) -> Stored:
    metrics.CALLBACK_PROCESSING_SECONDS.observe(max(0.0, (now - received_at).total_seconds()))
    return Stored(inbox_id=inbox_id, duplicate=False, status="processed")


def _normalize_single(conn: Connection, inbox_id: int, item: Callback, payload_json: str, single_statement: str,
                      *, job_id: str, received_at: datetime) -> str:
    """Normalize a callback of :data:`~.handlers.SINGLE_STATEMENT_TYPES` with one statement (one transaction).

    ``payload_json`` is ``canonical_json(item.payload)``; ``single_statement`` names the statement of
    ``pg_single_statements()`` that its handler stands for.
    """
    message = item.payload
    created_at = parse_timestamp(message.get("created_at"))
    now = utcnow()
    params: dict[str, Any] = {"b_id": inbox_id, "b_now": now, "b_job": job_id}
    params.update(("e_" + name, value) for name, value in event_values(
        message, gladia_id=item.gladia_id, job_id=job_id, source="callback", created_at=created_at,
        received_at=received_at, inbox_id=inbox_id, key=sha256_hex(payload_json)).items())
    params["e_payload"] = payload_json
    statement = getattr(pg_single_statements(), single_statement)
    if single_statement == "transcript":
        params.update(("u_" + name, value) for name, value in utterance_row(
            message["data"], gladia_id=item.gladia_id, job_id=job_id, source="callback", created_at=created_at,
            received_at=received_at, now=now).items())
    return guarded(conn, lambda: conn.execute(statement, params), inbox_id=inbox_id, event=item.event,
                   received_at=received_at)
