"""Rotating CALLBACK_SIGNING_KEY: running sessions keep their callback URLs, new sessions get the new key.

A session's callback URL is fixed when the session is created; it may live up
to three hours. After a rotation (the old key moved to
``CALLBACK_SIGNING_KEYS_PREVIOUS``) its callbacks must still be accepted, over
a real socket, and a URL signed with a key that is not listed must not.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace

import pytest
import requests
from sqlalchemy import func, select

from conftest import LiveServer
from message_fixtures import GID, callback_body, transcript
from webhook_service.audio import synth_speechlike
from webhook_service.db import session_scope
from webhook_service.jobs import submit
from webhook_service.jobs.streaming import run_job
from webhook_service.models import InboxItem, Job
from webhook_service.tokens import callback_token, job_id_from_token

OLD_KEY = secrets.token_urlsafe(48)
NEW_KEY = secrets.token_urlsafe(48)
UNLISTED_KEY = secrets.token_urlsafe(48)


@pytest.fixture
def streaming_job(settings) -> str:
    with session_scope(settings.database_url) as s:
        job = Job(source_path="/audio/a.wav", gladia_id=GID, ws_url="wss://api.gladia.io/v2/live?token=test")
        job.advance("starting")
        job.advance("streaming")
        s.add(job)
    return job.id


@pytest.fixture
def rotated_receiver(settings):
    """The receiver after a rotation: NEW_KEY current, OLD_KEY previous, on a real port."""
    from webhook_service.web import create_app

    rotated = replace(settings, callback_signing_key=NEW_KEY, callback_signing_keys_previous=(OLD_KEY,))
    server = LiveServer(create_app(rotated, TESTING=True)).start()
    yield server
    server.stop()


def post_callback(server: LiveServer, job_id: str, key: str, uid: str) -> requests.Response:
    url = f"{server.url}/callbacks/gladia/{callback_token(job_id, key)}"
    body = callback_body(transcript(uid=uid, text=f" utterance {uid}"))
    return requests.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=10)


def inbox_count(settings) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count()).select_from(InboxItem))


def test_a_url_signed_with_the_previous_key_is_accepted_after_rotation(settings, streaming_job, rotated_receiver):
    old = post_callback(rotated_receiver, streaming_job, OLD_KEY, "00_00000001")
    assert old.status_code == 200, old.text
    assert old.json()["status"] == "stored"
    new = post_callback(rotated_receiver, streaming_job, NEW_KEY, "00_00000002")
    assert new.status_code == 200, new.text
    with session_scope(settings.database_url) as s:
        assert {row.job_id for row in s.scalars(select(InboxItem))} == {streaming_job}
    assert inbox_count(settings) == 2


def test_a_url_signed_with_an_unlisted_key_is_refused(settings, streaming_job, rotated_receiver):
    refused = post_callback(rotated_receiver, streaming_job, UNLISTED_KEY, "00_00000003")
    assert refused.status_code == 404
    assert refused.json()["error"]
    assert inbox_count(settings) == 0


def test_once_the_previous_key_is_dropped_its_urls_stop_working(settings, streaming_job):
    from webhook_service.web import create_app

    server = LiveServer(create_app(replace(settings, callback_signing_key=NEW_KEY), TESTING=True)).start()
    try:
        assert post_callback(server, streaming_job, OLD_KEY, "00_00000004").status_code == 404
    finally:
        server.stop()
    assert inbox_count(settings) == 0


def test_token_check_tries_every_key():
    token = callback_token("job-7", OLD_KEY)
    assert job_id_from_token(token, (NEW_KEY, OLD_KEY)) == "job-7"
    assert job_id_from_token(token, [OLD_KEY]) == "job-7"
    assert job_id_from_token(token, (NEW_KEY, UNLISTED_KEY)) is None
    assert job_id_from_token(token, ()) is None


def test_new_sessions_get_urls_signed_with_the_current_key(settings, emulator, tmp_path):
    rotated = replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key, stream_speed=0.0,
                      callback_signing_key=NEW_KEY, callback_signing_keys_previous=(OLD_KEY,))
    audio = synth_speechlike(tmp_path / "one.wav", 1.0)
    plans = submit.plan(rotated, [str(audio)], {})
    [job] = submit.record(rotated, plans, None, {}).jobs
    assert run_job(rotated, job["id"]) == "stream_closed"
    ledger = str(emulator.ledger())
    assert callback_token(job["id"], NEW_KEY) in ledger
    assert callback_token(job["id"], OLD_KEY) not in ledger
