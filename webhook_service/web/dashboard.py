"""The dashboard: overview charts, the sessions list, and one page per session.

Server-rendered HTML (Jinja) with Chart.js for the charts, vendored under
``static/vendor`` so there is no front-end build step and nothing is fetched
from the internet. Pages read the same report queries as the CLI and the JSON
API (``webhook_service.reports``) plus one session's stored rows
(``webhook_service.jobs.session_detail``), so the dashboard never shows a
number that `webhook-service report` would not. Routes check their parameters
and render; the queries are the domain's, the Jinja filters are in :mod:`.display`.
"""

from __future__ import annotations

from typing import Any, Optional

from flask import Blueprint, g, redirect, render_template, request, url_for

from .. import reports
from ..jobs import queries as job_queries
from ..jobs.session_detail import session_rows
from ..models import JOB_STATES, Event, Job, ReconciliationRun
from ..transcripts import TRANSCRIPT_FORMATS, TranscriptUnavailable
from . import display
from .auth import admin_required, current_operator
from .context import db, settings
from .transcript_response import transcript_response

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/dashboard/static")

MAX_ID_LENGTH = 64  # job ids are UUIDs (36 characters), Gladia ids too
MAX_BATCH_LENGTH = 200  # a batch's name column

CHART_REPORTS = ("daily_usage", "latency", "callback_health")
TABLE_REPORTS = ("language_mix", "error_breakdown")

LIFECYCLE = (
    ("queued_at", "queued", "Job written, task sent"),
    ("starting_at", "starting", "A worker took the job"),
    ("gladia_created_at", "session created", "Gladia session created (POST /v2/live)"),
    ("streaming_at", "streaming", "WebSocket open, audio flowing"),
    ("stream_closed_at", "stream closed", "All audio acknowledged, socket closed"),
    ("processing_at", "processing", "Gladia: end_recording"),
    ("done_at", "done", "Gladia: end_session"),
    ("reconciled_at", "reconciled", "Checked against GET /v2/live/:id"),
    ("failed_at", "failed", "Failed"),
)


@bp.record_once
def _register_filters(state) -> None:
    display.register(state.app)


@bp.get("/")
def root():
    return redirect(url_for("dashboard.overview"))


@bp.get("/dashboard")
def overview():
    since, until, batch = (request.args.get(k) or None for k in ("since", "until", "batch"))
    url = settings().database_url
    error = None
    results: dict[str, Any] = {}
    try:
        for name in CHART_REPORTS + TABLE_REPORTS:
            results[name] = reports.run_report(url, name, since=since, until=until, batch=batch,
                                               refresh=not results)
    except reports.ReportError as exc:
        error = str(exc)
    batches = job_queries.batch_names(db())
    totals = _totals(results) if not error else {}
    page = render_template(
        "dashboard/overview.html", error=error, filters={"since": since, "until": until, "batch": batch},
        batches=batches, totals=totals, charts={name: results[name].rows for name in CHART_REPORTS
                                                if name in results},
        languages=results["language_mix"].rows if "language_mix" in results else [],
        errors=results["error_breakdown"].rows if "error_breakdown" in results else [],
    )
    return page, 400 if error else 200


def _hours_to_s(hours: Optional[float]) -> Optional[float]:
    return None if hours is None else hours * 3600


def _totals(results: dict[str, Any]) -> dict[str, Any]:
    """Headline figures over the selected days, summed from the daily rows."""
    usage = results["daily_usage"].rows
    health = results["callback_health"].rows

    def total(rows: list[dict[str, Any]], key: str) -> Optional[float]:
        values = [row[key] for row in rows if row[key] is not None]
        return sum(values) if values else None

    expected, missing = total(health, "expected_messages"), total(health, "missing_found")
    return {
        "sessions": total(usage, "sessions") or 0,
        "failed": total(usage, "failed_sessions") or 0,
        "audio_s": _hours_to_s(total(usage, "audio_hours")),
        "billed_s": _hours_to_s(total(usage, "billed_hours")),
        "speech_s": total(usage, "speech_s"),
        "errors": total(usage, "errors") or 0,
        "callbacks": total(health, "callbacks_received") or 0,
        "repaired": total(health, "repaired"),
        "completeness": (1 - missing / expected) if expected else None,
    }


