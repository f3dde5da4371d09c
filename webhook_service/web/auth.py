"""The operator gate: every request needs an operator credential unless its endpoint is listed public.

Deny by default: a route added tomorrow is closed until someone adds its
endpoint to :data:`PUBLIC_ENDPOINTS` (``app.config["PUBLIC_ENDPOINTS"]``). Two credentials are accepted:

* ``Authorization: Bearer <token>`` on every route (scripts, Prometheus);
* the dashboard's session cookie (set by the login page, :mod:`.login`) on the
  browser routes only, i.e. not under ``/api`` nor ``/metrics``; a state-changing
  request authenticated by the cookie must carry a CSRF token (Flask-WTF), since a
  browser sends the cookie on its own and a bearer header never.

Without a credential, ``/api`` and ``/metrics`` answer 401 JSON (with
``WWW-Authenticate: Bearer``) and browser routes redirect to the login page. A
view marked :func:`admin_required` answers 403 to a ``read`` operator.

An authenticating proxy (oauth2-proxy) can vouch for the browser instead: its
identity header (``TRUSTED_PROXY_AUTH_HEADER``) counts only when the request's
peer address is one of ``TRUSTED_PROXIES``; anyone else sending that header is
ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import timedelta
from ipaddress import ip_address
from typing import Any, Callable, Optional

from flask import Flask, current_app, g, has_request_context, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

from ..auth import Operator, scope_allows, token_in_force, verify_token
from ..config import Settings
from ..db import session_scope
from .context import json_error, settings

log = logging.getLogger(__name__)

# The only endpoints anyone may reach: Gladia's two routes, the load balancer's probe, the login
# page and the stylesheet it needs.
PUBLIC_ENDPOINTS = frozenset({
    "callbacks.gladia_callback",
    "callbacks.gladia_webhook",
    "health.healthz",
    "health.probe",  # answers only a challenge signed with CALLBACK_SIGNING_KEY (`webhook-service doctor`)
    "login.login",
    "dashboard.static",
})
BEARER_ONLY_PREFIXES = ("/api/", "/metrics")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
SESSION_KEY = "operator"
SESSION_SECRET_LABEL = b"webhook_service operator session cookie v1"

csrf = CSRFProtect()


def admin_required(view: Callable) -> Callable:
    """Mark a view as an admin action: a ``read`` operator gets 403."""
    view.required_scope = "admin"  # type: ignore[attr-defined]
    return view


def current_operator() -> Optional[Operator]:
    return g.get("operator")


class OperatorSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked ``Secure`` on https requests as well as when configured so."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


def session_secret(signing_key: str) -> str:
    """The cookie's signing key, derived from a callback signing key under a label of its own.

    One secret to generate, guard and rotate; the label separates the two uses,
    so a cookie key can never sign a callback URL nor the reverse.
    """
    return hmac.new(signing_key.encode(), SESSION_SECRET_LABEL, hashlib.sha256).hexdigest()


def init_app(app: Flask, settings: Settings) -> None:
    """Session cookie, CSRF protection and the gate, before any blueprint's own hooks."""
    app.secret_key = session_secret(settings.callback_signing_key)
    app.session_interface = OperatorSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="webhook_service_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_base_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.operator_session_hours),
        # Logins signed before a rotation of CALLBACK_SIGNING_KEY stay valid while the old key is listed.
        SECRET_KEY_FALLBACKS=[session_secret(key) for key in settings.callback_signing_keys_previous],
        WTF_CSRF_CHECK_DEFAULT=False,  # the gate decides which requests need the token
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the login session
        PUBLIC_ENDPOINTS=PUBLIC_ENDPOINTS,
    )
    csrf.init_app(app)
    app.before_request(gate)


def gate() -> Any:
    """Let the request through with ``g.operator`` set, or answer 401/403 or redirect to the login page."""
    if request.routing_exception is not None or request.endpoint in current_app.config["PUBLIC_ENDPOINTS"]:
        return None  # 404/405 reveal no data; public endpoints check their own credential
    view = current_app.view_functions.get(request.endpoint or "")
    required = getattr(view, "required_scope", "read")
    bearer = _bearer_token()
    if bearer is not None:
        operator = check_credential(verify_token, bearer)
        if operator is None:
            return _unauthorized("the bearer token is unknown, expired or revoked", error="invalid_token")
    elif request.path.startswith(BEARER_ONLY_PREFIXES):
        return _unauthorized("an operator token is required: Authorization: Bearer <token>")
    else:
        operator = browser_operator()
        if operator is None:
            return redirect(url_for("login.login", next=request.full_path.rstrip("?")))
        if request.method not in SAFE_METHODS:
            csrf.protect()
    if not scope_allows(operator.scope, required):
        return json_error(403, f"this action needs an {required} token; {operator.name!r} is {operator.scope}")
    g.operator = operator
    return None


def check_credential(verify: Callable[..., Optional[Operator]], credential: Any) -> Optional[Operator]:
    """A credential checked in a transaction of its own, over before the view opens the request's.

    (On SQLite a transaction holds the database's write lock: one left open here
    would block the view's own writers.)
    """
    with session_scope(settings().database_url) as session:
        return verify(session, credential)


def _bearer_token() -> Optional[str]:
    """The bearer token of the request, '' for a malformed Authorization header, None without one."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _unauthorized(message: str, error: str | None = None):
    body, status = json_error(401, message)
    body.headers["WWW-Authenticate"] = "Bearer" + (f' error="{error}"' if error else "")
    return body, status


def browser_operator() -> Optional[Operator]:
    """The operator of a browser request: its login session, else a trusted proxy's identity."""
    held = session.get(SESSION_KEY)
    operator = None
    if isinstance(held, dict):
        if "token_id" in held:
            operator = check_credential(token_in_force, int(held["token_id"]))
        elif "proxy" in held and held["proxy"] == proxy_identity():
            operator = Operator(name=held["proxy"], scope=settings().trusted_proxy_scope, via="proxy")
    if operator is None:
        identity = proxy_identity()
        if identity is not None:
            start_session({"proxy": identity})
            operator = Operator(name=identity, scope=settings().trusted_proxy_scope, via="proxy")
        elif held is not None:
            session.pop(SESSION_KEY, None)
    return operator


def start_session(held: dict[str, Any]) -> None:
    """A fresh login session (nothing carried over from before the login)."""
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = held


def proxy_identity() -> Optional[str]:
    """The identity an authenticating proxy sent, when the header is configured and the peer trusted."""
    conf = settings()
    if not conf.trusted_proxy_auth_header:
        return None
    value = request.headers.get(conf.trusted_proxy_auth_header, "").strip()
    if not value:
        return None
    try:
        peer = ip_address(request.remote_addr or "")
    except ValueError:
        return None
    if not any(peer in network for network in conf.trusted_proxy_networks):
        log.warning("ignored %s from untrusted peer %s", conf.trusted_proxy_auth_header, peer)
        return None
    return value[:200]
