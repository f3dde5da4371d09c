"""The callback route answered straight from WSGI (``web.callbacks.CallbackRoute``) behaves as a route of the app.

Same status codes and JSON bodies as the other routes, the app's security
headers on every answer (stored, refused, failed), Flask's own answers for
what is not a POST to a callback URL, and nothing of it on the operator surface.
Over a real socket.
"""

from __future__ import annotations

import json
import logging

import pytest
import requests

from message_fixtures import GID, callback_body, transcript
from webhook_service.db import session_scope
from webhook_service.models import Job
from webhook_service.tokens import callback_token
from webhook_service.web.headers import SECURITY_HEADERS


@pytest.fixture
def job_path(settings) -> str:
    with session_scope(settings.database_url) as s:
        job = Job(source_path="/audio/a.wav", gladia_id=GID)
        job.advance("starting")
        job.advance("streaming")
        s.add(job)
        s.flush()
        job_id = job.id
    return "/callbacks/gladia/" + callback_token(job_id, settings.callback_signing_key)


def post(base: str, path: str, body, **kw) -> requests.Response:
    headers = kw.pop("headers", {"Content-Type": "application/json"})
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(base + path, data=data, headers=headers, timeout=30, **kw)


def assert_app_headers(response: requests.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json"
    assert int(response.headers["Content-Length"]) == len(response.content)


def test_every_answer_of_the_route_carries_the_app_headers(live_app, job_path):
    base = live_app.url
    stored = post(base, job_path, callback_body(transcript()))
    duplicate = post(base, job_path, callback_body(transcript()))
    unknown = post(base, "/callbacks/gladia/not-a-token", callback_body(transcript()))
    bad_json = post(base, job_path, b"{not json")
    bad_type = post(base, job_path, b"{}", headers={"Content-Type": "text/plain"})
    too_large = post(base, job_path, b" " * (2 * 1024 * 1024))
    answers = {"stored": stored, "duplicate": duplicate, "unknown": unknown, "bad_json": bad_json,
               "bad_type": bad_type, "too_large": too_large}
    assert {name: r.status_code for name, r in answers.items()} == {
        "stored": 200, "duplicate": 200, "unknown": 404, "bad_json": 400, "bad_type": 400, "too_large": 413}
    assert stored.json()["status"] == "stored" and duplicate.json()["status"] == "duplicate"
    assert stored.json()["inbox_id"] == duplicate.json()["inbox_id"]
    for name, response in answers.items():
        assert_app_headers(response)
        if response.status_code >= 400:
            assert response.json()["error"]["status"] == response.status_code, name


def test_an_unexpected_error_is_a_logged_json_500(live_app, job_path, monkeypatch, caplog):
    from webhook_service import ingest

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(ingest, "receive_callback", broken)
    with caplog.at_level(logging.ERROR, logger="webhook_service.web.callbacks"):
        response = post(live_app.url, job_path, callback_body(transcript()))
    assert response.status_code == 500
    assert response.json() == {"error": {"status": 500, "message": "internal server error"}}
    assert "boom" not in response.text and "Traceback" not in response.text
    assert_app_headers(response)
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


def test_other_requests_get_the_apps_own_answers(live_app, job_path):
    base = live_app.url
    get = requests.get(base + job_path, timeout=30)
    assert get.status_code == 405 and get.headers["Allow"].split(", ").count("POST") == 1
    assert get.json()["error"]["status"] == 405
    for path in ("/callbacks/gladia/", job_path + "/extra", "/callbacks/gladia"):
        response = post(base, path, callback_body(transcript()))
        assert response.status_code in (404, 405), path
        assert response.json()["error"]["status"] == response.status_code, path


def test_the_operator_surface_serves_no_callback(settings, job_path):
    from conftest import LiveServer
    from webhook_service.web import create_app

    server = LiveServer(create_app(settings, surface="operator", TESTING=True)).start()
    try:
        response = post(server.url, job_path, callback_body(transcript()))
    finally:
        server.stop()
    assert response.status_code == 404
    assert response.json()["error"]["status"] == 404
