"""Callback inbox and normalization: every Gladia message lands in SQL exactly once.

Two layers, as Standard Webhooks and Stripe recommend:

1. **Inbox** (``callback_inbox``): the raw body of each callback or account
   webhook, committed before the receiver answers 2xx, deduplicated on the
   sha256 of its canonical JSON (Gladia sends no delivery id) with
   ``INSERT ... ON CONFLICT DO NOTHING``.
2. **Normalized tables** (``events``, ``utterances``, ``addon_results``,
   ``session_results`` and the job's state), written by
   :func:`normalize_message` in a transaction of its own. A failure there leaves
   the inbox row ``failed``; :func:`process_inbox_item` re-runs it later.

:func:`normalize_message` is the one entry point for a Gladia message whichever
way it reached us: a callback, the WebSocket, or ``result.messages`` of
``GET /v2/live/:id`` during reconciliation. It is idempotent and independent
of order: each message is one ``events`` row keyed by (session, sha256 of the
message), and every derived row is an upsert whose ``WHERE`` keeps the most
advanced version (a final beats a partial, a later message beats an earlier
one), so applying any set of messages in any order, any number of times, gives
the same end state.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping, Optional

from prometheus_client import Counter

try:
    import fcntl
except ImportError:  # not POSIX: threads still queue on the mutex
    fcntl = None  # type: ignore[assignment]
from sqlalchemy import (
    Connection,
    Engine,
    String,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from . import metrics
from .config import Settings
from .db import get_engine, make_engine, session_scope
from .gladia.messages import (
    KNOWN_EVENTS,
    KNOWN_TYPES,
    LIFECYCLE_STATES,
    REALTIME_ADDONS,
    SESSION_ADDONS,
    WEBHOOK_EVENTS,
    parse_timestamp,
)
from .logging_setup import job_context
from .models import (
    AFTER_AUDIO_STATES,
    EVENT_SOURCES,
    AddonResult,
    Event,
    InboxItem,
    Job,
    SessionResult,
    UTCDateTime,
    Utterance,
    utcnow,
)

log = logging.getLogger(__name__)

MAX_ID_LEN = 64  # width of gladia_id / utterance_id columns
MAX_LANG_LEN = 16
MAX_EVENT_LEN = 64
MAX_JSON_DEPTH = 32
MAX_CHANNEL = 2**15  # far above Gladia's 8, far below any integer column's limit
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-gladia-key", "x-api-key"}
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

UNKNOWN_EVENTS = Counter(
    "webhook_unknown_events_total", "Messages of a type this version does not know, stored raw", ["source"]
)


class InvalidMessage(ValueError):
    """A body or message that cannot be accepted; the text says which field and why."""


# ------------------------------------------------------------------ canonical JSON


def canonical_json(value: Any) -> str:
    """The one serialization used for every hash, so equal JSON gives equal keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def message_key(message: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical message: the same message has the same key from any source."""
    return _sha256(canonical_json(message))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def callback_key(body: Mapping[str, Any], payload_json: str) -> str:
    """``message_key(body)`` of a callback, given the canonical JSON of its payload.

    A callback body is ``{"event", "id", "payload"}``: with sorted keys its
    canonical text is those three in that order, so the payload (nearly all of
    the body) need not be serialized twice. Any other envelope is serialized whole.
    """
    if body.keys() != {"event", "id", "payload"}:
        return message_key(body)
    return _sha256(f'{{"event":{canonical_json(body["event"])},"id":{canonical_json(body["id"])},'
                   f'"payload":{payload_json}}}')


def metric_event(event: Any) -> str:
    """A bounded label for metrics: unknown event names are grouped as ``other``."""
    return event if isinstance(event, str) and (event in KNOWN_EVENTS or event in WEBHOOK_EVENTS) else "other"


def _reject_constant(name: str) -> Any:
    raise InvalidMessage(f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    # The parser's hook for every number with a fraction or an exponent: one that
    # overflows (1e400, or 400 digits and ".0") would become infinity.
    value = float(text)
    if math.isinf(value):
        raise InvalidMessage("JSON numbers must be finite")
    return value


# A NUL or a lone surrogate (which databases cannot store) can only come from a
# \u escape in valid JSON text. Bodies without one, and with too few brackets to
# nest deeper than the limit, are not walked after parsing.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def parse_json_body(raw: bytes) -> Any:
    """Parse a request body as strict JSON that every database can store.

    Refused: invalid UTF-8 or JSON, NaN/Infinity (and numbers that overflow to
    infinity), NUL characters and lone surrogates (PostgreSQL cannot store
    them), nesting deeper than :data:`MAX_JSON_DEPTH`.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except InvalidMessage:
        raise
    except RecursionError:
        raise InvalidMessage("JSON is nested too deeply") from None
    except ValueError as exc:
        raise InvalidMessage(f"body is not valid JSON: {exc}") from None
    # Fewer brackets than the depth limit cannot nest deeper than it.
    if _RISKY_ESCAPE.search(text) or text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_storable(value)
    return value


def _check_storable(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidMessage("JSON is nested too deeply")
        if isinstance(item, dict):
            for key, sub in item.items():
                _check_string(key)
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, str):
            _check_string(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidMessage("JSON numbers must be finite")


def _check_string(value: str) -> None:
    if "\x00" in value:
        raise InvalidMessage("JSON strings must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessage("JSON strings must be valid Unicode (lone surrogate)") from None


# ---------------------------------------------------------------------- validation


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidMessage(message)


def _check_id(value: Any, field: str) -> None:
    _require(isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN, f"{field} must be a string of 1 to {MAX_ID_LEN} characters")


def _check_optional_lang(value: Any, field: str) -> None:
    _require(value is None or (isinstance(value, str) and len(value) <= MAX_LANG_LEN), f"{field} must be a language code")


def _check_utterance(utt: Any, field: str) -> None:
    _require(isinstance(utt, dict), f"{field} must be an object")
    for name in ("start", "end"):
        _require(_is_number(utt.get(name)), f"{field}.{name} must be a number")
    _require(isinstance(utt.get("text"), str), f"{field}.text must be a string")
    _require(utt.get("confidence") is None or _is_number(utt.get("confidence")), f"{field}.confidence must be a number")
    channel = utt.get("channel", 0)
    _require(
        isinstance(channel, int) and not isinstance(channel, bool) and 0 <= channel < MAX_CHANNEL,
        f"{field}.channel must be a non-negative integer",
    )
    _check_optional_lang(utt.get("language"), f"{field}.language")
    words = utt.get("words", [])
    _require(isinstance(words, list), f"{field}.words must be a list")
    if not all(isinstance(word, dict) for word in words):
        bad = next(i for i, word in enumerate(words) if not isinstance(word, dict))
        raise InvalidMessage(f"{field}.words[{bad}] must be an object")


def _check_error_field(message: Mapping[str, Any]) -> None:
    error = message.get("error")
    _require(error is None or isinstance(error, dict), "payload.error must be an object or null")


def validate_message(message: Any) -> None:
    """Check a Gladia message (the WebSocket shape) has the fields normalization relies on.

    Strict on what is used, lenient on the rest: Gladia may add fields, and a
    type this version does not know is accepted as long as it is an object
    with a string ``type``.
    """
    _require(isinstance(message, dict), "payload must be an object")
    mtype = message.get("type")
    _require(isinstance(mtype, str) and 0 < len(mtype) <= MAX_EVENT_LEN, "payload.type must be a non-empty string")
    session_id = message.get("session_id")
    _require(session_id is None or isinstance(session_id, str), "payload.session_id must be a string")
    created = message.get("created_at")
    _require(created is None or isinstance(created, str), "payload.created_at must be a string")
    data = message.get("data")
    if mtype == "transcript":
        _require(isinstance(data, dict), "payload.data must be an object")
        _check_id(data.get("id"), "payload.data.id")
        _require(isinstance(data.get("is_final"), bool), "payload.data.is_final must be a boolean")
        _check_utterance(data.get("utterance"), "payload.data.utterance")
    elif mtype in REALTIME_ADDONS:
        _check_error_field(message)
        _require(data is None or isinstance(data, dict), "payload.data must be an object or null")
        if isinstance(data, dict):
            _check_id(data.get("utterance_id"), "payload.data.utterance_id")
            if mtype == "translation":
                _require(
                    isinstance(data.get("target_language"), str) and 0 < len(data["target_language"]) <= MAX_LANG_LEN,
                    "payload.data.target_language must be a language code",
                )
            else:
                _require(isinstance(data.get("results", []), list), "payload.data.results must be a list")
    elif mtype in SESSION_ADDONS:
        _check_error_field(message)
        _require(data is None or isinstance(data, dict), "payload.data must be an object or null")
    elif mtype == "post_transcript":
        _require(isinstance(data, dict), "payload.data must be an object")
        _check_transcription(data, "payload.data")
    elif mtype == "post_final_transcript":
        _require(isinstance(data, dict), "payload.data must be an object")
        meta = data.get("metadata")
        _require(meta is None or isinstance(meta, dict), "payload.data.metadata must be an object")
        for name in ("audio_duration", "billing_time", "transcription_time"):
            value = (meta or {}).get(name)
            _require(value is None or _is_number(value), f"payload.data.metadata.{name} must be a number")
        channels = (meta or {}).get("number_of_distinct_channels")
        _require(
            channels is None or (isinstance(channels, int) and not isinstance(channels, bool) and 0 <= channels < MAX_CHANNEL),
            "payload.data.metadata.number_of_distinct_channels must be a non-negative integer",
        )
        transcription = data.get("transcription")
        _require(transcription is None or isinstance(transcription, dict), "payload.data.transcription must be an object")
        if transcription is not None:
            _check_transcription(transcription, "payload.data.transcription")
    elif mtype in ("end_recording", "speech_start", "speech_end", "audio_chunk", "stop_recording"):
        _require(data is None or isinstance(data, dict), "payload.data must be an object or null")


def _check_transcription(data: Mapping[str, Any], field: str) -> None:
    full = data.get("full_transcript")
    _require(full is None or isinstance(full, str), f"{field}.full_transcript must be a string")
    languages = data.get("languages")
    _require(languages is None or isinstance(languages, list), f"{field}.languages must be a list")


@dataclass(frozen=True)
class Callback:
    """A validated per-session callback body ``{id, event, payload}``."""

    gladia_id: str
    event: str
    payload: dict[str, Any]


def validate_callback(body: Any) -> Callback:
    """Check the envelope of a per-session callback and the message inside it."""
    _require(isinstance(body, dict), "body must be a JSON object")
    _check_id(body.get("id"), "id")
    event = body.get("event")
    _require(isinstance(event, str) and event.startswith("live.") and len(event) <= MAX_EVENT_LEN + 5,
             "event must be a string 'live.<type>'")
    payload = body.get("payload")
    validate_message(payload)
    _require(payload["type"] == event[len("live."):], "event and payload.type disagree")
    session_id = payload.get("session_id")
    _require(session_id is None or session_id == body["id"], "payload.session_id differs from id")
    return Callback(gladia_id=body["id"], event=event, payload=payload)


@dataclass(frozen=True)
class Webhook:
    """A validated account webhook body ``{event, payload: {id}}``."""

    gladia_id: str
    event: str


def validate_webhook(body: Any) -> Webhook:
    _require(isinstance(body, dict), "body must be a JSON object")
    event = body.get("event")
    _require(isinstance(event, str) and 0 < len(event) <= MAX_EVENT_LEN, "event must be a non-empty string")
    payload = body.get("payload")
    _require(isinstance(payload, dict), "payload must be an object")
    _check_id(payload.get("id"), "payload.id")
    return Webhook(gladia_id=payload["id"], event=event)


def safe_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers worth keeping with the raw body, minus credentials."""
    kept: dict[str, str] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in SECRET_HEADERS or "\x00" in value:
            continue
        kept[lname] = value[:1000]
        if len(kept) >= 50:
            break
    return kept


# -------------------------------------------------------------------- SQL helpers
#
# The receiver is the hot path (Gladia posts one callback per message of every
# live session), so its statements are built once per dialect and executed on
# a Core connection with plain parameter dicts; SQLAlchemy then reuses their
# compiled form and psycopg its server-side prepared statements.


def _dialect_name(executor: Session | Connection) -> str:
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    return bind.dialect.name


def _connection(executor: Session | Connection) -> Connection:
    return executor.connection() if isinstance(executor, Session) else executor


def _ts(column):
    return func.coalesce(column, literal(_EPOCH, UTCDateTime()))


@functools.lru_cache(maxsize=None)
def _statements(dialect: str) -> SimpleNamespace:
    """Every INSERT/UPDATE of ingestion, for one SQL dialect."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    ev, ut, ad, ib, sr = (m.__table__ for m in (Event, Utterance, AddonResult, InboxItem, SessionResult))

    addon = insert(ad)
    anew, aold = addon.excluded, ad.c
    # The latest message wins; on equal created_at a success beats an error.
    addon_newer = or_(
        _ts(anew.created_at) > _ts(aold.created_at),
        and_(_ts(anew.created_at) == _ts(aold.created_at), aold.data.is_(None)),
    )

    return SimpleNamespace(
        event_insert=insert(ev).on_conflict_do_nothing(index_elements=["gladia_id", "message_key"]).returning(ev.c.id),
        utterance_upsert=_utterance_upsert(insert(ut)),
        addon_upsert=addon.on_conflict_do_update(
            index_elements=["gladia_id", "kind", "utterance_id", "target_language"],
            set_=dict(data=anew.data, error=anew.error, source=anew.source, created_at=anew.created_at,
                      received_at=anew.received_at, job_id=func.coalesce(anew.job_id, aold.job_id)),
            where=addon_newer),
        result_ensure=insert(sr).on_conflict_do_nothing(index_elements=["gladia_id"]),
        inbox_insert=insert(ib).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(ib.c.id),
        inbox_duplicate=update(ib)
        .where(ib.c.dedupe_key == bindparam("b_key"))
        .values(duplicates=ib.c.duplicates + 1, last_duplicate_at=bindparam("b_at", type_=UTCDateTime()))
        .returning(ib.c.id, ib.c.status),
        inbox_processed=update(ib)
        .where(ib.c.id == bindparam("b_id"))
        .values(status="processed", processed_at=bindparam("b_now", type_=UTCDateTime()), error=None,
                attempts=ib.c.attempts + 1, job_id=func.coalesce(ib.c.job_id, bindparam("b_job", type_=String()))),
        inbox_failed=update(ib)
        .where(ib.c.id == bindparam("b_id"))
        .values(status="failed", error=bindparam("b_error", type_=Text()), attempts=ib.c.attempts + 1),
        job_session=select(Job.__table__.c.gladia_id).where(Job.__table__.c.id == bindparam("b_job")),
    )


def _utterance_upsert(utt):
    """``utt`` (an INSERT into utterances, either dialect) made an upsert that keeps the most advanced version."""
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
                                     where=utt_more_advanced)


EVENT_COLUMNS = ("gladia_id", "job_id", "message_key", "type", "source", "created_at", "received_at", "inbox_id",
                 "payload")
UTTERANCE_COLUMNS = ("gladia_id", "job_id", "utterance_id", "is_final", "channel", "start_s", "end_s", "text",
                     "language", "confidence", "words", "word_count", "source", "created_at", "received_at",
                     "updated_at")
# Message types whose whole normalization is the event row plus at most one
# utterance: on PostgreSQL the receiver writes them in one statement. The
# others (lifecycle, add-ons, session results, unknown types) take the general path.
SINGLE_STATEMENT_TYPES = frozenset({"transcript", "speech_start", "speech_end", "audio_chunk", "stop_recording"})


@functools.lru_cache(maxsize=None)
def _pg_single_statements() -> SimpleNamespace:
    """PostgreSQL: one callback's normalization as ONE statement of data-modifying CTEs.

    ``new_event`` inserts the event (nothing on a duplicate message),
    ``inbox_done`` marks the inbox row processed, and for a transcript
    ``utterance`` upserts the utterance only when ``new_event`` inserted a row,
    exactly as :func:`_normalize` does in three statements. The statement
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
    inbox_done = _statements("postgresql").inbox_processed.returning(InboxItem.__table__.c.id).cte("inbox_done")
    utt_values = params(ut, "u_", UTTERANCE_COLUMNS)
    utterance = _utterance_upsert(insert(ut).from_select(
        list(UTTERANCE_COLUMNS), select(*utt_values.values()).where(exists(new_event.select())),
    )).returning(ut.c.id).cte("utterance")
    inserted = select(func.count()).select_from(new_event)
    return SimpleNamespace(
        event_only=inserted.add_cte(inbox_done),
        transcript=inserted.add_cte(inbox_done, utterance),
    )


# Row locks for read-modify-write of jobs and session results (FOR NO KEY UPDATE).
_ROW_LOCK = {"key_share": True}
# Transient PostgreSQL conflicts worth another try: deadlock, serialization failure.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})
_ATTEMPTS = 3


def _retryable(exc: BaseException) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _RETRY_SQLSTATES


class _SQLiteWriterLock:
    """SQLite has one writer at a time: make the receiver's writers queue, not poll.

    Without it, a writer that finds the database locked waits in SQLite's busy
    handler, which sleeps in steps of 1 to 100 ms; under a burst of callbacks
    from several gunicorn processes that sleeping dominates the latency. Here
    threads queue on a mutex and processes on an ``flock`` of a file beside
    the database, and the kernel wakes the next writer as soon as the lock is
    released. Other writers (worker, sweeper) still work through the busy timeout.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._files: dict[tuple[int, str], Any] = {}

    def _file(self, database: str):
        key = (os.getpid(), database)  # a lock file descriptor must not cross a fork
        handle = self._files.get(key)
        if handle is None:
            handle = self._files[key] = open(database + ".writelock", "a+b")  # noqa: SIM115 - kept open
        return handle

    @contextlib.contextmanager
    def hold(self, conn: Connection):
        database = conn.engine.url.database or ""
        with self._mutex:
            if not database or database == ":memory:" or fcntl is None:
                yield
                return
            handle = self._file(database)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


_sqlite_writer = _SQLiteWriterLock()


def _write_lock(conn: Connection):
    return _sqlite_writer.hold(conn) if conn.dialect.name == "sqlite" else contextlib.nullcontext()


# ------------------------------------------------------------------- normalization


def normalize_message(
    session: Session,
    message: dict[str, Any],
    *,
    source: str,
    job: Optional[Job],
    gladia_id: str,
    inbox_id: Optional[int] = None,
    received_at: Optional[datetime] = None,
) -> bool:
    """Store one Gladia message and everything derived from it; True when it was new.

    ``message`` is the WebSocket-shaped message (a callback's ``payload``, or one
    decoded item of ``result.messages``). Runs inside the caller's transaction;
    the caller commits. A message already stored for this session changes
    nothing except the job's state, in case the first copy arrived before the
    job was known. Raises :class:`InvalidMessage` (nothing written) for a
    message that lacks what normalization needs.
    """
    return _normalize(session, message, source=source, job_id=job.id if job is not None else None,
                      gladia_id=gladia_id, inbox_id=inbox_id, received_at=received_at)


def _normalize(
    session: Session,
    message: dict[str, Any],
    *,
    source: str,
    job_id: Optional[str],
    gladia_id: str,
    inbox_id: Optional[int],
    received_at: Optional[datetime],
    validated: bool = False,
) -> bool:
    if source not in EVENT_SOURCES:
        raise ValueError(f"unknown source {source!r}")
    if not validated:
        validate_message(message)
    conn = session.connection()
    sql = _statements(conn.dialect.name)
    mtype: str = message["type"]
    now = utcnow()
    received_at = received_at or now
    created_at = parse_timestamp(message.get("created_at"))
    lifecycle = mtype in LIFECYCLE_STATES and job_id is not None
    if lifecycle:
        # The job row first, before any insert that references it: one lock order everywhere.
        session.get(Job, job_id, with_for_update=_ROW_LOCK)

    new = conn.execute(sql.event_insert, _event_values(
        message, gladia_id=gladia_id, job_id=job_id, source=source, created_at=created_at,
        received_at=received_at, inbox_id=inbox_id,
    )).scalar() is not None

    if lifecycle:
        _apply_lifecycle(session, job_id, mtype, created_at or received_at, schedule=new and source != "reconcile")
    if not new:
        return False

    data = message.get("data")
    if mtype == "transcript":
        conn.execute(sql.utterance_upsert, _utterance_row(
            data, gladia_id=gladia_id, job_id=job_id, source=source, created_at=created_at,
            received_at=received_at, now=now,
        ))
    elif mtype in REALTIME_ADDONS or mtype in SESSION_ADDONS:
        data = data if isinstance(data, dict) else None
        per_utterance = mtype in REALTIME_ADDONS
        conn.execute(sql.addon_upsert, dict(
            gladia_id=gladia_id, job_id=job_id, kind=SESSION_ADDONS.get(mtype, mtype),
            utterance_id=(data or {}).get("utterance_id", "") if per_utterance else "",
            target_language=(data or {}).get("target_language", "") if mtype == "translation" else "",
            data=data, error=message.get("error"), source=source, created_at=created_at, received_at=received_at,
        ))
    elif mtype in ("post_transcript", "post_final_transcript"):
        conn.execute(sql.result_ensure, dict(gladia_id=gladia_id, job_id=job_id, updated_at=now))
        _store_transcription(session, gladia_id, job_id, mtype, data, created_at or received_at)
    elif mtype not in KNOWN_TYPES:
        UNKNOWN_EVENTS.labels(source).inc()
        log.warning("stored a message of unknown type %r for session %s", mtype[:64], gladia_id)
    return True


def _apply_lifecycle(session: Session, job_id: str, mtype: str, when: datetime, *, schedule: bool) -> None:
    # Lock the job row (PostgreSQL; SQLite transactions are serialized anyway)
    # and re-read it, so concurrent callbacks of one session cannot lose each
    # other's transition. Pending changes of the caller are flushed first.
    # FOR NO KEY UPDATE, not FOR UPDATE: it does not wait for the KEY SHARE
    # locks that every insert referencing the job takes (foreign keys), which
    # would otherwise deadlock with concurrent callbacks of the same session.
    job = session.get(Job, job_id, with_for_update=_ROW_LOCK, populate_existing=True)
    if job is None:
        return
    state = LIFECYCLE_STATES[mtype]
    if job.ws_url is None and state in AFTER_AUDIO_STATES:
        # No run has recorded a socket for this session: it is an orphan whose creator died before
        # recording it (the receiver bound it from its start_session), it never received audio, and
        # Gladia ends it after its grace. The job is not over: its next run replaces the session.
        log.info("job %s: %s of a session no run streams to; the job's state stays %s", job_id, mtype, job.state)
        return
    if job.advance(state, when=when):
        metrics.JOBS_STATE_CHANGES.labels(state).inc()
    if mtype == "end_session" and schedule:
        job.reconcile_after = utcnow()
    session.flush()


def _event_values(message: dict[str, Any], *, gladia_id: str, job_id: Optional[str], source: str,
                  created_at: Optional[datetime], received_at: datetime, inbox_id: Optional[int],
                  key: Optional[str] = None) -> dict[str, Any]:
    """The ``events`` row of one message (columns :data:`EVENT_COLUMNS`); ``key``: its message_key if known."""
    return dict(gladia_id=gladia_id, job_id=job_id, message_key=key or message_key(message), type=message["type"],
                source=source, created_at=created_at, received_at=received_at, inbox_id=inbox_id, payload=message)


def _utterance_row(data: Mapping[str, Any], *, gladia_id: str, job_id: Optional[str], source: str,
                   created_at: Optional[datetime], received_at: datetime, now: datetime) -> dict[str, Any]:
    """The ``utterances`` row of a transcript message's ``data`` (columns :data:`UTTERANCE_COLUMNS`)."""
    return dict(gladia_id=gladia_id, job_id=job_id, source=source, created_at=created_at, received_at=received_at,
                updated_at=now, **_utterance_values(data))


def _utterance_values(data: Mapping[str, Any]) -> dict[str, Any]:
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


def _store_transcription(session: Session, gladia_id: str, job_id: Optional[str], mtype: str,
                         data: dict[str, Any], when: datetime) -> None:
    """Fill the session's result row; post_final_transcript wins over post_transcript."""
    row = session.get(SessionResult, gladia_id, with_for_update=_ROW_LOCK, populate_existing=True)
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


# --------------------------------------------------------------------------- inbox


class Forbidden(Exception):
    """A valid callback token whose body names a session of another job."""


class UnknownJob(Exception):
    """A well-signed callback token whose job does not exist (deleted, or another deployment's key)."""


@dataclass(frozen=True)
class Stored:
    """What the inbox made of one delivery."""

    inbox_id: int
    duplicate: bool
    status: str  # the inbox row's status after this delivery: processed | failed | pending


# (database url, job id) -> gladia id last seen in the database: the common case
# (the body names the job's session) is checked without a query.
_job_sessions: dict[tuple[str, str], str] = {}
_JOB_SESSIONS_MAX = 100_000


def forget_job_session(url: str, job_id: str) -> None:
    _job_sessions.pop((url, job_id), None)


def check_job_session(conn: Connection, url: str, job_id: str, gladia_id: str) -> None:
    """Make sure ``gladia_id`` is this job's session, recording it if the job has none yet.

    A callback can beat the worker's own commit of the session id (Gladia sends
    ``start_session`` as soon as POST /v2/live returns). The token already proves
    the job; the id is recorded only when no other job holds it. Raises
    :class:`UnknownJob` or :class:`Forbidden`. Runs in the caller's transaction.
    """
    if _job_sessions.get((url, job_id)) == gladia_id:
        return
    # Not cached, or cached with another id: the worker may have replaced a
    # session it could not use (an orphan without its socket URL), so the
    # database decides.
    sql = _statements(conn.dialect.name)
    row = conn.execute(sql.job_session, {"b_job": job_id}).first()
    if row is None:
        raise UnknownJob(job_id)
    current = row.gladia_id
    if current is None:
        jobs = Job.__table__
        holder = conn.execute(select(jobs.c.id).where(jobs.c.gladia_id == gladia_id)).scalar()
        if holder is not None and holder != job_id:
            raise Forbidden("the body names a session of another job")
        conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.gladia_id.is_(None)).values(gladia_id=gladia_id))
        current = conn.execute(sql.job_session, {"b_job": job_id}).scalar()
    if current != gladia_id:
        raise Forbidden("the body names another session than this callback URL's job")
    if len(_job_sessions) >= _JOB_SESSIONS_MAX:
        _job_sessions.clear()
    _job_sessions[(url, job_id)] = gladia_id


