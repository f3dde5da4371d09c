"""The REST client: real HTTP against a scripted server and against the emulator."""

from __future__ import annotations

import json
import logging
from collections import deque

import pytest
from flask import Flask, Response, request

from conftest import LiveServer, free_port
from webhook_service.gladia.client import (
    GladiaAuthError,
    GladiaBadRequest,
    GladiaClient,
    GladiaNotFound,
    GladiaRateLimited,
    GladiaUnavailable,
    RetryPolicy,
    parse_retry_after,
)
from webhook_service.gladia import session_config

pytestmark = pytest.mark.dbless
SECRET = "sk-very-secret-key-0123456789"


class Scripted:
    """An HTTP server answering each request with the next scripted (status, body, headers)."""

    def __init__(self):
        self.script: deque = deque()
        self.requests: list[dict] = []
        app = Flask("scripted")

        @app.route("/<path:path>", methods=["GET", "POST", "DELETE"])
        def any_route(path):
            self.requests.append({"method": request.method, "path": "/" + path, "args": request.args.to_dict(flat=False),
                                  "key": request.headers.get("x-gladia-key"), "json": request.get_json(silent=True)})
            status, body, headers = self.script.popleft() if self.script else (200, {}, {})
            return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")

        self.server = LiveServer(app).start()
        self.url = self.server.url


@pytest.fixture
def scripted():
    server = Scripted()
    yield server
    server.server.stop()


def client_for(url: str, delays: list[float], attempts: int = 4) -> GladiaClient:
    return GladiaClient(url, SECRET, retry=RetryPolicy(max_attempts=attempts), sleep=delays.append)


def test_retries_5xx_and_408_with_backoff_then_succeeds(scripted):
    scripted.script.extend([(503, {"message": "busy"}, {}), (408, {}, {}), (200, {"id": "s1", "status": "done"}, {})])
    delays: list[float] = []
    assert client_for(scripted.url, delays).get_live("s1")["status"] == "done"
    assert len(scripted.requests) == 3 and len(delays) == 2
    assert 0 < delays[0] <= 0.3 and 0 < delays[1] <= 0.6  # exponential with jitter
    assert all(r["key"] == SECRET for r in scripted.requests)


def test_retry_after_is_honoured(scripted):
    scripted.script.extend([(429, {"message": "slow down"}, {"Retry-After": "7"}), (200, {"items": [], "next": None}, {})])
    delays: list[float] = []
    client_for(scripted.url, delays).list_live(custom_metadata={"job_id": "j"})
    assert delays and delays[0] >= 7
    assert json.loads(scripted.requests[-1]["args"]["custom_metadata"][0]) == {"job_id": "j"}


def test_post_is_attempted_once_and_429_is_back_pressure(scripted):
    scripted.script.append((429, {"message": "too many live sessions"}, {"Retry-After": "3"}))
    delays: list[float] = []
    with pytest.raises(GladiaRateLimited) as exc:
        client_for(scripted.url, delays).create_live({})
    assert exc.value.retry_after == 3 and exc.value.status == 429
    assert len(scripted.requests) == 1 and delays == []


def test_clear_errors_and_no_retry_on_4xx(scripted):
    scripted.script.append((400, {"message": "bad", "request_id": "G-1", "statusCode": 400,
                                  "validation_errors": ['Field "sample_rate" must be one of ...']}, {}))
    with pytest.raises(GladiaBadRequest) as exc:
        client_for(scripted.url, []).create_live({"sample_rate": 1})
    assert "sample_rate" in str(exc.value) and "G-1" in str(exc.value)
    scripted.script.append((401, {"message": "gladia key not found"}, {}))
    with pytest.raises(GladiaAuthError):
        client_for(scripted.url, []).get_live("x")
    scripted.script.append((404, {"message": "not found"}, {}))
    with pytest.raises(GladiaNotFound):
        client_for(scripted.url, []).get_live("x")
    scripted.script.append((404, {"message": "not found"}, {}))
    assert client_for(scripted.url, []).delete_live("x") is False
    assert len(scripted.requests) == 4


def test_connection_errors_are_retried_then_reported_without_the_key(caplog):
    url = f"http://127.0.0.1:{free_port()}"
    delays: list[float] = []
    caplog.set_level(logging.DEBUG)
    client = client_for(url, delays, attempts=3)
    with pytest.raises(GladiaUnavailable) as exc:
        client.get_live("abc")
    assert len(delays) == 2
    assert SECRET not in str(exc.value) and SECRET not in caplog.text and SECRET not in repr(client)
    # What to fix: the URL, the reason in words, the setting.
    assert str(exc.value) == (f"GET /v2/live/abc: cannot reach {url} (connection refused); check GLADIA_API_URL "
                              "and that Gladia (or the emulator) is up")


def test_retry_after_parsing():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait


def test_against_the_emulator(emulator):
    client = GladiaClient(emulator.url, emulator.api_key)
    body = session_config.post_body(
        session_config.job_config({}, None, channels=1, sample_rate=16000, bit_depth=16),
        callback_url="http://127.0.0.1:1/callbacks/gladia/x", job_id="job-1", batch_id="batch-1")
    created = client.create_live(body)
    assert created["url"].startswith("ws://")
    got = client.get_live(created["id"])
    assert got["custom_metadata"] == {"job_id": "job-1", "batch_id": "batch-1"}
    listed = list(client.iter_live(custom_metadata={"job_id": "job-1"}))
    assert [s["id"] for s in listed] == [created["id"]]
    assert list(client.iter_live(custom_metadata={"job_id": "other"})) == []
    with pytest.raises(GladiaAuthError):
        GladiaClient(emulator.url, "wrong-key", retry=RetryPolicy(max_attempts=1)).get_live(created["id"])
    with pytest.raises(GladiaBadRequest):
        client.create_live({"sample_rate": 12345})
