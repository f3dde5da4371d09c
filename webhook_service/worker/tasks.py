"""Celery tasks: thin wrappers that call the domain with the app's settings.

The broker only delivers work; the database holds every job's state, so each
task re-reads its row and is safe to run twice (redelivery after a killed
worker, the sweeper re-driving a job whose message was lost).
"""

from __future__ import annotations

import logging

from celery import shared_task

from ..ingest import process_inbox_item
from ..jobs.streaming import Deferred, run_job
from ..jobs.sweeper import sweep as run_sweep
from ..reconcile import JobNotFound, reconcile_job
from .app import current_settings
from .config import INBOX_TASK, RECONCILE_TASK, STREAM_TASK, SWEEP_TASK
from .dispatch import CeleryDispatcher

log = logging.getLogger(__name__)


# max_retries=None on the task itself: Task.retry(max_retries=None) means "the task's default" (3),
# which would drop a job deferred a fourth time (a long backlog waiting for a session slot).
@shared_task(name=STREAM_TASK, bind=True, max_retries=None)
def stream_job(self, job_id: str) -> str:
    """Create (or find) the job's Gladia session and stream its audio.

    Safe to deliver twice: the run claims the job row first, and a second
    delivery finds it owned and returns. Back-pressure (no free concurrency
    slot, Gladia's 429) and transient outages re-queue the task with a delay,
    as often as needed; the job's own ``attempts`` counter, not Celery's,
    bounds real retries. A run that ends frees its slot and wakes the next
    job waiting for one.
    """
    try:
        return run_job(current_settings(), job_id, dispatcher=CeleryDispatcher())
    except Deferred as exc:
        log.info("job %s deferred %.0fs: %s", job_id, exc.countdown, exc)
        raise self.retry(countdown=exc.countdown) from None


@shared_task(name=INBOX_TASK)
def process_inbox(inbox_id: int) -> None:
    """Normalize one stored callback (a retry of what the receiver could not do at once)."""
    process_inbox_item(current_settings(), inbox_id)


@shared_task(name=RECONCILE_TASK)
def reconcile(job_id: str, trigger: str = "task") -> None:
    """Check a session against GET /v2/live/:id and repair what callbacks missed.

    Safe to run twice (a redelivery, or the sweeper re-sending after its
    lease): a second run finds nothing missing. Failures are recorded by the
    reconciler itself as runs with outcome ``retry``, so nothing is raised
    back to Celery for it to retry on its own.
    """
    try:
        reconcile_job(current_settings(), job_id, trigger=trigger)
    except JobNotFound:
        log.warning("reconcile: job %s no longer exists", job_id)


@shared_task(name=SWEEP_TASK)
def sweep() -> None:
    """Re-drive stale work from SQL state (periodic, from Celery beat)."""
    run_sweep(current_settings(), dispatcher=CeleryDispatcher())