def store_inbox(
    executor: Session | Connection,
    *,
    kind: str,
    raw: bytes,
    body: Any,
    headers: Mapping[str, str],
    event: Optional[str],
    gladia_id: Optional[str],
    job_id: Optional[str],
    received_at: datetime,
    dedupe_key: Optional[str] = None,
) -> Stored:
    """Insert the raw delivery, or count it as a duplicate of the one already stored.

    ``dedupe_key``: ``message_key(body)`` when the caller already has it.
    """
    conn = _connection(executor)
    sql = _statements(conn.dialect.name)
    dedupe_key = dedupe_key or message_key(body)
    inbox_id = conn.execute(sql.inbox_insert, dict(
        dedupe_key=dedupe_key, kind=kind, received_at=received_at, headers=dict(headers), body=raw,
        event=event, gladia_id=gladia_id, job_id=job_id, status="pending", attempts=0, duplicates=0,
    )).scalar()
    if inbox_id is not None:
        return Stored(inbox_id=inbox_id, duplicate=False, status="pending")
    row = conn.execute(sql.inbox_duplicate, {"b_key": dedupe_key, "b_at": received_at}).one()
    return Stored(inbox_id=row.id, duplicate=True, status=row.status)


@functools.lru_cache(maxsize=None)
def _receiver_engine(url: str) -> Engine:
    """PostgreSQL: the callback receiver's own pool, in autocommit and without a pre-ping.

    On the receiver's hot path every transaction is a single statement (the
    inbox INSERT, then the normalization statement of
    :func:`_pg_single_statements`), so autocommit saves a BEGIN and a COMMIT
    round trip for each. The pool's pre-ping (one more round trip per request)
    is replaced by :func:`_receive_callback_pg` storing again on a fresh
    connection when the first statement finds its pooled connection dead:
    the inbox INSERT is idempotent, so trying it twice is safe.
    """
    return make_engine(url, pool_pre_ping=False, isolation_level="AUTOCOMMIT")


