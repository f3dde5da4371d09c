"""The API key goes to the configured API and nowhere else: no redirect is followed, no clear-text URL used.

Two real local servers: the "API" answers every request with a redirect to the
"elsewhere" server, which records whatever reaches it. ``requests`` would
follow those redirects and re-send ``x-gladia-key`` (it strips only
``Authorization`` across hosts); the client must not.
"""

from __future__ import annotations

import pytest
from flask import Flask, Response, request

from conftest import LiveServer
from webhook_service.gladia.client import GladiaClient, GladiaError, GladiaRedirect, RetryPolicy

pytestmark = pytest.mark.dbless
SECRET = "sk-redirect-test-0123456789abcdef"


class Recorder:
    """A server that records the requests it gets (headers included) and answers 200."""

    def __init__(self, name: str, redirect_to: str | None = None, status: int = 302):
        self.requests: list[dict] = []
        app = Flask(name)

        @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "DELETE"])
        @app.route("/<path:path>", methods=["GET", "POST", "DELETE"])
        def any_route(path):
            self.requests.append({"method": request.method, "path": "/" + path,
                                  "key": request.headers.get("x-gladia-key")})
            if redirect_to:
                return Response("", status=status, headers={"Location": redirect_to + "/" + path})
            return Response('{"id": "s1", "url": "wss://x", "items": [], "status": "done"}', status=200,
                            content_type="application/json")

        self.server = LiveServer(app).start()
        self.url = self.server.url


@pytest.fixture
def elsewhere():
    server = Recorder("elsewhere")
    yield server
    server.server.stop()


@pytest.fixture
def redirecting_api(elsewhere, request):
    server = Recorder("api", redirect_to=elsewhere.url, status=getattr(request, "param", 302))
    yield server
    server.server.stop()


CALLS = {
    "get_live": lambda c: c.get_live("s1"),
    "list_live": lambda c: c.list_live(custom_metadata={"job_id": "j1"}),
    "create_live": lambda c: c.create_live({"encoding": "wav/pcm"}),
    "delete_live": lambda c: c.delete_live("s1"),
    "get_file": lambda c: c.get_file("s1"),
}


# Every endpoint with a 302; every redirect status with a GET; the method-keeping ones with the POST.
CASES = [(302, call) for call in sorted(CALLS)] + [(status, "get_live") for status in (301, 303, 307, 308)] + [
    (307, "create_live"), (308, "create_live")]


@pytest.mark.parametrize("redirecting_api, call", CASES, indirect=["redirecting_api"])
def test_a_redirect_is_an_error_and_the_key_never_leaves(redirecting_api, elsewhere, call):
    client = GladiaClient(redirecting_api.url, SECRET, retry=RetryPolicy(max_attempts=3), sleep=lambda s: None)
    with pytest.raises(GladiaRedirect) as info:
        CALLS[call](client)
    assert info.value.status in (301, 302, 303, 307, 308)
    assert SECRET not in str(info.value)
    assert elsewhere.requests == []  # not followed: the other host never saw the request, nor the key
    assert len(redirecting_api.requests) == 1  # one attempt: a redirect is not retried
    assert redirecting_api.requests[0]["key"] == SECRET


def test_the_client_still_talks_to_a_plain_server(elsewhere):
    client = GladiaClient(elsewhere.url, SECRET)
    assert client.get_live("s1")["status"] == "done"
    assert elsewhere.requests[0]["key"] == SECRET


@pytest.mark.parametrize("url", ["http://api.gladia.io", "http://10.0.0.7:8765", "ftp://api.gladia.io", "api.gladia.io",
                                 "https://"])
def test_clear_text_api_urls_are_refused_at_construction(url):
    with pytest.raises(ValueError, match="https"):
        GladiaClient(url, SECRET)


@pytest.mark.parametrize("url", ["https://api.gladia.io", "http://127.0.0.1:8765", "http://localhost:8765",
                                 "http://[::1]:8765"])
def test_https_and_loopback_api_urls_are_accepted(url):
    assert GladiaClient(url, SECRET).api_url == url


def test_redirect_error_is_a_gladia_error():
    assert issubclass(GladiaRedirect, GladiaError)
