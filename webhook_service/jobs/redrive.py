"""Failed work run again, and work an operator no longer wants stopped.

**Re-run** (:func:`retry`). A failed job is run again under the same job id,
with a fresh Gladia session: the session it had is recorded in
``job_sessions`` (its run number, how it ended, its last error, the bytes
Gladia acknowledged), its stored results (utterances, events, add-ons, session
result) stay in the database but no longer count as the job's (their
``job_id`` is cleared), and the job goes back to ``queued`` with its attempts
reset and ``retries`` counted. When the new session is reconciled, the rows of
the replaced sessions are deleted (:func:`drop_replaced_results`): a job whose
first session was ``incomplete`` keeps those partial results until then. Inbox
rows and reconciliation runs of a replaced session stay with the job (the
record of what happened). The replaced session is left at Gladia.

A job that Gladia ended with audio unsent (reconciliation's ``incomplete``) is
re-run once on its own (:func:`auto_rerun_incomplete`).

**Cancel** (:func:`cancel`). A queued job never starts (its task finds it
settled); a streaming one loses its worker's claim (the worker drops its socket
at its next heartbeat), gets ``stop_recording`` on its session's socket, and
its session is deleted at Gladia when it holds no audio; a session that took
audio is kept and reconciled, so the partial transcript is stored. A cancelled
job is ``failed`` with ``cancelled_at`` set, and only re-run when named.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Optional

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_scope
from ..models import (ACTIVE_STATES, AddonResult, Batch, Event, Job, JobSession, SessionResult, Utterance,
                      utcnow)
from . import slots
from .dispatch import Dispatcher
from .queries import find_batch_id, require_job

log = logging.getLogger(__name__)

# Result tables whose rows of a replaced session are detached from the job, then deleted.
RESULT_MODELS = (Utterance, Event, AddonResult, SessionResult)
# How long a cancel waits for Gladia to let a stopped session be deleted.
DELETE_WAIT_S = 10.0


class ActionError(LookupError):
    """The request names nothing, or nothing it could act on; the message says which."""


class ActionConflict(ActionError):
    """The job named is in a state the action does not apply to."""


@dataclass
class ActionResult:
    """What one retry or cancel did, job by job."""

    done: list[dict[str, Any]] = field(default_factory=list)  # jobs acted on
    skipped: list[dict[str, Any]] = field(default_factory=list)  # jobs named but left as they were

    def as_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped}


# ------------------------------------------------------------------ selection

def _one_job(session: Session, ref: str) -> Job:
    try:
        return require_job(session, ref, noun="job")
    except LookupError as exc:  # unknown, or a prefix of several jobs
        raise ActionError(str(exc)) from None


def _batch_jobs(session: Session, ref: str) -> list[Job]:
    batch_id = find_batch_id(session, ref.strip()) if ref.strip() and "\x00" not in ref else None
    if batch_id is None:
        raise ActionError(f"no batch named {ref!r}")
    return list(session.execute(select(Job).where(Job.batch_id == batch_id).order_by(Job.created_at))
                .scalars())


def _locked(session: Session, job_id: str) -> Optional[Job]:
    return session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()


def _brief(job: Job, **extra: Any) -> dict[str, Any]:
    return {"job_id": job.id, "source_path": job.source_path, "state": job.state, **extra}


# ------------------------------------------------------------------ re-run

def previous_session_ids(session: Session, job_id: str) -> set[str]:
    return set(session.execute(select(JobSession.gladia_id).where(JobSession.job_id == job_id)).scalars())


def rerun(session: Session, job: Job, *, trigger: str, settings: Settings, now: Optional[datetime] = None,
          sweeper_sends: bool = True) -> None:
    """Put a failed job back to ``queued`` for a new run with a fresh session (row locked by the caller).

    ``sweeper_sends``: nothing sends the task now, so it is written as overdue and
    the next sweep sends it (within SWEEP_INTERVAL_S).
    """
    now = now or utcnow()
    if job.gladia_id:
        session.add(JobSession(job_id=job.id, gladia_id=job.gladia_id, run=(job.retries or 0) + 1,
                               state=job.state, last_error=job.last_error, bytes_acked=job.bytes_acked or 0,
                               bytes_total=job.bytes_total, created_at=job.gladia_created_at, replaced_at=now,
                               replaced_by=trigger))
        for model in RESULT_MODELS:
            session.execute(update(model).where(model.gladia_id == job.gladia_id, model.job_id == job.id)
                            .values(job_id=None))
    if not job.session_config and job.batch_id:
        # Failed at submit (the file could not be read then): start again from the batch's options.
        batch = session.get(Batch, job.batch_id)
        job.session_config = dict(batch.session_config or {}) if batch is not None else {}
        job.audio_channels = None  # probed again by the worker
    job.retries = (job.retries or 0) + 1
    job.state = "queued"
    job.queued_at = now
    for stamp in ("starting_at", "streaming_at", "stream_closed_at", "processing_at", "done_at", "reconciled_at",
                  "failed_at", "cancelled_at", "gladia_created_at", "heartbeat_at", "reconcile_after"):
        setattr(job, stamp, None)
    job.gladia_id = job.ws_url = job.worker_id = None
    job.bytes_sent = job.bytes_acked = job.attempts = job.reconnects = 0
    job.last_error = None
    lease = max(settings.stale_heartbeat_s, 2 * settings.sweep_interval_s)
    job.retry_at = now - timedelta(seconds=lease + 1) if sweeper_sends else None
    job.updated_at = now


def auto_rerun_incomplete(session: Session, job: Job, settings: Settings) -> bool:
    """Run again, once, a job Gladia ended with audio unsent (called as reconciliation fails it)."""
    if job.cancelled_at is not None or job.state != "failed":
        return False
    automatic = session.execute(select(JobSession.id).where(JobSession.job_id == job.id,
                                                            JobSession.replaced_by == "auto")).first()
    if automatic is not None:
        return False
    log.warning("job %s: session ended with audio unsent; running it again with a new session", job.id)
    rerun(session, job, trigger="auto", settings=settings)
    return True


def drop_replaced_results(session: Session, job: Job) -> int:
    """Delete the stored rows of the sessions this job replaced (its new one is reconciled). Returns sessions."""
    old = session.execute(select(JobSession).where(JobSession.job_id == job.id,
                                                   JobSession.results_deleted_at.is_(None))).scalars().all()
    for record in old:
        for model in RESULT_MODELS:
            session.execute(delete(model).where(model.gladia_id == record.gladia_id, model.job_id.is_(None)))
        record.results_deleted_at = utcnow()
    return len(old)


def retry(settings: Settings, *, job: Optional[str] = None, batch: Optional[str] = None, failed: bool = False,
          since: Optional[datetime] = None, dispatcher: Optional[Dispatcher] = None) -> ActionResult:
    """Run failed jobs again: one job (even a cancelled one), a batch's or every failed job (not cancelled ones)."""
    result = ActionResult()
    with session_scope(settings.database_url) as session:
        if job is not None:
            candidates = [_one_job(session, job)]
        elif batch is not None:
            candidates = [j for j in _batch_jobs(session, batch) if j.state == "failed"]
        elif failed:
            query = select(Job).where(Job.state == "failed").order_by(Job.created_at)
            if since is not None:
                query = query.where(Job.failed_at >= since)
            candidates = list(session.execute(query).scalars())
        else:
            raise ActionError("name a job, a batch or --failed")
        ids = [c.id for c in candidates]
        session.expunge_all()
    for job_id in ids:
        with session_scope(settings.database_url) as session:
            row = _locked(session, job_id)
            if row is None:
                continue
            if row.state != "failed":
                result.skipped.append(_brief(row, reason=f"not failed (it is {row.state})"))
                continue
            if row.cancelled_at is not None and job is None:
                result.skipped.append(_brief(row, reason="cancelled (retry it by its id)"))
                continue
            previous = row.gladia_id
            rerun(session, row, trigger="operator", settings=settings, sweeper_sends=dispatcher is None)
            result.done.append(_brief(row, retries=row.retries, previous_session=previous))
        slots.release_slot(settings.database_url, job_id)
    if dispatcher is not None:
        for item in result.done:
            try:
                dispatcher.stream(item["job_id"], resume=False)
            except Exception:  # noqa: BLE001 - the row is queued: the sweeper sends it after STALE_QUEUED_S
                log.warning("could not send job %s to the workers; the sweeper will", item["job_id"])
                item["sent"] = False
    if job is not None and result.skipped:
        raise ActionConflict(f"job {ids[0]} is {result.skipped[0]['state']}: only a failed job can be retried")
    return result


