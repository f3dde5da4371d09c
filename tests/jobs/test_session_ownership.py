"""The worker ends only sessions Gladia says are its job's: against the emulator, over real sockets.

A session id can reach a job's row without the worker having created it (a
row written by an older version from a forged ``start_session`` callback, or
by hand). Before any DELETE at Gladia the worker reads the session's
``custom_metadata`` and ends it only if it names the job.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from websockets.sync.client import connect

from webhook_service.audio import synth_speechlike
from webhook_service.config import Settings
from webhook_service.db import session_scope
from webhook_service.gladia.client import GladiaClient
from webhook_service.jobs import submit
from webhook_service.jobs.streaming import run_job
from webhook_service.models import Job


@pytest.fixture
def stream_settings(settings: Settings, emulator) -> Settings:
    return replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key, stream_speed=4.0,
                   heartbeat_interval_s=0.2, stale_heartbeat_s=2.0, reconcile_delay_s=5.0)


def finished_session(client: GladiaClient, emulator, metadata: dict) -> str:
    """A session that ended normally (Gladia lets such a session be deleted)."""
    created = client.create_live({"custom_metadata": metadata})
    with connect(created["url"], open_timeout=5, close_timeout=5, proxy=None) as ws:
        ws.send(json.dumps({"type": "stop_recording"}))
        for _ in ws:  # until Gladia closes the socket
            pass
    emulator.wait_session_done(created["id"], timeout=30)
    return created["id"]


def test_a_session_of_someone_else_on_the_jobs_row_is_never_deleted(stream_settings, emulator, tmp_path):
    """A forged start_session bound another session, and the worker then DELETEd it with the service's key."""
    client = GladiaClient(emulator.url, emulator.api_key)
    victim = finished_session(client, emulator, {"job_id": "another application's recording"})
    path = synth_speechlike(tmp_path / "a.wav", 1.0)
    plans = submit.plan(stream_settings, [str(path)], {})
    [job_id] = [job["id"] for job in submit.record(stream_settings, plans, None, {}).jobs]
    with session_scope(stream_settings.database_url) as s:
        s.get(Job, job_id).gladia_id = victim  # what the receiver used to bind, without a socket URL

    assert run_job(stream_settings, job_id) == "stream_closed"

    assert client.get_live(victim)["id"] == victim  # still there: its metadata does not name the job
    with session_scope(stream_settings.database_url) as s:
        assert s.get(Job, job_id).gladia_id not in (None, victim)


def test_a_session_that_names_the_job_is_still_ended(stream_settings, emulator, tmp_path):
    """The check does not stop the worker from ending its own job's unusable sessions."""
    path = synth_speechlike(tmp_path / "b.wav", 1.0)
    plans = submit.plan(stream_settings, [str(path)], {})
    [job_id] = [job["id"] for job in submit.record(stream_settings, plans, None, {}).jobs]
    client = GladiaClient(emulator.url, emulator.api_key)
    own = finished_session(client, emulator, {"job_id": job_id})
    with session_scope(stream_settings.database_url) as s:
        s.get(Job, job_id).gladia_id = own

    assert run_job(stream_settings, job_id) == "stream_closed"

    remaining = {item["id"] for item in client.list_live(custom_metadata={"job_id": job_id})["items"]}
    assert own not in remaining
