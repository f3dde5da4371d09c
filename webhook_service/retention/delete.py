"""`delete`: one session erased everywhere, at Gladia first, then here (see :mod:`.erase`).

Gladia first: once the rows here are gone, so is the session id needed to ask Gladia again. When Gladia
refuses or cannot be reached, nothing is erased here and the error says so; an answer of 404 (the
session is already gone at Gladia) counts as done. A job still streaming is refused: cancel it first.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..config import Settings
from ..db import session_scope
from ..gladia.client import GladiaClient, GladiaError
from ..jobs.queries import require_job
from ..models import ACTIVE_STATES, Job, utcnow
from ..reports import refresh_session_stats
from .erase import Erased, erase_content


class DeleteRefused(Exception):
    """The session cannot be deleted now; the message says why and what to do."""


class GladiaRefused(DeleteRefused):
    """Gladia did not delete its copy; nothing was erased here."""


def describe(settings: Settings, ref: str) -> dict:
    """What a delete of ``ref`` would erase (for a confirmation prompt); raises LookupError."""
    from sqlalchemy import func, select

    from ..models import Utterance

    with session_scope(settings.database_url) as session:
        job = require_job(session, ref)
        utterances = session.scalar(select(func.count()).select_from(Utterance)
                                    .where(Utterance.job_id == job.id)) or 0
        return {"job_id": job.id, "gladia_id": job.gladia_id, "source_path": job.source_path, "state": job.state,
                "utterances": utterances, "content_deleted_at": job.content_deleted_at}


def delete_session(settings: Settings, ref: str, *, actor: str,
                   client_factory: Optional[Callable[[Settings], GladiaClient]] = None) -> Erased:
    """Erase the session ``ref`` names (job id, Gladia id, or a unique prefix) here and at Gladia.

    Raises LookupError (unknown or ambiguous id) or :class:`DeleteRefused`.
    """
    with session_scope(settings.database_url) as session:
        job = require_job(session, ref)
        if job.state in ACTIVE_STATES:
            raise DeleteRefused(f"job {job.id} is {job.state}: cancel it first, then delete it")
        job_id, gladia_id, gone_at_gladia = job.id, job.gladia_id, job.gladia_deleted_at is not None
    gladia = "no Gladia session" if not gladia_id else "already deleted" if gone_at_gladia else ""
    if not gladia:
        client = (client_factory or GladiaClient.from_settings)(settings)
        try:
            gladia = "deleted" if client.delete_live(gladia_id) else "already gone (404)"
        except GladiaError as exc:
            raise GladiaRefused(f"Gladia did not delete session {gladia_id} ({exc}); nothing was deleted here: "
                                "try again") from None
        finally:
            client.close()
    # The figures the reports keep are the ones computed from the rows about to go.
    refresh_session_stats(settings.database_url)
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LookupError(f"no session or job with id {ref!r}")
        if gladia_id and job.gladia_deleted_at is None:
            job.gladia_deleted_at = utcnow()
        return erase_content(session, job, actor=actor, action="delete", gladia=gladia)