def _receive_callback_pg(settings: Settings, *, raw: bytes, body: Any, headers: Mapping[str, str], item: Callback,
                         job_id: str, received_at: datetime) -> tuple[Stored, str]:
    """:func:`receive` for a callback on PostgreSQL: two round trips in the common case.

    1. The raw delivery: one ``INSERT ... ON CONFLICT DO NOTHING`` in
       autocommit, committed (synchronously) before anything else. The job's
       session check is cached per process; when it is not, its statements
       run before the INSERT, each atomic on its own (the session id is only
       ever set where it is NULL, and the unique index arbitrates races).
    2. The normalization, in a transaction of its own: one statement for the
       common message types (:data:`SINGLE_STATEMENT_TYPES`), else the
       general path of :func:`normalize_inbox` (several statements and row
       locks) on a transactional connection of the shared engine.
    """
    url = settings.database_url
    # Serialized once: for the inbox's dedupe key, the event's key and the stored payload.
    payload_json = canonical_json(item.payload)
    for attempt in (1, 2):
        try:
            with _receiver_engine(url).connect() as conn:
                check_job_session(conn, url, job_id, item.gladia_id)
                stored = store_inbox(conn, kind="callback", raw=raw, body=body, headers=headers, event=item.event,
                                     gladia_id=item.gladia_id, job_id=job_id, received_at=received_at,
                                     dedupe_key=callback_key(body, payload_json))
                if stored.duplicate and stored.status == "processed":
                    return stored, "duplicate"
                if item.payload["type"] not in SINGLE_STATEMENT_TYPES:
                    with get_engine(url).connect() as tx_conn:  # a transaction of several statements
                        return stored, normalize_inbox(settings, stored.inbox_id, kind="callback", body=body,
                                                       job_id=job_id, received_at=received_at, event=item.event,
                                                       conn=tx_conn, validated=True)
                return stored, _normalize_single(conn, stored.inbox_id, item, payload_json, job_id=job_id,
                                                 received_at=received_at)
        except DBAPIError as exc:
            # Normalization never raises, so this is the raw INSERT (or the session check):
            # nothing was committed, or it was and the second INSERT finds the row
            # (counted then as a duplicate delivery, and normalized if still pending).
            if attempt == 2 or not (exc.connection_invalidated or _retryable(exc)):
                raise
            log.info("storing a callback hit %s; trying again", type(exc.orig).__name__)
    raise AssertionError("unreachable")


