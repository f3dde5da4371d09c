"""The inbox (``callback_inbox``): every raw delivery, committed before the receiver answers 2xx.

As Standard Webhooks and Stripe recommend, the raw body of each callback or
account webhook is stored first, deduplicated on the sha256 of its canonical
JSON (Gladia sends no delivery id) with ``INSERT ... ON CONFLICT DO NOTHING``;
normalization follows in a transaction of its own (``delivery``). Before a
callback is stored, its session must be the one of the job its URL names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Optional

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from ..gladia.keys import message_key
from ..models import SETTLED_STATES, Job
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


class Gone(Exception):
    """A callback for a job that is settled (reconciled, failed) or past its end_session by the grace period."""


@dataclass(frozen=True)
class JobFacts:
    """What the receiver needs of a callback's job: its session, whether it still takes callbacks, its audio."""

    gladia_id: Optional[str]
    settled: bool
    done_at: Optional[datetime]
    updated_at: Optional[datetime]
    audio_duration_s: Optional[float]
    audio_channels: Optional[int]

    def closed(self, now: datetime, grace_s: float) -> bool:
        """Whether callbacks can no longer change this job's results (only reconciliation can)."""
        if self.settled:
            return True
        if self.done_at is None:
            return False
        # As ``inbox_insert_open`` decides it: from the later of Gladia's end and the row's last change.
        return max(self.done_at, self.updated_at or self.done_at) < open_cutoff(now, grace_s)


def open_cutoff(now: datetime, grace_s: float) -> datetime:
    """The oldest ``done_at`` (end_session) of a job that still takes callbacks."""
    return now - timedelta(seconds=grace_s)


# (database url, job id) -> the job's facts last read from the database, for a job whose
# session is recorded: the common case (the body names the job's session) is checked
# without a query. A job settled is settled for good, and done_at is set once; an open
# job going stale here is caught by the inbox INSERT itself (``inbox_insert_open``).
_job_facts: dict[tuple[str, str], JobFacts] = {}
_JOB_FACTS_MAX = 100_000


def forget_job_session(url: str, job_id: str) -> None:
    _job_facts.pop((url, job_id), None)


def read_job_facts(conn: Connection, job_id: str) -> JobFacts:
    """The job's facts from the database; raises :class:`UnknownJob`."""
    row = conn.execute(statements(conn.dialect.name).job_session, {"b_job": job_id}).first()
    if row is None:
        raise UnknownJob(job_id)
    return JobFacts(gladia_id=row.gladia_id, settled=row.state in SETTLED_STATES, done_at=row.done_at,
                    updated_at=row.updated_at,
                    audio_duration_s=row.audio_duration_s, audio_channels=row.audio_channels)


def check_job_session(conn: Connection, url: str, job_id: str, gladia_id: str, *, now: datetime,
                      grace_s: float) -> JobFacts:
    """The job's facts, when ``gladia_id`` is its session or the job has none yet (``gladia_id`` None).

    A callback never records a session on a job: only the worker that created
    the session does (a forged ``start_session`` could otherwise bind any
    session, which the worker might then end with the service's key). A
    callback that beats the worker's commit is stored raw and normalized once
    the binding exists (the sweeper re-drives pending rows). Raises
    :class:`UnknownJob`, :class:`Gone` (the job no longer takes callbacks) or
    :class:`Forbidden` (the body names another session).
    """
    facts = _job_facts.get((url, job_id))
    if facts is None or facts.gladia_id != gladia_id:
        # Not cached, or cached with another id: the worker may have replaced a
        # session it could not use, so the database decides.
        facts = read_job_facts(conn, job_id)
        if facts.gladia_id is not None:
            if len(_job_facts) >= _JOB_FACTS_MAX:
                _job_facts.clear()
            _job_facts[(url, job_id)] = facts
    if facts.closed(now, grace_s):
        raise Gone(job_id)
    if facts.gladia_id is None and job_id_for(conn, gladia_id) not in (None, job_id):
        raise Forbidden("the body names a session of another job")
    if facts.gladia_id is not None and facts.gladia_id != gladia_id:
        raise Forbidden("the body names another session than this callback URL's job")
    return facts


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
    open_after: Optional[datetime] = None,
) -> Stored:
    """Insert the raw delivery, or count it as a duplicate of the one already stored.

    ``dedupe_key``: ``message_key(body)`` when the caller already has it.
    ``open_after``: a callback's, the oldest ``done_at`` of a job still taking
    callbacks; the row is then stored only if its job is open, else
    :class:`Gone` is raised and nothing is written.
    """
    conn = connection(executor)
    sql = statements(conn.dialect.name)
    dedupe_key = dedupe_key or message_key(body)
    values = dict(
        dedupe_key=dedupe_key, kind=kind, received_at=received_at, headers=dict(headers), body=raw,
        event=event, gladia_id=gladia_id, job_id=job_id, status="pending", attempts=0, duplicates=0,
    )
    if open_after is None:
        inbox_id = conn.execute(sql.inbox_insert, values).scalar()
    else:
        inbox_id = conn.execute(sql.inbox_insert_open, {**values, "b_job": job_id, "b_cutoff": open_after}).scalar()
    if inbox_id is not None:
        return Stored(inbox_id=inbox_id, duplicate=False, status="pending")
    row = conn.execute(sql.inbox_duplicate, {"b_gladia": gladia_id, "b_key": dedupe_key, "b_at": received_at}).first()
    if row is None:  # not a duplicate: the job closed since the receiver last read it
        raise Gone(job_id or "")
    return Stored(inbox_id=row.id, duplicate=True, status=row.status)