# ------------------------------------------------------------------ cancel

CANCELLABLE_STATES = ("queued",) + ACTIVE_STATES


def cancel(settings: Settings, *, job: Optional[str] = None, batch: Optional[str] = None,
           who: str = "operator") -> ActionResult:
    """Cancel a job, or every job of a batch that has not finished streaming."""
    result = ActionResult()
    with session_scope(settings.database_url) as session:
        if job is not None:
            ids = [_one_job(session, job).id]
        elif batch is not None:
            ids = [j.id for j in _batch_jobs(session, batch)]
        else:
            raise ActionError("name a job or a batch")
    to_stop: list[tuple[str, str, Optional[str], int]] = []
    for job_id in ids:
        now = utcnow()
        with session_scope(settings.database_url) as session:
            row = _locked(session, job_id)
            if row is None:
                continue
            if row.state not in CANCELLABLE_STATES:
                why = "already settled" if row.state in ("reconciled", "failed") else "its audio is all streamed"
                result.skipped.append(_brief(row, reason=f"{why} ({row.state})"))
                continue
            streaming = row.gladia_id is not None
            row.state = "failed"
            row.failed_at = row.cancelled_at = now
            row.last_error = f"cancelled by {who}"
            row.worker_id = None  # the worker streaming it (if any) drops its socket at its next heartbeat
            row.retry_at = None
            row.reconcile_after = now if streaming and (row.bytes_acked or 0) > 0 else None
            if streaming:
                to_stop.append((row.id, row.gladia_id, row.ws_url, row.bytes_acked or 0))
            result.done.append(_brief(row, session=row.gladia_id))
        slots.release_slot(settings.database_url, job_id)
    for job_id, gladia_id, url, acked in to_stop:
        outcome = _stop_session(settings, job_id, gladia_id, url, keep=acked > 0)
        for item in result.done:
            if item["job_id"] == job_id:
                item["gladia"] = outcome
    return result