def _normalize_single(conn: Connection, inbox_id: int, item: Callback, payload_json: str, *, job_id: str,
                      received_at: datetime) -> str:
    """Normalize a callback of :data:`SINGLE_STATEMENT_TYPES` with one statement (one transaction).

    ``payload_json`` is ``canonical_json(item.payload)``.
    """
    message = item.payload
    created_at = parse_timestamp(message.get("created_at"))
    now = utcnow()
    params: dict[str, Any] = {"b_id": inbox_id, "b_now": now, "b_job": job_id}
    params.update(("e_" + name, value) for name, value in _event_values(
        message, gladia_id=item.gladia_id, job_id=job_id, source="callback", created_at=created_at,
        received_at=received_at, inbox_id=inbox_id, key=_sha256(payload_json)).items())
    params["e_payload"] = payload_json
    statements = _pg_single_statements()
    if message["type"] == "transcript":
        statement = statements.transcript
        params.update(("u_" + name, value) for name, value in _utterance_row(
            message["data"], gladia_id=item.gladia_id, job_id=job_id, source="callback", created_at=created_at,
            received_at=received_at, now=now).items())
    else:
        statement = statements.event_only
    return _guarded(conn, lambda: conn.execute(statement, params), inbox_id=inbox_id, event=item.event,
                    received_at=received_at)