@bp.get("/dashboard/sessions")
def sessions():
    reports.refresh_session_stats(settings().database_url)  # first: see session_page
    state = request.args.get("state") or None
    batch = request.args.get("batch") or None
    if state is not None and state not in JOB_STATES:
        return _error_page(400, f"Unknown state {state!r}. States: {', '.join(JOB_STATES)}.")
    size = reports.SESSION_PAGE_SIZE
    page = _page_number(request.args.get("page", "1"), last=reports.MAX_OFFSET // size)
    if page is None:
        return _error_page(400, f"The page number must be an integer between 1 and {reports.MAX_OFFSET // size}.")
    if batch and not _storable(batch, MAX_BATCH_LENGTH):
        return _error_page(400, f"A batch id or name has at most {MAX_BATCH_LENGTH} characters and no NUL.")
    batch_id = job_queries.find_batch_id(db(), batch) if batch else None
    if batch and batch_id is None:
        return _error_page(404, f"No batch with id or name {batch!r}.")
    rows, total = reports.list_sessions(db(), state=state, batch_id=batch_id, limit=size, offset=(page - 1) * size)
    counts = reports.state_counts(db(), batch_id)
    batches = job_queries.batch_names(db())
    return render_template("dashboard/sessions.html", rows=rows, total=total, counts=counts, state=state,
                           batch=batch, batches=batches, page=page, pages=max(1, -(-total // size)),
                           states=JOB_STATES)


def _page_number(raw: str, last: int) -> Optional[int]:
    """A page number in 1..last, or None."""
    if not raw.strip().isdecimal() or not raw.strip().isascii() or len(raw.strip()) > 12:
        return None
    page = int(raw)
    return page if 1 <= page <= last else None


def _storable(value: str, max_length: int) -> bool:
    """A value a stored id or name could be: not too long, no NUL (PostgreSQL refuses NUL in text)."""
    return len(value) <= max_length and "\x00" not in value


@bp.get("/dashboard/sessions/<session_id>")
def session_page(session_id: str):
    """One session by job id or Gladia id: summary, timeline, transcript, reconciliation."""
    # Refresh before the request session opens: on SQLite every transaction
    # takes the write lock, so the refresh would wait for the request's own.
    reports.refresh_session_stats(settings().database_url)
    if not _storable(session_id, MAX_ID_LENGTH):
        return _error_page(404, f"No session with job id or Gladia id {session_id[:MAX_ID_LENGTH]!r}.")
    try:
        job = job_queries.find_job(db(), session_id)
    except job_queries.AmbiguousReference as exc:
        return _error_page(404, str(exc))
    if job is None:
        return _error_page(404, f"No session with job id or Gladia id {session_id!r}.")
    summary = reports.session_summary_row(db(), job.id)
    stored = session_rows(db(), job)
    return render_template(
        "dashboard/session.html", job=job, batch=stored.batch, result=stored.result, summary=summary,
        timeline=_timeline(job, stored.events, stored.runs), truncated=stored.events_truncated,
        utterances=stored.utterances, runs=stored.runs, inbox=stored.inbox, formats=TRANSCRIPT_FORMATS,
        can_act=getattr(current_operator(), "scope", None) == "admin",  # retry, cancel and delete
    )


@bp.get("/dashboard/sessions/<session_id>/transcript.<fmt>")
def session_transcript(session_id: str, fmt: str):
    """The download buttons of the session page: the same files as the API's transcript route."""
    if fmt not in TRANSCRIPT_FORMATS:
        return _error_page(404, f"No transcript format {fmt[:20]!r}; formats: {', '.join(TRANSCRIPT_FORMATS)}.")
    if not _storable(session_id, MAX_ID_LENGTH):
        return _error_page(404, f"No session with job id or Gladia id {session_id[:MAX_ID_LENGTH]!r}.")
    try:
        return transcript_response(session_id, fmt, None)
    except (TranscriptUnavailable, LookupError) as exc:
        return _error_page(404, str(exc).rstrip(".") + ".")


@bp.get("/dashboard/sessions/<session_id>/delete")
@admin_required
def confirm_delete(session_id: str):
    """The confirmation page of a delete: what goes, and the button that does it (a CSRF-protected POST)."""
    from ..retention import describe

    if not _storable(session_id, MAX_ID_LENGTH):
        return _error_page(404, f"No session with job id or Gladia id {session_id[:MAX_ID_LENGTH]!r}.")
    try:
        found = describe(settings(), session_id)
    except LookupError as exc:
        return _error_page(404, str(exc))
    return render_template("dashboard/delete.html", found=found)


@bp.post("/dashboard/sessions/<session_id>/delete")
@admin_required
def delete_session(session_id: str):
    from ..retention import DeleteRefused, GladiaRefused, delete_session as erase

    if not _storable(session_id, MAX_ID_LENGTH):
        return _error_page(404, f"No session with job id or Gladia id {session_id[:MAX_ID_LENGTH]!r}.")
    try:
        erased = erase(settings(), session_id, actor=f"dashboard:{g.operator.name}")
    except GladiaRefused as exc:  # Gladia's answer, not this request's fault: as the API says it
        return _error_page(502, str(exc))
    except DeleteRefused as exc:
        return _error_page(409, str(exc))
    except LookupError as exc:
        return _error_page(404, str(exc))
    return redirect(url_for("dashboard.session_page", session_id=erased.job_id))


def _error_page(status: int, message: str):
    return render_template("dashboard/error.html", status=status, message=message), status


def _timeline(job: Job, events: list[Event], runs: list[ReconciliationRun]) -> list[dict[str, Any]]:
    """Job transitions, Gladia messages and reconciliation runs in one time order."""
    entries = _state_entries(job) + [_event_entry(ev) for ev in events] + [_run_entry(run) for run in runs]
    entries.sort(key=lambda e: e["at"])
    start = entries[0]["at"] if entries else None
    for entry in entries:
        entry["offset_s"] = (entry["at"] - start).total_seconds() if start else None
    return entries


def _state_entries(job: Job) -> list[dict[str, Any]]:
    entries = []
    for attr, label, meaning in LIFECYCLE:
        when = getattr(job, attr)
        if when is not None:
            entries.append({"at": when, "kind": "state", "label": label, "detail": meaning,
                            "css": "failed" if label == "failed" else "state"})
    return entries


def _event_entry(ev: Event) -> dict[str, Any]:
    delay = (ev.received_at - ev.created_at).total_seconds() if ev.created_at else None
    return {"at": ev.received_at, "kind": ev.source, "label": ev.type,
            "detail": f"via {ev.source}" + (f", {display.duration(delay)} after Gladia sent it"
                                            if delay is not None else ""),
            "css": ev.source}


def _run_entry(run: ReconciliationRun) -> dict[str, Any]:
    return {"at": run.started_at, "kind": "reconcile", "label": f"reconciliation: {run.outcome}",
            "detail": f"{run.expected} expected, {run.missing} missing, {run.repaired} repaired"
                      + (f" — {run.reason}" if run.reason else ""),
            "css": "failed" if run.outcome == "failed" else "reconcile"}
