"""Deny by default: every route of the app, read from its URL map, against every kind of credential.

The routes are discovered, not listed, so a route added tomorrow is checked
too: it fails here unless it refuses an anonymous request, or is added to the
short public list below on purpose. Requests go over a real socket.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import requests
from flask import Blueprint, jsonify
from sqlalchemy import update

from conftest import LiveServer, make_operator_token
from webhook_service.db import session_scope
from webhook_service.models import OperatorToken, utcnow

# Who may call what without a credential: Gladia's two routes, the load balancer's probe, the
# dashboard's login page and the stylesheet it shows.
PUBLIC = {
    ("POST", "/callbacks/gladia/<token>"),
    ("POST", "/webhooks/gladia"),
    ("GET", "/healthz"),
    ("GET", "/healthz/probe"),  # answers only a challenge signed with the signing key (tests/cli/test_doctor.py)
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/dashboard/static/<path:filename>"),
}
CHECKED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# Test-only routes, so the admin and CSRF paths are exercised by real views (the next issue adds the
# real admin actions: DELETE /api/sessions/<id> and the dashboard's operator actions).
test_routes = Blueprint("test_routes", __name__)


def _admin_routes():
    from webhook_service.web.auth import admin_required

    @test_routes.delete("/api/_test/sessions/<session_id>")
    @admin_required
    def erase_session(session_id: str):
        return jsonify({"erased": session_id})

    @test_routes.post("/dashboard/_test/retry")
    @admin_required
    def dashboard_action():
        return jsonify({"done": True})

    @test_routes.post("/dashboard/_test/note")
    def dashboard_read_action():
        return jsonify({"noted": True})


_admin_routes()


def build_app(settings):
    from webhook_service.web import create_app

    app = create_app(settings, TESTING=True)
    app.register_blueprint(test_routes)
    return app


@pytest.fixture
def server(settings):
    live = LiveServer(build_app(settings)).start()
    yield live
    live.stop()


def routes(app) -> list[tuple[str, str, str]]:
    """(method, rule, a concrete URL) for every rule and method of the app."""
    found = []
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: "dashboard.css" if m.group(1) == "filename" else "x-1",
                     rule.rule)
        for method in sorted(rule.methods & set(CHECKED_METHODS)):
            found.append((method, rule.rule, url))
    return found


def operator_routes(app) -> list[tuple[str, str, str]]:
    return [(m, rule, url) for m, rule, url in routes(app) if (m, rule) not in PUBLIC]


def is_admin(app, rule: str, method: str) -> bool:
    for r in app.url_map.iter_rules():
        if r.rule == rule and method in r.methods:
            return getattr(app.view_functions[r.endpoint], "required_scope", "read") == "admin"
    raise AssertionError(rule)


@pytest.fixture
def credentials(settings) -> dict[str, str]:
    """One secret per kind of credential: good ones, and ones that must not work."""
    url = settings.database_url
    secrets = {
        "admin": make_operator_token(url, "matrix-admin", "admin"),
        "read": make_operator_token(url, "matrix-read", "read"),
        "expired": make_operator_token(url, "matrix-expired", "admin", expires_days=1),
        "revoked": make_operator_token(url, "matrix-revoked", "admin"),
    }
    with session_scope(url) as s:
        s.execute(update(OperatorToken).where(OperatorToken.name == "matrix-expired")
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
        s.execute(update(OperatorToken).where(OperatorToken.name == "matrix-revoked").values(revoked_at=utcnow()))
    return secrets


def call(server, method: str, url: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.request(method, server.url + url, headers=headers or {}, allow_redirects=False, timeout=30)


def assert_denied(response: requests.Response, url: str, label: str) -> None:
    """401 JSON for the API and /metrics (and any bad bearer token); a redirect to the login page elsewhere."""
    if response.status_code == 302:
        assert not url.startswith(("/api/", "/metrics")), label
        assert re.search(r"/login\?next=", response.headers["Location"]), label
        return
    assert response.status_code == 401, f"{label}: {response.status_code} {response.text[:200]}"
    assert response.json()["error"]["status"] == 401, label
    assert response.headers["WWW-Authenticate"].startswith("Bearer"), label


def test_the_public_routes_are_exactly_the_receiver_the_probe_and_the_login_page(settings):
    from webhook_service.web.auth import PUBLIC_ENDPOINTS

    app = build_app(settings)
    public = {(m, rule) for m, rule, _ in routes(app)} & PUBLIC
    assert public == PUBLIC  # every public route exists
    endpoints = {r.endpoint for r in app.url_map.iter_rules()
                 if any((m, r.rule) in PUBLIC for m in r.methods)}
    assert endpoints == set(PUBLIC_ENDPOINTS) == app.config["PUBLIC_ENDPOINTS"]


def test_no_operator_route_answers_an_anonymous_request(server, settings):
    app = build_app(settings)
    checked = operator_routes(app)
    assert len(checked) >= 12 and ("GET", "/api/sessions", "/api/sessions") in checked
    for method, rule, url in checked:
        assert_denied(call(server, method, url), url, f"anonymous {method} {rule}")


@pytest.mark.parametrize("kind", ["malformed", "unknown", "expired", "revoked"])
def test_a_bad_credential_is_401_on_every_operator_route(server, settings, credentials, kind):
    header = {
        "malformed": "Basic YWRtaW46YWRtaW4=",
        "unknown": "Bearer wso_" + "A" * 43,
        "expired": f"Bearer {credentials.get('expired')}",
        "revoked": f"Bearer {credentials.get('revoked')}",
    }[kind]
    for method, rule, url in operator_routes(build_app(settings)):
        response = call(server, method, url, {"Authorization": header})
        assert response.status_code == 401, f"{kind} {method} {rule}: {response.status_code}"
        assert response.json()["error"]["status"] == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_read_and_admin_tokens_on_every_operator_route(server, settings, credentials):
    app = build_app(settings)
    admin_routes = 0
    for method, rule, url in operator_routes(app):
        for scope in ("read", "admin"):
            response = call(server, method, url, {"Authorization": f"Bearer {credentials[scope]}"})
            label = f"{scope} {method} {rule}: {response.status_code} {response.text[:200]}"
            if scope == "read" and is_admin(app, rule, method):
                assert response.status_code == 403 and response.json()["error"]["status"] == 403, label
            else:
                # Authorized: the route itself answers (a 404 for the made-up ids, 400 for a made-up report).
                assert response.status_code not in (401, 403) and response.status_code < 500, label
        admin_routes += is_admin(app, rule, method)
    # the two test-only routes; retry/cancel of a job or batch (API) and their dashboard forms;
    # DELETE /api/sessions/<id>, the dashboard delete page and its POST
    assert admin_routes == 13
    ok = call(server, "GET", "/api/sessions", {"Authorization": f"Bearer {credentials['read']}"})
    assert ok.status_code == 200 and ok.json()["items"] == []
    metrics = call(server, "GET", "/metrics", {"Authorization": f"Bearer {credentials['read']}"})
    assert metrics.status_code == 200 and "webhook_callbacks_received_total" in metrics.text
    erased = call(server, "DELETE", "/api/_test/sessions/g-1", {"Authorization": f"Bearer {credentials['admin']}"})
    assert erased.status_code == 200 and erased.json() == {"erased": "g-1"}


def test_a_token_records_its_last_use(server, settings, credentials):
    call(server, "GET", "/api/sessions", {"Authorization": f"Bearer {credentials['read']}"})
    with session_scope(settings.database_url) as s:
        used = {t.name: t.last_used_at for t in s.query(OperatorToken)}
    assert used["matrix-read"] is not None and used["matrix-admin"] is None


def test_the_public_routes_need_no_operator_credential(server):
    assert call(server, "GET", "/healthz").status_code == 200
    assert call(server, "GET", "/login").status_code == 200
    assert call(server, "GET", "/dashboard/static/dashboard.css").status_code == 200
    # The receiver checks its own credential (the signed callback URL), not an operator's.
    assert call(server, "POST", "/callbacks/gladia/not-a-token").status_code not in (302, 401, 403)
    # An unknown URL stays a 404, with or without a credential.
    assert call(server, "GET", "/nowhere").status_code == 404
