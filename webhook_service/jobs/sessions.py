"""The JSON API's list of sessions: jobs newest first, filtered, one page at a time.

Pages are either an offset or a keyset position (the ``created_at`` and id of
the last job of the previous page): a keyset page is stable while new jobs
arrive, and as fast on page 1,000 as on page 1. The API turns that position
into an opaque cursor; this module only knows the position.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from ..models import Batch, Job
from .queries import API_FORMAT, job_summary

Position = tuple[datetime, str]  # (created_at, job id) of a job in newest-first order


@dataclass(frozen=True)
class SessionFilter:
    states: tuple[str, ...] = ()  # empty: every state
    batch: Optional[str] = None  # a batch id or name
    since: Optional[datetime] = None  # created at or after
    until: Optional[datetime] = None  # created before
    after: Optional[Position] = None  # only the jobs after this one, newest first


@dataclass(frozen=True)
class SessionPage:
    items: list[dict[str, Any]]  # job summaries, newest first
    next_after: Optional[Position]  # the last job's position when more jobs follow, else None


def _filtered(query: Select, filters: SessionFilter) -> Select:
    if filters.states:
        query = query.where(Job.state.in_(filters.states))
    if filters.batch is not None:
        query = query.where(or_(Batch.id == filters.batch, Batch.name == filters.batch))
    if filters.since:
        query = query.where(Job.created_at >= filters.since)
    if filters.until:
        query = query.where(Job.created_at < filters.until)
    if filters.after is not None:
        created, job_id = filters.after
        query = query.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id)))
    return query


def sessions_page(session: Session, filters: SessionFilter, *, limit: int, offset: int = 0) -> SessionPage:
    """One page of jobs, newest first; one query (a row beyond the page says whether more follow)."""
    query = _filtered(select(Job, Batch).outerjoin(Batch, Batch.id == Job.batch_id), filters)
    rows = session.execute(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1).offset(offset)).all()
    page, more = rows[:limit], len(rows) > limit
    last = page[-1][0] if more else None
    return SessionPage(items=[job_summary(job, batch, API_FORMAT) for job, batch in page],
                       next_after=(last.created_at, last.id) if last is not None else None)