def receive(
    settings: Settings,
    *,
    kind: str,
    raw: bytes,
    body: Any,
    headers: Mapping[str, str],
    event: str,
    gladia_id: str,
    job_id: Optional[str],
    received_at: datetime,
    validated: bool = False,
) -> tuple[Stored, str]:
    """The receiver's whole write path: commit the raw delivery, then normalize it.

    Returns what the inbox made of it and the row's status after normalization
    (``processed``, ``failed``, ``pending``, or ``duplicate`` when an earlier
    copy was already processed). For a callback, ``job_id`` comes from the
    token and is checked against the body's session (:class:`Forbidden`,
    :class:`UnknownJob`); for a webhook the job is looked up by session id.
    ``validated``: the caller already ran :func:`validate_callback` /
    :func:`validate_webhook` on ``body``.
    """
    url = settings.database_url
    if kind == "callback" and get_engine(url).dialect.name == "postgresql":
        assert job_id is not None
        item = (Callback(gladia_id=gladia_id, event=event, payload=body["payload"]) if validated
                else validate_callback(body))
        return _receive_callback_pg(settings, raw=raw, body=body, headers=headers, item=item, job_id=job_id,
                                    received_at=received_at)
    with get_engine(url).connect() as conn:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with _write_lock(conn), conn.begin():
                    if kind == "callback":
                        assert job_id is not None
                        check_job_session(conn, url, job_id, gladia_id)
                    else:
                        job_id = _job_id_for(conn, gladia_id)
                    stored = store_inbox(conn, kind=kind, raw=raw, body=body, headers=headers, event=event,
                                         gladia_id=gladia_id, job_id=job_id, received_at=received_at)
                break
            except OperationalError as exc:
                if attempt == _ATTEMPTS or not _retryable(exc):
                    raise
                log.info("storing a callback hit %s; trying again", type(exc.orig).__name__)
        if stored.duplicate and stored.status == "processed":
            return stored, "duplicate"
        status = normalize_inbox(settings, stored.inbox_id, kind=kind, body=body, job_id=job_id,
                                 received_at=received_at, event=event, conn=conn, validated=validated)
    return stored, status