def _stop_session(settings: Settings, job_id: str, gladia_id: str, url: Optional[str], *, keep: bool) -> str:
    """``stop_recording`` on the session's socket; delete it at Gladia unless it took audio. Says what it did."""
    from ..gladia.client import GladiaClient, GladiaError

    done = []
    if url:
        try:
            from websockets.sync.client import connect as connect_sync

            with connect_sync(url, open_timeout=5, close_timeout=5, proxy=None,
                              user_agent_header="webhook-service") as ws:
                ws.send(json.dumps({"type": "stop_recording"}))
            done.append("stop_recording sent")
        except Exception as exc:  # noqa: BLE001 - the session may be over already
            done.append(f"stop_recording not sent ({type(exc).__name__})")
    if keep:
        return ", ".join(done + ["session kept (it holds audio; reconciled for its partial results)"])
    client = GladiaClient.from_settings(settings)
    try:
        metadata = client.get_live(gladia_id).get("custom_metadata") or {}
        if not isinstance(metadata, dict) or metadata.get("job_id") != job_id:
            return ", ".join(done + ["session not deleted: Gladia does not list it as this job's"])
        deadline = time.monotonic() + DELETE_WAIT_S
        while True:
            try:
                client.delete_live(gladia_id)
                return ", ".join(done + ["session deleted at Gladia"])
            except GladiaError as exc:
                if exc.status != 403 or time.monotonic() >= deadline:
                    return ", ".join(done + [f"session not deleted ({exc})"])
                time.sleep(0.5)  # still finishing: Gladia deletes only an ended session
    except GladiaError as exc:
        return ", ".join(done + [f"session not deleted ({exc})"])
    finally:
        client.close()
