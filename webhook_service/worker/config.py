"""Celery's configuration and the task names: all a process needs to send tasks.

Kept apart from the app (app.py), which binds Celery to Flask and the worker's
signals: a process that only sends tasks (the CLI's ``submit``, retry and re-run)
then imports neither Flask nor the streaming runtime.
"""

from __future__ import annotations

import os

from ..config import Settings
from ..jobs.slots import STANDBY_WAIT_S
from .fs_broker import register as _register_filesystem_broker

# Every process that talks to Celery imports this module: the embedded
# filesystem broker gets atomic message files before any connection opens.
_register_filesystem_broker()

# Gladia ends a live session after 3 hours; a streaming task must be allowed to outlive it a little,
# after waiting on standby for its slot.
SESSION_CAP_S = 3 * 3600
STREAM_SOFT_LIMIT_S = STANDBY_WAIT_S + SESSION_CAP_S + 10 * 60
STREAM_HARD_LIMIT_S = STANDBY_WAIT_S + SESSION_CAP_S + 20 * 60
# Task names: the tasks register under them, the dispatcher sends by them, the config routes by them.
STREAM_TASK = "webhook_service.stream_job"
RECONCILE_TASK = "webhook_service.reconcile"
INBOX_TASK = "webhook_service.process_inbox"
SWEEP_TASK = "webhook_service.sweep"
# A redelivered task must not reach a second worker while the first still streams.
VISIBILITY_TIMEOUT_S = SESSION_CAP_S + 60 * 60


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
        task_routes={STREAM_TASK: {"queue": "streams"}},
        beat_schedule={
            "sweep": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_s},
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
            # kombu polls the folder (1 s by default): a slot's wake-up must reach a worker in well under 250 ms.
            polling_interval=0.05,
        )
    config["broker_transport_options"] = transport
    return config
