"""Operator actions: run failed jobs again, cancel jobs (admin scope), as JSON API calls and dashboard forms.

``POST /api/sessions/<id>/retry|cancel`` and ``POST /api/batches/<batch>/retry|cancel``
take a bearer token of admin scope. The dashboard's buttons lead to a
confirmation page (``GET /dashboard/sessions/<id>/retry|cancel``) whose form
posts to the same URL with the page's CSRF token (checked by the gate, as for
every form of a cookie session). The rules are the domain's
(:mod:`webhook_service.jobs.redrive`): a re-run job is sent to the workers by
the next sweep (within SWEEP_INTERVAL_S), since the web process holds no
broker connection.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from ..jobs import redrive
from ..jobs import queries as job_queries
from .auth import admin_required, current_operator
from .context import db, json_error, settings

bp = Blueprint("actions", __name__, template_folder="templates")

MAX_REF_LENGTH = 200
ACTIONS = ("retry", "cancel")


def _who() -> str:
    operator = current_operator()
    return f"{operator.name} ({operator.via})" if operator is not None else "operator"


def _act(action: str, *, job: str | None = None, batch: str | None = None) -> redrive.ActionResult:
    if action == "retry":
        return redrive.retry(settings(), job=job, batch=batch)
    return redrive.cancel(settings(), job=job, batch=batch, who=_who())


def _checked(ref: str) -> bool:
    return 0 < len(ref) <= MAX_REF_LENGTH and "\x00" not in ref


def _api(action: str, *, job: str | None = None, batch: str | None = None):
    ref = job if job is not None else batch
    if not _checked(ref or ""):
        return json_error(404, f"no {'job' if job is not None else 'batch'} with this id")
    try:
        result = _act(action, job=job, batch=batch)
    except redrive.ActionError as exc:
        return json_error(409 if isinstance(exc, redrive.ActionConflict) else 404, str(exc))
    if job is not None and not result.done:
        return json_error(409, f"nothing to {action}: {result.skipped[0]['reason']}" if result.skipped
                          else f"nothing to {action}")
    return {"action": action, **result.as_dict()}


@bp.post("/api/sessions/<ref>/retry")
@admin_required
def api_retry_job(ref: str):
    return _api("retry", job=ref)


@bp.post("/api/sessions/<ref>/cancel")
@admin_required
def api_cancel_job(ref: str):
    return _api("cancel", job=ref)


@bp.post("/api/batches/<ref>/retry")
@admin_required
def api_retry_batch(ref: str):
    return _api("retry", batch=ref)


@bp.post("/api/batches/<ref>/cancel")
@admin_required
def api_cancel_batch(ref: str):
    return _api("cancel", batch=ref)


@bp.route("/dashboard/sessions/<session_id>/retry", methods=["GET", "POST"])
@admin_required
def confirm_retry(session_id: str):
    return _confirm(session_id, "retry")


@bp.route("/dashboard/sessions/<session_id>/cancel", methods=["GET", "POST"])
@admin_required
def confirm_cancel(session_id: str):
    return _confirm(session_id, "cancel")


def _confirm(ref: str, action: str):
    """GET: the confirmation page; POST (CSRF-checked by the gate): the action, then back to the session."""
    if not _checked(ref):
        return render_template("dashboard/error.html", status=404, message="No such job."), 404
    try:
        job = job_queries.find_job(db(), ref)
    except job_queries.AmbiguousReference as exc:
        return render_template("dashboard/error.html", status=404, message=str(exc)), 404
    if job is None:
        return render_template("dashboard/error.html", status=404, message=f"No job {ref!r}."), 404
    if request.method == "GET":
        return render_template("dashboard/confirm.html", job=job, action=action)
    job_id = job.id
    db().close()  # the action writes in transactions of its own (SQLite: one writer at a time)
    try:
        result = _act(action, job=job_id)
    except redrive.ActionError as exc:
        flash(str(exc), "error")
    else:
        if result.done:
            item = result.done[0]
            flash("Job queued again with a new Gladia session: the next sweep starts it." if action == "retry"
                  else f"Job cancelled{': ' + item['gladia'] if item.get('gladia') else ''}.", "notice")
        else:
            flash(f"Nothing to {action}: {result.skipped[0]['reason']}.", "error")
    return redirect(url_for("dashboard.session_page", session_id=job_id), code=303)
