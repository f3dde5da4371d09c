"""Callback tokens never reach an access log: gunicorn's, nginx's, or the development server's.

The token in ``/callbacks/gladia/<token>`` is a write credential for a running session; before,
gunicorn's ``--access-logfile -`` wrote it on every callback.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from message_fixtures import callback_body, transcript
from receiver_stack import ReceiverStack, signing_key
from webhook_service.db import session_scope
from webhook_service.log_redaction import RedactCallbackTokens, redact_path
from webhook_service.models import Job
from webhook_service.tokens import callback_token

REDACTED_PATH = "/callbacks/gladia/<redacted>"


@pytest.mark.dbless
@pytest.mark.parametrize("line, expected", [
    ('"POST /callbacks/gladia/job-1.abcdef HTTP/1.1" 200', f'"POST {REDACTED_PATH} HTTP/1.1" 200'),
    ("POST //callbacks//gladia/job-1.abcdef?x=1 HTTP/1.1", "POST //callbacks//gladia/<redacted>?x=1 HTTP/1.1"),
    ("POST /CALLBACKS%2Fgladia%2fjob-1.abc HTTP/1.1", "POST /CALLBACKS%2Fgladia%2f<redacted> HTTP/1.1"),
    ("GET /api/sessions?limit=5 HTTP/1.1", "GET /api/sessions?limit=5 HTTP/1.1"),
])
def test_redact_path(line, expected):
    assert redact_path(line) == expected


@pytest.mark.dbless
def test_the_logging_filter_redacts_message_and_arguments():
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '%s "%s" %s',
                               ("127.0.0.1", "POST /callbacks/gladia/j.secret HTTP/1.1", "200"), None)
    RedactCallbackTokens().filter(record)
    assert record.getMessage() == f'127.0.0.1 "POST {REDACTED_PATH} HTTP/1.1" 200'


def streaming_job(url: str) -> tuple[str, str]:
    gladia_id = str(uuid.uuid4())
    with session_scope(url) as s:
        job = Job(source_path="/audio/logged.wav", gladia_id=gladia_id)
        job.advance("starting")
        job.advance("streaming")
        s.add(job)
        s.flush()
        return job.id, gladia_id


def post_callbacks(stack: ReceiverStack, job_id: str, gladia_id: str) -> list[str]:
    """A stored callback, a refused one (wrong token tag) and an oversized one; the tokens used."""
    token = callback_token(job_id, stack.key)
    wrong = callback_token(job_id, "another-key-" + "x" * 32)
    body = callback_body(transcript(text=" logged", gid=gladia_id), gladia_id)
    status, answer, _ = stack.post(f"/callbacks/gladia/{token}", body)
    assert status == 200 and answer["status"] == "stored", answer
    assert stack.post(f"/callbacks/gladia/{wrong}", body)[0] == 404
    too_large = dict(body, padding="x" * 2_000_000)
    assert stack.post(f"/callbacks/gladia/{token}", too_large)[0] == 413
    return [token, wrong, token.rpartition(".")[2], wrong.rpartition(".")[2]]


def assert_redacted(stack: ReceiverStack, tokens: list[str], access_logs: list[str]) -> None:
    logs = {name: stack.log(name) for name in ("web.out", "web.err", "proxy.out", "proxy.err")}
    for name, text in logs.items():
        for secret in tokens:
            assert secret not in text, f"{name} holds a callback token:\n{text}"
    for name in access_logs:
        assert REDACTED_PATH in logs[name], f"{name}:\n{logs[name]}"


def test_gunicorn_and_nginx_logs_never_hold_the_token(db_url, tmp_path: Path):
    stack = ReceiverStack(db_url, tmp_path, key=signing_key()).start()
    try:
        tokens = post_callbacks(stack, *streaming_job(db_url))
        # nginx logs all three (its own 413 too); gunicorn the two it was passed.
        assert stack.wait_log("proxy.out", REDACTED_PATH, 3) == 3, stack.log("proxy.out")
        assert stack.wait_log("web.out", REDACTED_PATH, 2) == 2, stack.log("web.out")
    finally:
        stack.stop()
    assert_redacted(stack, tokens, ["web.out", "proxy.out"])


def test_behind_the_proxy_the_receiver_can_leave_the_access_log_to_it(db_url, tmp_path: Path):
    """The Procfile's receiver runs `web --no-access-log`: one line per request, the proxy's."""
    procfile = (Path(__file__).parents[2] / "Procfile").read_text()
    assert "webhook-service web --surface receiver --no-access-log " in procfile
    stack = ReceiverStack(db_url, tmp_path, key=signing_key(), access_log=False).start()
    try:
        tokens = post_callbacks(stack, *streaming_job(db_url))
        assert stack.wait_log("proxy.out", REDACTED_PATH, 3) == 3, stack.log("proxy.out")
    finally:
        stack.stop()  # gunicorn has written every line it was going to
    assert "POST " not in stack.log("web.out") and "POST " not in stack.log("web.err"), stack.log("web.out")
    assert_redacted(stack, tokens, ["proxy.out"])


def test_with_log_format_json_the_proxy_writes_one_json_object_per_request(db_url, tmp_path: Path):
    stack = ReceiverStack(db_url, tmp_path, key=signing_key(), access_log=False)
    stack.env["LOG_FORMAT"] = "json"
    stack.start()
    try:
        tokens = post_callbacks(stack, *streaming_job(db_url))
        assert stack.wait_log("proxy.out", '"status":413', 1) == 1, stack.log("proxy.out")
    finally:
        stack.stop()
    lines = [json.loads(line) for line in stack.log("proxy.out").splitlines()]
    assert all(line["request"].startswith("GET /healthz ") for line in lines[:-3])  # the stack's start
    lines = lines[-3:]
    assert [(line["logger"], line["level"], line["status"]) for line in lines] == [
        ("nginx.access", "INFO", 200), ("nginx.access", "INFO", 404), ("nginx.access", "INFO", 413)]
    assert all(line["request"] == f"POST {REDACTED_PATH} HTTP/1.1" and REDACTED_PATH in line["message"]
               and line["time"] and line["worker"] for line in lines), lines
    # The receiver answered the first two; nginx refused the oversized body itself.
    assert [bool(line["upstream_time"]) for line in lines] == [True, True, False], lines
    assert float(lines[0]["upstream_time"]) <= lines[0]["request_time"] + 0.001
    assert_redacted(stack, tokens, ["proxy.out"])


def test_the_development_server_log_never_holds_the_token(db_url, tmp_path: Path):
    stack = ReceiverStack(db_url, tmp_path, key=signing_key(), proxy=False, dev=True).start()
    try:
        job_id, gladia_id = streaming_job(db_url)
        token = callback_token(job_id, stack.key)
        body = callback_body(transcript(text=" dev", gid=gladia_id), gladia_id)
        assert stack.post(f"/callbacks/gladia/{token}", body)[0] == 200
        assert stack.wait_log("web.err", REDACTED_PATH, 1) == 1
    finally:
        stack.stop()
    assert_redacted(stack, [token, token.rpartition(".")[2]], ["web.err"])


@pytest.mark.dbless
def test_gunicorns_error_log_is_redacted_too(tmp_path: Path):
    # gunicorn's worker logs "Error handling request <uri>" when the app raises.
    from gunicorn.config import Config

    from webhook_service.gunicorn_conf import RedactingLogger

    cfg = Config()
    cfg.set("errorlog", str(tmp_path / "error.log"))
    RedactingLogger(cfg).error("Error handling request %s", "/callbacks/gladia/job-1.0123456789abcdef")
    text = (tmp_path / "error.log").read_text()
    assert f"Error handling request {REDACTED_PATH}" in text and "0123456789abcdef" not in text
