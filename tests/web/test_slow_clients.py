"""A slow client cannot starve the receiver (nginx in front of gunicorn, real sockets, the test database).

Measured before: 12 connections trickling bytes made 4 of 6 ``/healthz`` probes time out, because
each gunicorn thread reads a request until it is complete. Behind ``webhook-service proxy``, gunicorn
only ever sees whole requests, so trickling clients only cost nginx a few kilobytes each.
"""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import select

from message_fixtures import callback_body, transcript
from receiver_stack import ReceiverStack, Tricklers, signing_key
from webhook_service.db import session_scope
from webhook_service.models import InboxItem, Job
from webhook_service.tokens import callback_token

TRICKLE_S = 30.0
CALLBACK_EVERY_S = 2.5
ANSWER_BOUND_S = 5.0  # generous on purpose: the point is that the callback is not starved


@pytest.fixture
def stack(database_url, tmp_path):
    stack = ReceiverStack(database_url, tmp_path, key=signing_key()).start()
    yield stack
    stack.stop()


def streaming_job(url: str) -> tuple[str, str]:
    gladia_id = str(uuid.uuid4())
    with session_scope(url) as s:
        job = Job(source_path="/audio/slow.wav", gladia_id=gladia_id)
        job.advance("starting")
        job.advance("streaming")
        s.add(job)
        s.flush()
        return job.id, gladia_id


@pytest.mark.slow
def test_fifty_trickling_connections_do_not_starve_a_callback(db_url, stack):
    job_id, gladia_id = streaming_job(db_url)
    path = "/callbacks/gladia/" + callback_token(job_id, stack.key)
    tricklers = Tricklers(stack.port, path, count=50, interval_s=1.0).start()
    answers: list[tuple[int, dict, float]] = []
    try:
        time.sleep(CALLBACK_EVERY_S)  # every trickler connected and holding its connection
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < TRICKLE_S - CALLBACK_EVERY_S:
            body = callback_body(transcript(f"00_{n:08d}", text=f" callback {n}", gid=gladia_id), gladia_id)
            answers.append(stack.post(path, body, timeout_s=30))
            n += 1
            time.sleep(max(0.0, CALLBACK_EVERY_S - answers[-1][2]))
    finally:
        tricklers.stop()

    # The attack was real: 50 connections sent a byte a second the whole time.
    assert tricklers.bytes_sent >= 50 * (TRICKLE_S - 10), tricklers.bytes_sent
    assert len(answers) >= 10
    delays = [round(delay, 3) for _, _, delay in answers]
    assert [status for status, _, _ in answers] == [200] * len(answers), answers
    assert max(delays) < ANSWER_BOUND_S, delays
    with session_scope(db_url) as s:
        stored = set(s.scalars(select(InboxItem.id).where(InboxItem.job_id == job_id)))
    assert {body["inbox_id"] for _, body, _ in answers} <= stored
    assert len(stored) == len(answers)
