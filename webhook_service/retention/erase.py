"""Erasing one session's content: every row that holds what was said, here and at Gladia, with an audit row.

What goes: the utterances, events (Gladia's messages), add-on results and raw callback requests of the
session, the transcript columns of its ``session_results`` row and the details of its reconciliation runs;
the job's source path, audio hash, metadata, session options and WebSocket URL are blanked. What stays:
the job row with its ids, states, timestamps, durations and byte counts, the billing figures of
``session_results`` (audio and billed seconds, Gladia's status), the reconciliation runs' counts, and
the session's ``session_stats`` row frozen at its last value (``jobs.content_deleted_at`` tells the
statistics cache to leave it). Usage and billing reports therefore count the session as before.

A job deleted before it settled (``queued``, or its stream ended but it is not reconciled) is also
failed, with a ``last_error`` that says it was deleted, so nothing streams or reconciles it again.

The audit row says who, when, which job and Gladia session, how many rows of each table, and what Gladia
answered; never any content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import delete, or_, update
from sqlalchemy.orm import Session

from ..models import (
    SETTLED_STATES,
    AddonResult,
    DeletionAudit,
    Event,
    InboxItem,
    Job,
    ReconciliationRun,
    SessionResult,
    Utterance,
    utcnow,
)

DELETED_SOURCE = "(deleted)"
# session_results columns that hold what was said; the others are figures the reports read.
RESULT_CONTENT = ("full_transcript", "post_transcript", "post_final_transcript", "gladia_response")


@dataclass
class Erased:
    job_id: str
    gladia_id: Optional[str]
    rows: dict[str, int] = field(default_factory=dict)
    gladia: str = "not asked"

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "gladia_id": self.gladia_id, "rows": self.rows, "gladia": self.gladia}


def _of(model, job: Job):
    clauses = [model.job_id == job.id]
    if job.gladia_id:
        clauses.append(model.gladia_id == job.gladia_id)
    return or_(*clauses)


def erase_content(session: Session, job: Job, *, actor: str, action: str, gladia: str = "not asked",
                  now: Optional[datetime] = None) -> Erased:
    """Erase ``job``'s content in ``session``'s transaction and add its audit row; see the module docstring."""
    now = now or utcnow()
    erased = Erased(job_id=job.id, gladia_id=job.gladia_id, gladia=gladia)
    # First: from here on the statistics cache leaves this session's figures as they are.
    job.content_deleted_at = now
    session.flush()
    for name, model in (("utterances", Utterance), ("events", Event), ("addon_results", AddonResult),
                        ("callback_inbox", InboxItem)):
        erased.rows[name] = session.execute(delete(model).where(_of(model, job))).rowcount or 0
    erased.rows["session_results_blanked"] = session.execute(
        update(SessionResult).where(_of(SessionResult, job)).values(**{c: None for c in RESULT_CONTENT})
    ).rowcount or 0
    erased.rows["reconciliation_runs_blanked"] = session.execute(
        update(ReconciliationRun).where(_of(ReconciliationRun, job)).values(details=None)
    ).rowcount or 0
    if job.state not in SETTLED_STATES:
        # Nothing may re-drive it now: no stream of a file it no longer names, no reconciliation of a
        # session Gladia no longer has.
        job.advance("failed", now)
        job.last_error = f"deleted by {actor[:100]} before it settled"
        job.reconcile_after = None
        job.retry_at = None
    job.source_path = DELETED_SOURCE
    job.audio_sha256 = None
    job.custom_metadata = {}
    job.session_config = {}
    job.ws_url = None
    session.add(DeletionAudit(at=now, actor=actor[:200], action=action, job_id=job.id, gladia_id=job.gladia_id,
                              rows=dict(erased.rows), gladia=gladia[:200]))
    return erased