def apply_webhook(session: Session, hook: Webhook, job_id: Optional[str]) -> None:
    """An account webhook says a lifecycle step happened; it carries no message content.

    ``live.end_session`` schedules reconciliation now: GET /v2/live/:id then
    fetches everything the callbacks did or did not deliver.
    """
    if job_id is None or hook.event not in WEBHOOK_EVENTS:
        return
    _apply_lifecycle(session, job_id, hook.event[len("live."):], utcnow(), schedule=True)


def _job_id_for(conn: Connection, gladia_id: str) -> Optional[str]:
    jobs = Job.__table__
    return conn.execute(select(jobs.c.id).where(jobs.c.gladia_id == gladia_id)).scalar()


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
    validated: bool = False,
) -> str:
    """Normalize one stored delivery in its own transaction; returns the row's new status.

    Never raises for a bad message or a database error: the row is marked
    ``failed`` with the error (or stays ``pending`` if even that cannot be
    written) and the sweeper retries it.
    """
    if conn is None:
        with get_engine(settings.database_url).connect() as own:
            return normalize_inbox(settings, inbox_id, kind=kind, body=body, job_id=job_id,
                                   received_at=received_at, event=event, conn=own, validated=validated)
    sql = _statements(conn.dialect.name)

    def transaction() -> None:
        nonlocal job_id
        with _write_lock(conn), conn.begin():
            if conn.dialect.name == "postgresql":
                # No fsync wait for this commit: if a crash loses it, the inbox row
                # is still 'pending' (its status changes in this same transaction)
                # and the sweeper normalizes it again. The raw row, committed
                # before, stays synchronous.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            job_id = _normalize_stored(conn, sql, inbox_id, kind=kind, body=body, job_id=job_id,
                                       received_at=received_at, validated=validated)

    return _guarded(conn, transaction, inbox_id=inbox_id, event=event, received_at=received_at)


