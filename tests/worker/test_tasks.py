"""The Celery tasks' own contract (the streaming itself is tested against the emulator elsewhere)."""

from __future__ import annotations

import pytest

from webhook_service.jobs.streaming import Deferred
from webhook_service.worker import tasks
from webhook_service.worker.app import celery_init_app
from webhook_service.worker.tasks import stream_job


@pytest.mark.dbless
def test_a_stream_task_is_deferred_as_often_as_back_pressure_lasts(app, monkeypatch):
    # A backlog waits for session slots through many deferrals; Celery's default of 3 retries
    # would drop the task (and leave the job queued until the sweeper noticed).
    celery = celery_init_app(app)
    celery.conf.task_always_eager = True
    calls = []

    def run_job(_settings, job_id, dispatcher=None):
        calls.append(job_id)
        if len(calls) <= 10:
            raise Deferred("all 1 session slots are busy", 0.01)
        return "stream_closed"

    monkeypatch.setattr(tasks, "run_job", run_job)
    result = stream_job.apply(args=["job-1"])

    assert len(calls) == 11
    assert (result.state, result.result) == ("SUCCESS", "stream_closed")


@pytest.mark.dbless
def test_a_jobs_log_context_ends_with_it(caplog):
    # Worker threads run job after job: a line logged between two jobs must not name the last session.
    import logging

    from webhook_service.logging_setup import JobContextFilter, job_context, set_gladia_id

    logger = logging.getLogger("webhook_service.test_context")
    caplog.handler.addFilter(JobContextFilter())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("before")
        with job_context("job-1"):
            logger.info("inside, session not known yet")
            set_gladia_id("session-1")
            logger.info("inside")
        logger.info("after")
    before, unknown, inside, after = [(r.job_id, r.gladia_id) for r in caplog.records]
    assert (unknown, inside) == (("job-1", "-"), ("job-1", "session-1"))
    assert after == before
