"""The inbox (``callback_inbox``): every raw delivery, committed before the receiver answers 2xx.

As Standard Webhooks and Stripe recommend, the raw body of each callback or
account webhook is stored first, deduplicated on the sha256 of its canonical
JSON (Gladia sends no delivery id) with ``INSERT ... ON CONFLICT DO NOTHING``;
normalization follows in a transaction of its own (``delivery``). Before a
callback is stored, its session must be the one of the job its URL names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from ..gladia.keys import message_key
from ..models import Job
from .statements import connection, statements

SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-gladia-key", "x-api-key"}
)


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
    sql = statements(conn.dialect.name)
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


def job_id_for(conn: Connection, gladia_id: str) -> Optional[str]:
    """The job of a Gladia session, if any (account webhooks name only the session)."""
    jobs = Job.__table__
    return conn.execute(select(jobs.c.id).where(jobs.c.gladia_id == gladia_id)).scalar()


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
    conn = connection(executor)
    sql = statements(conn.dialect.name)
    dedupe_key = dedupe_key or message_key(body)
    inbox_id = conn.execute(sql.inbox_insert, dict(
        dedupe_key=dedupe_key, kind=kind, received_at=received_at, headers=dict(headers), body=raw,
        event=event, gladia_id=gladia_id, job_id=job_id, status="pending", attempts=0, duplicates=0,
    )).scalar()
    if inbox_id is not None:
        return Stored(inbox_id=inbox_id, duplicate=False, status="pending")
    row = conn.execute(sql.inbox_duplicate, {"b_key": dedupe_key, "b_at": received_at}).one()
    return Stored(inbox_id=row.id, duplicate=True, status=row.status)
