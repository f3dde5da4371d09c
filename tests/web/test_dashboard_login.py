"""The dashboard's login: token form, signed cookie, CSRF, logout, and the authenticating proxy's header.

A real browser's view of it, over a real socket with ``requests.Session``
keeping the cookies; the headless-Chromium tests log in the same way.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import requests

from conftest import LiveServer, make_operator_token
from test_auth_matrix import build_app
from webhook_service.db import session_scope
from webhook_service.models import OperatorToken, utcnow

PROXY_HEADER = "X-Forwarded-User"


@pytest.fixture
def serve(settings):
    """``serve(**setting_overrides)`` -> a LiveServer of the app (with the test-only routes)."""
    started = []

    def start(**overrides):
        server = LiveServer(build_app(replace(settings, **overrides))).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(browser: requests.Session, base: str, token: str, next_path: str = "/dashboard") -> requests.Response:
    page = browser.get(f"{base}/login", params={"next": next_path})
    assert page.status_code == 200
    return browser.post(f"{base}/login", data={"token": token, "next": next_path, "csrf_token": csrf_of(page.text)},
                        allow_redirects=False)


def set_cookie_header(response: requests.Response) -> str:
    header = response.headers.get("Set-Cookie", "")
    assert header.startswith("webhook_service_session="), header
    return header


def test_login_sets_a_hardened_cookie_and_opens_the_dashboard(serve, read_token):
    server = serve()
    browser = requests.Session()
    first = browser.get(server.url + "/dashboard/sessions?state=done", allow_redirects=False)
    assert first.status_code == 302
    assert first.headers["Location"].endswith("/login?next=/dashboard/sessions?state%3Ddone")

    answer = login(browser, server.url, read_token, "/dashboard/sessions?state=done")
    assert answer.status_code == 303 and answer.headers["Location"] == "/dashboard/sessions?state=done"
    cookie = set_cookie_header(answer)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # plain http here
    assert "Expires=" in cookie
    page = browser.get(server.url + "/dashboard/sessions")
    assert page.status_code == 200 and "Sign out" in page.text and "test-read" in page.text
    # The cookie is for the browser pages only: the API and /metrics want a bearer token.
    assert browser.get(server.url + "/api/sessions").status_code == 401
    assert browser.get(server.url + "/metrics").status_code == 401


def test_a_bad_token_or_a_missing_csrf_token_logs_nobody_in(serve, read_token):
    server = serve()
    browser = requests.Session()
    bad = login(browser, server.url, "wso_not-a-token")
    assert bad.status_code == 401 and "unknown, expired or revoked" in bad.text
    assert browser.get(server.url + "/dashboard", allow_redirects=False).status_code == 302

    forged = requests.post(server.url + "/login", data={"token": read_token}, allow_redirects=False)
    assert forged.status_code == 400 and "CSRF" in forged.json()["error"]["message"]
    assert "Set-Cookie" not in forged.headers


def test_next_never_leads_to_another_site(serve, read_token):
    server = serve()
    for target in ("//evil.example/x", "https://evil.example/", "\\\\evil.example"):
        answer = login(requests.Session(), server.url, read_token, target)
        assert answer.status_code == 303 and answer.headers["Location"] == "/dashboard", target


def test_state_changing_forms_need_the_csrf_token_and_the_scope(serve, read_token, admin_token):
    server = serve()
    reader = requests.Session()
    login(reader, server.url, read_token)
    page = reader.get(server.url + "/dashboard")
    token = csrf_of(page.text)
    assert reader.post(server.url + "/dashboard/_test/note", allow_redirects=False).status_code == 400
    assert reader.post(server.url + "/dashboard/_test/note", data={"csrf_token": "forged"}).status_code == 400
    assert reader.post(server.url + "/dashboard/_test/note", data={"csrf_token": token}).json() == {"noted": True}
    # A read operator may not take an admin action, CSRF token or not.
    assert reader.post(server.url + "/dashboard/_test/retry", data={"csrf_token": token}).status_code == 403

    admin = requests.Session()
    login(admin, server.url, admin_token)
    admin_csrf = csrf_of(admin.get(server.url + "/dashboard").text)
    assert admin.post(server.url + "/dashboard/_test/retry", data={"csrf_token": admin_csrf}).json() == {"done": True}
    # One session's CSRF token is no good in another's.
    assert admin.post(server.url + "/dashboard/_test/retry", data={"csrf_token": token}).status_code == 400


def test_logout_needs_the_csrf_token_and_ends_the_session(serve, read_token):
    server = serve()
    browser = requests.Session()
    login(browser, server.url, read_token)
    token = csrf_of(browser.get(server.url + "/dashboard").text)
    assert browser.post(server.url + "/logout", allow_redirects=False).status_code == 400
    assert browser.get(server.url + "/dashboard", allow_redirects=False).status_code == 200  # still logged in
    out = browser.post(server.url + "/logout", data={"csrf_token": token}, allow_redirects=False)
    assert out.status_code == 303 and out.headers["Location"] == "/login"
    assert browser.get(server.url + "/dashboard", allow_redirects=False).status_code == 302


def test_revoking_the_token_ends_its_dashboard_sessions(serve, settings, read_token):
    server = serve()
    browser = requests.Session()
    login(browser, server.url, read_token)
    assert browser.get(server.url + "/dashboard", allow_redirects=False).status_code == 200
    with session_scope(settings.database_url) as s:
        s.query(OperatorToken).filter_by(name="test-read").update({"revoked_at": utcnow()})
    assert browser.get(server.url + "/dashboard", allow_redirects=False).status_code == 302


def test_a_tampered_cookie_is_no_session(serve, read_token):
    server = serve()
    browser = requests.Session()
    login(browser, server.url, read_token)
    value = browser.cookies.get("webhook_service_session")

    def dashboard_with(cookie: str) -> int:
        return requests.get(server.url + "/dashboard", headers={"Cookie": f"webhook_service_session={cookie}"},
                            allow_redirects=False).status_code

    assert dashboard_with(value) == 200
    payload, _, rest = value.partition(".")
    tampered = payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + rest
    assert dashboard_with(tampered) == 302


def test_cookie_is_secure_on_https(settings, read_token):
    from webhook_service.web import create_app

    for conf, base_url in ((settings, "https://ops.example"),
                           (replace(settings, public_base_url="https://hooks.example"), "http://localhost")):
        client = create_app(conf, TESTING=True).test_client()
        page = client.get("/login", base_url=base_url)
        answer = client.post("/login", base_url=base_url, headers={"Referer": "https://ops.example/login"},
                             data={"token": read_token, "csrf_token": csrf_of(page.get_data(as_text=True))})
        assert answer.status_code == 303, answer.get_data(as_text=True)
        cookie = answer.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_the_trusted_proxy_identity_logs_the_browser_in(serve, admin_token):
    server = serve(trusted_proxy_auth_header=PROXY_HEADER, trusted_proxies="10.9.0.0/16, 127.0.0.1")
    browser = requests.Session()
    page = browser.get(server.url + "/dashboard/sessions", headers={PROXY_HEADER: "alice@example.com"},
                       allow_redirects=False)
    assert page.status_code == 200 and "alice@example.com" in page.text
    cookie = set_cookie_header(page)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # The session holds only while the proxy still vouches for the same person.
    assert browser.get(server.url + "/dashboard", headers={PROXY_HEADER: "alice@example.com"},
                       allow_redirects=False).status_code == 200
    assert browser.get(server.url + "/dashboard", allow_redirects=False).status_code == 302
    # Read scope by default (TRUSTED_PROXY_SCOPE): an admin action is refused.
    token = csrf_of(browser.get(server.url + "/dashboard", headers={PROXY_HEADER: "alice@example.com"}).text)
    refused = browser.post(server.url + "/dashboard/_test/retry", data={"csrf_token": token},
                           headers={PROXY_HEADER: "alice@example.com"})
    assert refused.status_code == 403
    # The header never replaces a bearer token on the API.
    assert requests.get(server.url + "/api/sessions", headers={PROXY_HEADER: "alice@example.com"}).status_code == 401


def test_the_proxy_header_from_an_untrusted_peer_is_ignored(serve):
    for overrides in ({"trusted_proxy_auth_header": PROXY_HEADER, "trusted_proxies": "10.9.0.0/16"},
                      {"trusted_proxy_auth_header": "", "trusted_proxies": "127.0.0.1"},
                      {"trusted_proxy_auth_header": PROXY_HEADER, "trusted_proxies": ""}):
        server = serve(**overrides)
        page = requests.get(server.url + "/dashboard", headers={PROXY_HEADER: "mallory"}, allow_redirects=False)
        assert page.status_code == 302, overrides
        assert "Set-Cookie" not in page.headers, overrides


def test_a_login_survives_a_rotation_of_the_signing_key_while_the_old_key_is_listed(serve, settings, read_token):
    old = settings.callback_signing_key
    new = "rotated-" + old
    browser = requests.Session()
    before = serve()
    assert login(browser, before.url, read_token).status_code == 303
    signed_with_old = browser.cookies.copy()

    def page_with_the_old_cookie(server: LiveServer) -> int:
        return requests.get(server.url + "/dashboard/sessions", cookies=signed_with_old.copy(),
                            allow_redirects=False).status_code

    assert page_with_the_old_cookie(before) == 200
    assert page_with_the_old_cookie(serve(callback_signing_key=new, callback_signing_keys_previous=(old,))) == 200
    assert page_with_the_old_cookie(serve(callback_signing_key=new, callback_signing_keys_previous=())) == 302
