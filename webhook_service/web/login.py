"""The dashboard's login and logout pages.

The login form takes an operator token (see `webhook-service token create`)
and turns it into a signed session cookie; behind an authenticating proxy the
proxy's identity logs the browser in without the form (see :mod:`.auth`).
Both forms carry a CSRF token: a login forced by another site, or a logout,
needs the page's own token.
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for

from ..auth import verify_token
from .auth import SESSION_KEY, browser_operator, check_credential, csrf, start_session

bp = Blueprint("login", __name__, template_folder="templates")


def _safe_next(raw: str | None) -> str:
    """A local path to go back to after the login, never another site."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return url_for("dashboard.overview")


@bp.route("/login", methods=["GET", "POST"])
def login():
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if browser_operator() is not None:
            return redirect(target)
        return render_template("dashboard/login.html", next=target, error=None)
    csrf.protect()
    operator = check_credential(verify_token, request.form.get("token", "").strip())
    if operator is None:
        return render_template("dashboard/login.html", next=target,
                               error="This token is unknown, expired or revoked."), 401
    start_session({"token_id": operator.token_id})
    return redirect(target, code=303)


@bp.post("/logout")
def logout():
    session.pop(SESSION_KEY, None)
    session.clear()
    return redirect(url_for("login.login"), code=303)
