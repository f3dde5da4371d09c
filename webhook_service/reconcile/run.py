"""One reconciliation run of a job: fetch, decide (settle, wait, retry, give up), record.

A session still ``queued``/``processing`` is looked at again later with a
growing delay, up to ``RECONCILE_DEADLINE_S`` after the stream closed; a 404
or an error status fails the job; a ``done`` session is compared and
repaired (``compare``). Every outcome but a wait for callbacks in flight is
recorded as a ``reconciliation_runs`` row.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Optional

from ..config import Settings
from ..db import session_scope
from ..gladia.messages import parse_timestamp
from ..logging_setup import job_context
from ..metrics import RECONCILE_MISSING, RECONCILE_REPAIRED, RECONCILIATIONS
from ..models import Job, utcnow
from .compare import compare_and_repair, store_session_result
from .fetch import SessionFetcher, default_fetcher
from .records import JobNotFound, JobView, ReconcileResult, count_duplicates, load_job_view, record_run

log = logging.getLogger(__name__)


# Statuses of GET /v2/live/:id.
PENDING_STATUSES = ("queued", "processing")

# Longest wait between two looks at a session still processing.
MAX_RETRY_DELAY_S = 300.0


def retry_delay(settings: Settings, previous_retries: int) -> float:
    """Growing delay before the next look at a session still processing."""
    base = max(settings.reconcile_delay_s, 1.0)
    return min(base * (2 ** min(previous_retries, 16)), MAX_RETRY_DELAY_S)


def reconcile_job(
    settings: Settings,
    job_id: str,
    trigger: str = "task",
    *,
    fetch: Optional[SessionFetcher] = None,
    now: Optional[datetime] = None,
    settle: bool = True,
) -> ReconcileResult:
    """Reconcile one job's session; see the module docstring.

    ``trigger`` says who asked (end_session, webhook, stream_closed, sweep,
    cli) and is recorded. With ``settle``, a session that completed less
    than RECONCILE_DELAY_S ago is looked at again once that time has passed,
    without recording a run: callbacks still in flight then land first and
    are not counted as missing. ``fetch`` replaces the HTTP client;
    ``now`` fixes the clock. Raises :class:`JobNotFound` for an unknown job;
    every other problem is recorded as a run.
    """
    view = load_job_view(settings, job_id)
    with job_context(view.id, view.gladia_id):
        if _content_deleted(settings, view.id):
            # Erased on purpose (delete, retention): fetching the session again would bring it all back.
            _settle_without_session(settings, view.id)
            return ReconcileResult(view.id, view.gladia_id, "skipped", reason="content deleted")
        if not view.gladia_id:
            # No session was ever created: nothing at Gladia to compare with.
            # The sweeper re-drives such jobs through the worker instead.
            _settle_without_session(settings, view.id)
            log.info("job has no Gladia session yet; nothing to reconcile")
            return ReconcileResult(view.id, None, "skipped", reason="no Gladia session")
        started = now or utcnow()
        fetch = fetch or default_fetcher(settings)
        try:
            result = _run(settings, view, trigger, fetch, started, settle)
        except JobNotFound:
            raise
        except Exception as exc:  # a bug or a database outage: try again later, keep the reason
            log.exception("reconciliation crashed; will retry")
            result = _retry_or_deadline(settings, view, trigger, started, f"{type(exc).__name__}: {exc}"[:500])
        RECONCILIATIONS.labels(result.outcome).inc()
        if result.repaired:
            RECONCILE_REPAIRED.inc(result.repaired)
        if result.missing:
            RECONCILE_MISSING.inc(result.missing)
        log.info(
            "reconciliation %s: expected=%d received=%d missing=%d duplicates=%d mismatched=%d repaired=%d%s",
            result.outcome, result.expected, result.received, result.missing, result.duplicates,
            result.mismatched, result.repaired, f" ({result.reason})" if result.reason else "",
        )
        return result


def _content_deleted(settings: Settings, job_id: str) -> bool:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        return job is not None and job.content_deleted_at is not None


def _settle_without_session(settings: Settings, job_id: str) -> None:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.reconcile_after = None


def _run(settings: Settings, view: JobView, trigger: str, fetch: SessionFetcher,
         started: datetime, settle: bool) -> ReconcileResult:
    gladia_id = view.gladia_id
    assert gladia_id
    answer = fetch(gladia_id)

    if answer.status_code == 404:
        return _finish_failed(settings, view, trigger, started, "not_found: GET /v2/live/:id answered 404")
    if answer.status_code != 200 or not isinstance(answer.body, dict):
        reason = f"GET /v2/live/:id failed: {answer.error or answer.status_code or 'no answer'}"
        return _retry_or_deadline(settings, view, trigger, started, reason[:500])

    body = answer.body
    status = body.get("status")
    store_session_result(settings, view, body)
    if status in PENDING_STATUSES:
        return _retry_or_deadline(settings, view, trigger, started, f"session still {status}")
    if status == "error":
        code = body.get("error_code")
        return _finish_failed(settings, view, trigger, started, f"gladia_error: status error (error_code {code})")
    if status != "done":
        return _retry_or_deadline(settings, view, trigger, started, f"unexpected session status {status!r}")
    if not view.stream_finished and view.owned_by_live_worker:
        # The worker is still at it (resuming, or replacing a session it could not use).
        return _retry_or_deadline(settings, view, trigger, started,
                                  f"session done but the job's audio is not fully streamed ({view.stream_progress})")
    completed = parse_timestamp(body.get("completed_at"))
    settled_at = completed + timedelta(seconds=settings.reconcile_delay_s) if completed else None
    if settle and settled_at and started < settled_at:
        return _wait_for_settling(settings, view, settled_at)
    return compare_and_repair(settings, view, trigger, started, body)


def _wait_for_settling(settings: Settings, view: JobView, settled_at: datetime) -> ReconcileResult:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, view.id)
        if job is not None:
            job.reconcile_after = settled_at
    return ReconcileResult(view.id, view.gladia_id, "retry", reason="waiting for callbacks still in flight",
                           next_attempt_at=settled_at)


def _finish_failed(settings: Settings, view: JobView, trigger: str, started: datetime,
                   reason: str) -> ReconcileResult:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, view.id)
        duplicates = count_duplicates(session, view.gladia_id or "")
        if job is not None:
            if job.advance("failed"):
                job.last_error = f"reconciliation: {reason}"
            job.reconcile_after = None
        result = ReconcileResult(view.id, view.gladia_id, "failed", reason=reason, duplicates=duplicates)
        result.run_id = record_run(session, result, trigger, started)
    return result


def _retry_or_deadline(settings: Settings, view: JobView, trigger: str, started: datetime,
                       reason: str) -> ReconcileResult:
    """Schedule another look, or give up once the deadline has passed."""
    deadline_from = view.deadline_from or started
    if started - deadline_from >= timedelta(seconds=settings.reconcile_deadline_s):
        return _finish_failed(settings, view, trigger, started,
                              f"deadline: not settled {settings.reconcile_deadline_s:.0f} s after the stream "
                              f"closed ({reason})")
    delay = retry_delay(settings, view.previous_retries)
    next_at = started + timedelta(seconds=delay)
    with session_scope(settings.database_url) as session:
        job = session.get(Job, view.id)
        if job is not None:
            job.reconcile_after = next_at
        result = ReconcileResult(view.id, view.gladia_id, "retry", reason=reason,
                                 details={"retry_in_s": delay}, next_attempt_at=next_at)
        result.run_id = record_run(session, result, trigger, started)
    return result