def _guarded(conn: Connection, transaction: Callable[[], None], *, inbox_id: int, event: Optional[str],
             received_at: datetime) -> str:
    """Run a normalization ``transaction``, retrying deadlocks; on failure mark the inbox row ``failed``.

    Returns the row's status afterwards: ``processed``, ``failed``, or
    ``pending`` when even the failure could not be recorded (the sweeper
    finds the row either way). Never raises.
    """
    sql = _statements(conn.dialect.name)
    try:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                transaction()
                break
            except OperationalError as exc:
                if attempt == _ATTEMPTS or not _retryable(exc):
                    raise
                log.info("normalizing inbox row %s hit %s; trying again", inbox_id, type(exc.orig).__name__)
    except Exception as exc:  # noqa: BLE001 - any failure must leave the raw row for a retry
        metrics.CALLBACKS_FAILED.labels(metric_event(event)).inc()
        log.warning("normalizing inbox row %s failed: %s: %s", inbox_id, type(exc).__name__, exc)
        try:
            if conn.invalidated or conn.closed:
                raise RuntimeError("connection lost")
            if conn.in_transaction():  # autocommit connections autobegin (nothing to undo in the database)
                conn.rollback()
            with _write_lock(conn), conn.begin():
                conn.execute(sql.inbox_failed, {"b_id": inbox_id, "b_error": f"{type(exc).__name__}: {exc}"[:2000]})
        except Exception:  # noqa: BLE001 - the row stays pending; the sweeper finds it
            log.exception("could not mark inbox row %s failed", inbox_id)
            return "pending"
        return "failed"
    metrics.CALLBACK_PROCESSING_SECONDS.observe(max(0.0, (utcnow() - received_at).total_seconds()))
    return "processed"


