"""Celery's implementation of :class:`webhook_service.jobs.dispatch.Dispatcher`.

Tasks are sent by name through the process's current Celery app, so sending
needs neither the task functions nor what they import.
"""

from __future__ import annotations

import logging

from celery import Celery, current_app

from ..config import Settings
from .config import RECONCILE_TASK, STREAM_TASK, celery_config

# Sends from a command-line process: retried briefly, so that a broker starting up is waited for.
_PATIENT = {"retry": True, "retry_policy": {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5}}


class CeleryDispatcher:
    """Sends the tasks through the Celery app of the running process.

    ``patient``: retry each send briefly (the CLI's submit); the sweeper sends
    once and leaves a failure to its next pass.
    """

    def __init__(self, *, patient: bool = False):
        self._send_options = _PATIENT if patient else {}

    def wake(self, job_id: str) -> None:
        # Through the default queue too: a freed slot must not wait behind a backlog of new streams.
        current_app.send_task(STREAM_TASK, args=[job_id], queue=current_app.conf.task_default_queue)

    def reconcile(self, job_id: str, trigger: str) -> None:
        current_app.send_task(RECONCILE_TASK, args=[job_id], kwargs={"trigger": trigger})

    def stream(self, job_id: str, resume: bool) -> None:
        options = dict(self._send_options)
        if resume:
            # Through the default queue, which carries only short tasks (reconcile, sweep), not
            # behind a backlog of new streams: Gladia keeps a disconnected session only for a
            # while, so a stream to resume must start within seconds.
            options["queue"] = current_app.conf.task_default_queue
        current_app.send_task(STREAM_TASK, args=[job_id], **options)


def dispatcher_for(settings: Settings) -> CeleryDispatcher:
    """A dispatcher for a process that is not a worker (the CLI): makes a Celery app of ``settings`` current first.

    Only sends tasks, so it needs no Flask app (whose imports would double `submit`'s start-up time).
    """
    if settings.celery_broker_url.startswith("filesystem"):
        # kombu warns that a folder broker has no host name, on every connection: noise for a CLI user.
        logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    settings.ensure_dirs()
    sender = Celery("webhook_service")
    sender.config_from_object(celery_config(settings))
    sender.set_default()
    return CeleryDispatcher(patient=True)
