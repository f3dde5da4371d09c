"""Celery app and tasks.

The broker only delivers work; the database holds every job's state, so each
task re-reads its row and is safe to run twice (redelivery after a killed
worker, the sweeper re-driving a job whose message was lost).

Bound to Flask as in Flask's ``examples/celery``: every task runs inside the
application context.
"""

from __future__ import annotations

import logging
import os
import socket

from celery import Celery, Task
from celery.signals import worker_process_init, worker_shutting_down
from flask import Flask, current_app

from .config import Settings
from .db import dispose_engines
from .fs_broker import register as _register_filesystem_broker

# Every process that talks to Celery imports this module: the embedded
# filesystem broker gets atomic message files before any connection opens.
_register_filesystem_broker()

log = logging.getLogger(__name__)

# Gladia ends a live session after 3 hours; a streaming task must be allowed to outlive it a little.
SESSION_CAP_S = 3 * 3600
STREAM_SOFT_LIMIT_S = SESSION_CAP_S + 10 * 60
STREAM_HARD_LIMIT_S = SESSION_CAP_S + 20 * 60
# A redelivered task must not reach a second worker while the first still streams.
VISIBILITY_TIMEOUT_S = SESSION_CAP_S + 60 * 60
# Bound on how many times one job is (re)started by redelivery or the sweeper.
MAX_JOB_ATTEMPTS = 5

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def celery_config(settings: Settings) -> dict:
    config = dict(
        broker_url=settings.celery_broker_url,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=STREAM_SOFT_LIMIT_S,
        task_time_limit=STREAM_HARD_LIMIT_S,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue="webhook_service",
        task_routes={"webhook_service.stream_job": {"queue": "streams"}},
        beat_schedule={
            "sweep": {"task": "webhook_service.sweep", "schedule": settings.sweep_interval_s},
        },
        beat_schedule_filename=os.path.join(settings.data_dir, "celerybeat-schedule"),
    )
    transport: dict = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    if settings.celery_broker_url.startswith("filesystem"):
        folder = str(settings.broker_dir / "in")
        transport.update(
            data_folder_in=folder,
            data_folder_out=folder,
            processed_folder=str(settings.broker_dir / "processed"),
            store_processed=False,
            control_folder=str(settings.broker_dir / "control"),
        )
    config["broker_transport_options"] = transport
    return config


def celery_init_app(app: Flask) -> Celery:
    settings: Settings = app.config["SETTINGS"]
    settings.ensure_dirs()

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_config(settings))
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


@worker_process_init.connect
def _reset_pools(**_kwargs) -> None:
    # Connections must not cross a fork.
    dispose_engines()


@worker_shutting_down.connect
def _hand_back_streams(**_kwargs) -> None:
    # A warm shutdown would otherwise wait for every stream to finish (up to 3 hours): drop the
    # sockets without ending the sessions and re-queue the jobs, which resume on another worker.
    import sys

    streamer = sys.modules.get("webhook_service.gladia.streamer")
    if streamer is not None:
        count = streamer.interrupt_all()
        if count:
            log.warning("worker shutting down: %d stream(s) handed back", count)


from celery import shared_task  # noqa: E402  (after the app helpers, as in Flask's example)


# max_retries=None on the task itself: Task.retry(max_retries=None) means "the task's default" (3),
# which would drop a job deferred a fourth time (a long backlog waiting for a session slot).
@shared_task(name="webhook_service.stream_job", bind=True, max_retries=None)
def stream_job(self, job_id: str) -> str:
    """Create (or find) the job's Gladia session and stream its audio.

    Safe to deliver twice: the run claims the job row first, and a second
    delivery finds it owned and returns. Back-pressure (no free concurrency
    slot, Gladia's 429) and transient outages re-queue the task with a delay,
    as often as needed; the job's own ``attempts`` counter, not Celery's,
    bounds real retries.
    """
    from .gladia.streamer import Deferred, run_job

    try:
        return run_job(_settings(), job_id)
    except Deferred as exc:
        log.info("job %s deferred %.0fs: %s", job_id, exc.countdown, exc)
        raise self.retry(countdown=exc.countdown) from None


@shared_task(name="webhook_service.process_inbox")
def process_inbox(inbox_id: int) -> None:
    """Normalize one stored callback (a retry of what the receiver could not do at once)."""
    from .ingest import process_inbox_item

    process_inbox_item(_settings(), inbox_id)


@shared_task(name="webhook_service.reconcile")
def reconcile(job_id: str, trigger: str = "task") -> None:
    """Check a session against GET /v2/live/:id and repair what callbacks missed.

    Safe to run twice (a redelivery, or the sweeper re-sending after its
    lease): a second run finds nothing missing. Failures are recorded by the
    reconciler itself as runs with outcome ``retry``, so nothing is raised
    back to Celery for it to retry on its own.
    """
    from .reconcile import JobNotFound, reconcile_job

    try:
        reconcile_job(_settings(), job_id, trigger=trigger)
    except JobNotFound:
        log.warning("reconcile: job %s no longer exists", job_id)


@shared_task(name="webhook_service.sweep")
def sweep() -> None:
    """Re-drive stale work from SQL state (periodic, from Celery beat)."""
    from .sweeper import sweep as run_sweep

    run_sweep(_settings())