def _normalize_stored(conn: Connection, sql: SimpleNamespace, inbox_id: int, *, kind: str, body: Any,
                      job_id: Optional[str], received_at: datetime, validated: bool) -> Optional[str]:
    """One normalization transaction's statements; returns the job id it settled on.

    Lock order, the same in every transaction of the receiver so that none
    can wait on another in a cycle: the job row (lifecycle messages only),
    then the inbox row, then the normalized rows.
    """
    if kind == "webhook":
        item: Callback | Webhook = (Webhook(gladia_id=body["payload"]["id"], event=body["event"]) if validated
                                    else validate_webhook(body))
        lifecycle = item.event in WEBHOOK_EVENTS
    else:
        item = (Callback(gladia_id=body["id"], event=body["event"], payload=body["payload"]) if validated
                else validate_callback(body))
        lifecycle = item.payload["type"] in LIFECYCLE_STATES
    job_id = job_id or _job_id_for(conn, item.gladia_id)
    # The session joins this connection's transaction and never commits it.
    session = Session(bind=conn, join_transaction_mode="rollback_only")
    try:
        with job_context(job_id, item.gladia_id):
            if lifecycle and job_id is not None:
                session.get(Job, job_id, with_for_update=_ROW_LOCK)
            conn.execute(sql.inbox_processed, {"b_id": inbox_id, "b_now": utcnow(), "b_job": job_id})
            if isinstance(item, Webhook):
                apply_webhook(session, item, job_id)
            else:
                _normalize(session, item.payload, source="callback", job_id=job_id, gladia_id=item.gladia_id,
                           inbox_id=inbox_id, received_at=received_at, validated=True)
            session.flush()
    finally:
        session.close()
    return job_id


def process_inbox_item(settings: Settings, inbox_id: int) -> str:
    """Re-run normalization of a ``pending`` or ``failed`` inbox row (the sweeper's retry).

    Returns the row's status afterwards (``missing`` if there is no such row).
    A row already ``processed`` is left alone, so a redelivered task is harmless.
    """
    with session_scope(settings.database_url) as session:
        row = session.get(InboxItem, inbox_id)
        if row is None:
            return "missing"
        if row.status not in ("pending", "failed"):
            return row.status
        kind, raw, job_id, event, received_at = row.kind, row.body, row.job_id, row.event, row.received_at
    try:
        body = parse_json_body(raw)
    except InvalidMessage as exc:
        with session_scope(settings.database_url) as session:
            session.execute(
                update(InboxItem.__table__).where(InboxItem.__table__.c.id == inbox_id)
                .values(status="rejected", error=str(exc)[:2000])
            )
        return "rejected"
    return normalize_inbox(settings, inbox_id, kind=kind, body=body, job_id=job_id, received_at=received_at, event=event)
