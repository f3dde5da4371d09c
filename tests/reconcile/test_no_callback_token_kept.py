"""The callback token (a write credential) is neither stored from Gladia's answer nor shown by any surface.

Gladia's ``GET /v2/live/:id`` echoes the request in ``request_params``, with
``callback_config.url``: the job's secret callback URL. A real session is
streamed to the emulator with callbacks to the live receiver, reconciled over
HTTP, and then the stored answer, the JSON API, the dashboard and the CLI are
searched, as text, for the token. Rows stored before the fix still hold it:
those are written by hand and must not leak either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from webhook_service.audio import synth_speechlike
from webhook_service.db import session_scope
from webhook_service.jobs import submit
from webhook_service.jobs.streaming import run_job
from webhook_service.models import Job, SessionResult
from webhook_service.reconcile.run import reconcile_job
from webhook_service.tokens import callback_token

ROOT = Path(__file__).resolve().parent.parent.parent
WS_TOKEN = "4a39145c-2844-4557-8f34-34883f7be7d9"


def tag_of(token: str) -> str:
    return token.rpartition(".")[2]


@pytest.fixture
def reconciled(settings, emulator, live_app, tmp_path):
    """A job streamed, called back and reconciled against the emulator: (settings, job id, session id, token)."""
    run_settings = replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key,
                           public_base_url=live_app.url, stream_speed=0.0, reconcile_delay_s=0.0)
    audio = synth_speechlike(tmp_path / "call.wav", 2.0)
    [job] = submit.record(run_settings, submit.plan(run_settings, [str(audio)], {}), None, {}).jobs
    assert run_job(run_settings, job["id"]) == "stream_closed"
    with session_scope(settings.database_url) as s:
        gladia_id = s.get(Job, job["id"]).gladia_id
    emulator.wait_session_done(gladia_id, timeout=60)
    assert emulator.wait_callbacks(timeout=60)
    token = callback_token(job["id"], settings.callback_signing_key)
    # The emulator, like Gladia, does echo the secret URL: the test would prove nothing otherwise.
    echoed = requests.get(f"{emulator.url}/v2/live/{gladia_id}", headers={"x-gladia-key": emulator.api_key},
                          timeout=10).json()
    assert token in echoed["request_params"]["callback_config"]["url"]
    result = reconcile_job(run_settings, job["id"], "cli", settle=False)
    assert result.outcome == "reconciled", result
    return run_settings, job["id"], gladia_id, token


def test_the_stored_get_answer_keeps_no_callback_url(reconciled):
    run_settings, job_id, gladia_id, token = reconciled
    with session_scope(run_settings.database_url) as s:
        stored = s.get(SessionResult, gladia_id).gladia_response
    text = json.dumps(stored)
    assert tag_of(token) not in text and "/callbacks/gladia/" not in text
    callback_config = stored["request_params"]["callback_config"]
    assert "url" not in callback_config
    assert callback_config.get("receive_final_transcripts") is True  # the flags reconciliation reads are kept
    assert stored["result"]["transcription"] is not None  # the rest of the answer is kept


def test_the_api_and_the_dashboard_show_no_token_after_reconciliation(reconciled, live_app, operator_headers):
    _, job_id, gladia_id, token = reconciled
    for path in (f"/api/sessions/{gladia_id}", f"/api/sessions/{job_id}", "/api/sessions",
                 f"/dashboard/sessions/{gladia_id}"):
        response = requests.get(live_app.url + path, headers=operator_headers, timeout=10)
        assert response.status_code == 200, (path, response.status_code)
        assert tag_of(token) not in response.text, path
        assert "/callbacks/gladia/" not in response.text, path


def plant_leaky_rows(settings, job_id: str, gladia_id: str, token: str) -> None:
    """Rows as they were stored before the fix (and an error that quotes the URLs)."""
    url = f"https://hooks.example.com/callbacks/gladia/{token}"
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        job.session_config = {**job.session_config, "callback_config": {"url": url, "receive_final_transcripts": True}}
        job.last_error = f"POST /v2/live: 422 callback_config.url {url} refused; socket wss://x/v2/live?token={WS_TOKEN}"
        row = s.get(SessionResult, gladia_id)
        row.gladia_response = {**row.gladia_response,
                               "request_params": {"callback_config": {"url": url, "receive_final_transcripts": True}}}


def test_rows_stored_before_the_fix_do_not_leak(reconciled, live_app, operator_headers):
    run_settings, job_id, gladia_id, token = reconciled
    plant_leaky_rows(run_settings, job_id, gladia_id, token)
    for path in (f"/api/sessions/{gladia_id}", "/api/sessions", f"/dashboard/sessions/{gladia_id}"):
        response = requests.get(live_app.url + path, headers=operator_headers, timeout=10)
        assert response.status_code == 200, path
        for secret in (tag_of(token), WS_TOKEN):
            assert secret not in response.text, path
    detail = requests.get(f"{live_app.url}/api/sessions/{gladia_id}", headers=operator_headers, timeout=10).json()
    assert detail["job"]["session_config"]["callback_config"] == {"receive_final_transcripts": True}
    assert "/callbacks/gladia/<redacted>" in detail["job"]["last_error"]

    env = {**os.environ, "DATABASE_URL": run_settings.database_url, "DATA_DIR": run_settings.data_dir,
           "LOG_LEVEL": "WARNING"}
    status = subprocess.run([sys.executable, "-m", "webhook_service.cli", "status", job_id, "--json"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert tag_of(token) not in status.stdout and WS_TOKEN not in status.stdout
