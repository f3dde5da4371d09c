"""Retry and cancel as an operator calls them: the JSON API with a bearer token, the dashboard's confirmation
form with a login cookie and its CSRF token, over a real socket."""

from __future__ import annotations

from datetime import datetime, timezone

import requests
from sqlalchemy import select

from test_dashboard_login import csrf_of, login
from webhook_service.db import session_scope
from webhook_service.jobs.sweeper import sweep
from webhook_service.models import Batch, Job, JobSession


class Recorder:
    def __init__(self):
        self.streams: list[str] = []

    def stream(self, job_id: str, resume: bool) -> None:
        self.streams.append(job_id)

    def reconcile(self, job_id: str, trigger: str) -> None:
        pass


def add_jobs(url: str) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    with session_scope(url) as session:
        batch = Batch(name="calls")
        session.add(batch)
        session.flush()
        jobs = {
            "failed": Job(id="aaaaaaaa-0000-4000-8000-000000000001", batch_id=batch.id, source_path="/calls/f.wav",
                          state="failed", failed_at=now, gladia_id="g-failed", last_error="reconciliation: incomplete",
                          bytes_acked=3200, bytes_total=64000, session_config={"channels": 1}),
            "queued": Job(id="bbbbbbbb-0000-4000-8000-000000000002", batch_id=batch.id, source_path="/calls/q.wav",
                          state="queued", session_config={"channels": 1}),
            "done": Job(id="cccccccc-0000-4000-8000-000000000003", batch_id=batch.id, source_path="/calls/d.wav",
                        state="reconciled", gladia_id="g-done", session_config={"channels": 1}),
        }
        session.add_all(jobs.values())
    return {name: job.id for name, job in jobs.items()}


def state(url: str, job_id: str) -> Job:
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def test_api_actions_need_admin_and_answer_what_they_did(live_app, settings, operator_headers, read_token):
    ids = add_jobs(settings.database_url)
    base = live_app.url + "/api"
    # The 8-character id `status` shows; a read token may not act; no token is 401.
    assert requests.post(f"{base}/sessions/{ids['failed'][:8]}/retry").status_code == 401
    denied = requests.post(f"{base}/sessions/{ids['failed'][:8]}/retry",
                           headers={"Authorization": f"Bearer {read_token}"})
    assert denied.status_code == 403 and "admin" in denied.json()["error"]["message"]
    assert state(settings.database_url, ids["failed"]).state == "failed"

    answer = requests.post(f"{base}/sessions/{ids['failed'][:8]}/retry", headers=operator_headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [d["job_id"] for d in body["done"]] == [ids["failed"]] and body["done"][0]["previous_session"] == "g-failed"
    job = state(settings.database_url, ids["failed"])
    assert job.state == "queued" and job.gladia_id is None and job.retries == 1
    # The web holds no broker: the next sweep sends it to the workers.
    recorder = Recorder()
    sweep(settings, dispatcher=recorder)
    assert ids["failed"] in recorder.streams
    detail = requests.get(f"{base}/sessions/{ids['failed']}", headers=operator_headers).json()
    assert detail["job"]["retries"] == 1 and detail["previous_sessions"][0]["gladia_id"] == "g-failed"

    # Not failed: 409 with the reason; unknown: 404; nothing changed.
    conflict = requests.post(f"{base}/sessions/{ids['done']}/retry", headers=operator_headers)
    assert conflict.status_code == 409 and "only a failed job" in conflict.json()["error"]["message"]
    assert requests.post(f"{base}/sessions/dddddddd-nope/retry", headers=operator_headers).status_code == 404
    assert requests.post(f"{base}/batches/no-such/cancel", headers=operator_headers).status_code == 404
    assert requests.get(f"{base}/sessions/{ids['done']}/retry", headers=operator_headers).status_code == 405

    # A batch: queued jobs are cancelled, the settled one is skipped with its reason.
    answer = requests.post(f"{base}/batches/calls/cancel", headers=operator_headers).json()
    assert sorted(d["job_id"] for d in answer["done"]) == sorted([ids["queued"], ids["failed"]])
    assert [s["job_id"] for s in answer["skipped"]] == [ids["done"]] and "settled" in answer["skipped"][0]["reason"]
    job = state(settings.database_url, ids["queued"])
    assert job.state == "failed" and job.cancelled_at is not None and "test-admin" in job.last_error
    answer = requests.post(f"{base}/batches/calls/retry", headers=operator_headers).json()
    assert answer["done"] == [] and all("cancelled" in s["reason"] or "not failed" in s["reason"]
                                        for s in answer["skipped"])


def test_dashboard_actions_confirm_first_and_need_the_csrf_token(live_app, settings, admin_token, read_token):
    ids = add_jobs(settings.database_url)
    admin = requests.Session()
    login(admin, live_app.url, admin_token)
    page = admin.get(f"{live_app.url}/dashboard/sessions/{ids['failed']}")
    assert page.status_code == 200 and 'id="action-retry"' in page.text and 'id="action-cancel"' not in page.text
    confirm_url = f"{live_app.url}/dashboard/sessions/{ids['failed']}/retry"
    confirm = admin.get(confirm_url)
    assert confirm.status_code == 200 and "Run this job again?" in confirm.text
    assert state(settings.database_url, ids["failed"]).state == "failed"  # looking at the page changes nothing

    assert admin.post(confirm_url, allow_redirects=False).status_code == 400  # no CSRF token
    assert admin.post(confirm_url, data={"csrf_token": "forged"}, allow_redirects=False).status_code == 400
    assert state(settings.database_url, ids["failed"]).state == "failed"
    done = admin.post(confirm_url, data={"csrf_token": csrf_of(confirm.text)}, allow_redirects=False)
    assert done.status_code == 303 and done.headers["Location"].endswith(f"/dashboard/sessions/{ids['failed']}")
    after = admin.get(live_app.url + done.headers["Location"])
    assert 'id="flash-notice"' in after.text and "new Gladia session" in after.text
    assert state(settings.database_url, ids["failed"]).state == "queued"
    with session_scope(settings.database_url) as session:
        assert session.scalars(select(JobSession.gladia_id)).all() == ["g-failed"]

    # A read operator cannot even see the confirmation.
    reader = requests.Session()
    login(reader, live_app.url, read_token)
    assert 'id="action-cancel"' not in reader.get(f"{live_app.url}/dashboard/sessions/{ids['queued']}").text
    assert 'id="action-cancel"' in admin.get(f"{live_app.url}/dashboard/sessions/{ids['queued']}").text
    assert reader.get(f"{live_app.url}/dashboard/sessions/{ids['queued']}/cancel").status_code == 403
    cancel_page = admin.get(f"{live_app.url}/dashboard/sessions/{ids['queued']}/cancel")
    assert "Cancel this job?" in cancel_page.text
    admin.post(f"{live_app.url}/dashboard/sessions/{ids['queued']}/cancel",
               data={"csrf_token": csrf_of(cancel_page.text)})
    assert state(settings.database_url, ids["queued"]).cancelled_at is not None
    assert admin.get(f"{live_app.url}/dashboard/sessions/nope0000/retry").status_code == 404
