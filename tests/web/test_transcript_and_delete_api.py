"""`GET /api/sessions/<id>/transcript.<fmt>`, `DELETE /api/sessions/<id>` and the session page's buttons, over a
real socket as an operator's script or browser calls them."""

from __future__ import annotations

import io
import re
from dataclasses import replace

import pytest
import requests
import srt
import webvtt
from sqlalchemy import func, select

from conftest import LiveServer
from sessions_fixture import A, B, C, load
from webhook_service.db import session_scope
from webhook_service.models import DeletionAudit, InboxItem, Job, Utterance
from webhook_service.web import create_app


@pytest.fixture
def site(settings, emulator):
    """The app on a real port over the fixtures; Gladia is an emulator that holds none of their sessions."""
    load(settings.database_url)
    app = create_app(replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key), TESTING=True)
    server = LiveServer(app).start()
    yield server.url
    server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_transcript_downloads_in_each_format(site, read_token):
    got = requests.get(f"{site}/api/sessions/{A[:8]}/transcript.srt", headers=bearer(read_token), timeout=10)
    assert got.status_code == 200
    assert got.headers["Content-Type"] == "application/x-subrip; charset=utf-8"
    assert got.headers["Content-Disposition"].startswith('attachment; filename="call.srt"')
    assert got.headers["Cache-Control"] == "no-store"
    cues = list(srt.parse(got.text))
    assert cues[0].index == 1 and cues[0].content.startswith("Channel 0: Good morning")
    vtt = requests.get(f"{site}/api/sessions/g-aaa/transcript.vtt?channel=1", headers=bearer(read_token), timeout=10)
    assert vtt.headers["Content-Type"] == "text/vtt; charset=utf-8"
    assert [c.text for c in webvtt.from_buffer(io.StringIO(vtt.text)).captions][0].startswith("Hello, I would")
    data = requests.get(f"{site}/api/sessions/{B}/transcript.json", headers=bearer(read_token), timeout=10).json()
    assert data["utterances"][0]["text"] == "Second call with the same file name"
    txt = requests.get(f"{site}/api/sessions/{B}/transcript.txt", headers=bearer(read_token), timeout=10)
    assert txt.text == "[00:00:01] Second call with the same file name\n"


BAD_TRANSCRIPT_REQUESTS = [
    (f"/api/sessions/{A}/transcript.docx", 400, "format must be one of txt, srt, vtt, json"),
    ("/api/sessions/no-such-job/transcript.srt", 404, "no session or job"),
    (f"/api/sessions/{A}/transcript.srt?channel=x", 400, "invalid channel 'x': must be an integer"),
    (f"/api/sessions/{A}/transcript.srt?channel=7", 404, "no utterance on channel 7"),
    (f"/api/sessions/{A}/transcript.srt?speaker=1", 400, "unknown parameter"),
]


def test_transcript_bad_input_is_a_json_4xx(site, read_token):
    for path, status, words in BAD_TRANSCRIPT_REQUESTS:
        got = requests.get(site + path, headers=bearer(read_token), timeout=10)
        assert got.status_code == status, path
        assert words in got.json()["error"]["message"], path
    assert requests.get(f"{site}/api/sessions/{A}/transcript.srt", timeout=10).status_code == 401


def count(settings, model, job_id) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count()).select_from(model).where(model.job_id == job_id))


def test_delete_needs_an_admin_token(site, settings, read_token):
    assert requests.delete(f"{site}/api/sessions/{A}", timeout=10).status_code == 401
    refused = requests.delete(f"{site}/api/sessions/{A}", headers=bearer(read_token), timeout=10)
    assert refused.status_code == 403 and "admin" in refused.json()["error"]["message"]
    assert count(settings, Utterance, A) == 4


