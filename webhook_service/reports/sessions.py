"""The dashboard's session list and one session's summary row, read from the session summary view.

The dashboard shows the same numbers as `webhook-service report session_summary`
because both read the view ``report_session_summary`` and normalize its rows
with the same report declaration.
"""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..models import JOB_STATES, Job
from .catalogue import REPORTS
from .sql import fetch

SESSION_PAGE_SIZE = 50


def list_sessions(session: Session, *, state: Optional[str] = None, batch_id: Optional[str] = None,
                  limit: int = SESSION_PAGE_SIZE, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """One page of the session summary, newest first, and the number of matching sessions."""
    conditions, params = ["1 = 1"], {"limit": limit, "offset": offset}
    if state:
        conditions.append("state = :state")
        params["state"] = state
    if batch_id:
        conditions.append("batch_id = :batch_id")
        params["batch_id"] = batch_id
    where = " AND ".join(conditions)
    total = session.execute(text(f"SELECT count(*) FROM jobs WHERE {where}"), params).scalar_one()
    raw = fetch(session, f"SELECT * FROM report_session_summary WHERE {where} "
                         f"ORDER BY created_at DESC, job_id LIMIT :limit OFFSET :offset", params)
    return REPORTS["session_summary"].normalize(raw), int(total)


def state_counts(session: Session, batch_id: Optional[str] = None) -> dict[str, int]:
    """Jobs per state (every state, zeros included), of one batch or of all."""
    query = select(Job.state, func.count()).group_by(Job.state)
    if batch_id:
        query = query.where(Job.batch_id == batch_id)
    found = dict(session.execute(query).all())
    return {state: int(found.get(state, 0)) for state in JOB_STATES}


def session_summary_row(session: Session, job_id: str) -> Optional[dict[str, Any]]:
    """The session summary report's row of one job, or None when the view has none."""
    raw = fetch(session, "SELECT * FROM report_session_summary WHERE job_id = :job_id", {"job_id": job_id})
    if not raw:
        return None
    return REPORTS["session_summary"].normalize(raw)[0]