def test_delete_erases_the_session_keeps_the_job_and_audits(site, settings, admin_token):
    unknown = requests.delete(f"{site}/api/sessions/no-such-job", headers=bearer(admin_token), timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["message"]
    # g-aaa is unknown to this Gladia: "already gone" counts as deleted there.
    got = requests.delete(f"{site}/api/sessions/g-aaa", headers=bearer(admin_token), timeout=10)
    assert got.status_code == 200, got.text
    deleted = got.json()["deleted"]
    assert deleted["job_id"] == A and deleted["gladia"] == "already gone (404)"
    assert deleted["rows"] == {"utterances": 4, "events": 1, "addon_results": 0, "callback_inbox": 1,
                               "session_results_blanked": 1, "reconciliation_runs_blanked": 0}
    assert count(settings, Utterance, A) == 0 and count(settings, InboxItem, A) == 0
    assert count(settings, Utterance, B) == 1  # nothing else
    with session_scope(settings.database_url) as s:
        job = s.get(Job, A)
        assert job.content_deleted_at is not None and job.gladia_deleted_at is not None
        assert job.audio_duration_s == 20.0 and job.source_path == "(deleted)"
        audit = s.scalars(select(DeletionAudit)).one()
        assert (audit.actor, audit.action, audit.job_id, audit.gladia_id) == ("token:test-admin", "delete", A, "g-aaa")
        assert audit.rows["utterances"] == 4
    detail = requests.get(f"{site}/api/sessions/{A}", headers=bearer(admin_token), timeout=10).json()
    assert detail["job"]["content_deleted_at"] and detail["job"]["gladia_deleted_at"]
    assert detail["utterances"] == [] and detail["result"]["full_transcript"] is None
    assert detail["result"]["billing_time_s"] == 40.0
    gone = requests.get(f"{site}/api/sessions/{A}/transcript.srt", headers=bearer(admin_token), timeout=10)
    assert gone.status_code == 410 and "was deleted" in gone.json()["error"]["message"]


def test_delete_refuses_a_streaming_job_and_a_gladia_refusal_erases_nothing(site, settings, admin_token, emulator):
    with session_scope(settings.database_url) as s:
        s.get(Job, C).state = "streaming"
    busy = requests.delete(f"{site}/api/sessions/{C}", headers=bearer(admin_token), timeout=10)
    assert busy.status_code == 409 and "cancel it first" in busy.json()["error"]["message"]
    # The emulator refuses this key: nothing is erased here, the answer says so.
    app = create_app(replace(settings, gladia_api_url=emulator.url, gladia_api_key="wrong-key"), TESTING=True)
    server = LiveServer(app).start()
    try:
        refused = requests.delete(f"{server.url}/api/sessions/{A}", headers=bearer(admin_token), timeout=30)
        # The dashboard's delete says the same: Gladia's refusal is a 502, as in the API, not a conflict.
        admin = requests.Session()
        login(admin, server.url, admin_token)
        confirm = admin.get(f"{server.url}/dashboard/sessions/{A}/delete", timeout=10)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', confirm.text).group(1)
        page = admin.post(f"{server.url}/dashboard/sessions/{A}/delete", data={"csrf_token": csrf}, timeout=30)
    finally:
        server.stop()
    assert refused.status_code == 502
    assert "nothing was deleted here" in refused.json()["error"]["message"]
    assert page.status_code == 502 and "nothing was deleted here" in page.text
    assert count(settings, Utterance, A) == 4


def login(browser: requests.Session, site: str, token: str) -> None:
    page = browser.get(f"{site}/login", timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert browser.post(f"{site}/login", data={"token": token, "next": "/dashboard", "csrf_token": csrf},
                        timeout=10).status_code in (200, 302)


def test_session_page_downloads_and_delete_with_confirmation(site, settings, admin_token, read_token):
    reader = requests.Session()
    login(reader, site, read_token)
    page = reader.get(f"{site}/dashboard/sessions/{A}", timeout=10).text
    assert f'/dashboard/sessions/{A}/transcript.srt' in page and 'id="delete-session"' not in page
    download = reader.get(f"{site}/dashboard/sessions/{A}/transcript.srt", timeout=10)
    assert download.status_code == 200 and list(srt.parse(download.text))[0].index == 1
    assert reader.get(f"{site}/dashboard/sessions/{A}/delete", timeout=10).status_code == 403

    admin = requests.Session()
    login(admin, site, admin_token)
    assert 'id="delete-session"' in admin.get(f"{site}/dashboard/sessions/{A}", timeout=10).text
    confirm = admin.get(f"{site}/dashboard/sessions/{A}/delete", timeout=10)
    assert confirm.status_code == 200 and "4 utterance(s)" in confirm.text
    no_csrf = admin.post(f"{site}/dashboard/sessions/{A}/delete", timeout=10)
    assert no_csrf.status_code == 400 and count(settings, Utterance, A) == 4
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', confirm.text).group(1)
    done = admin.post(f"{site}/dashboard/sessions/{A}/delete", data={"csrf_token": csrf}, timeout=10)
    assert done.status_code == 200 and 'id="content-deleted"' in done.text
    assert count(settings, Utterance, A) == 0
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(DeletionAudit.actor)).one() == "dashboard:test-admin"
