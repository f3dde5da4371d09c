"""Reconciliation: check what callbacks delivered against Gladia's own record.

Gladia documents no retries for live callbacks, so a callback can be lost for
good. ``GET /v2/live/:id`` is the reference: once a session is ``done`` its
``result.messages`` holds every message of the session and
``result.transcription.utterances`` the final transcript. For each session the
reconciler

1. fetches that result (retrying 429, 5xx, timeouts; a session still
   ``queued``/``processing`` is looked at again later with a growing delay,
   up to ``RECONCILE_DEADLINE_S`` after the stream closed);
2. stores it whole in ``session_results``;
3. compares the messages the session's ``callback_config`` asked for with
   the events stored, and backfills every missing one through the receiver's
   own normalization (``ingest.normalize_message``, source ``reconcile``), so a
   repaired message is stored exactly as if its callback had arrived;
4. compares the final utterances with the stored ones and repairs any that
   are missing or differ (text, start, end, channel) through the receiver's
   own utterance upsert (``ingest.repair_utterance``);
5. records a ``reconciliation_runs`` row and settles the job: ``reconciled``,
   or ``failed`` with the reason (404, error status, deadline).

Everything is keyed on natural keys (message key, utterance id), so a second
run finds nothing missing and changes nothing: it records a run with
``missing=0`` and ``repaired=0``.

HTTP calls are made outside any database transaction: SQLite allows one
writer at a time and the receiver must never wait behind a slow GET.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Iterable, Optional, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .config import Settings
from .db import is_postgres, session_scope
from .gladia.messages import flag_for, parse_timestamp
from .gladia.keys import message_key
from .gladia.session_config import GLADIA_CALLBACK_DEFAULTS
from .gladia.validation import InvalidMessage
from .ingest import normalize_message, repair_utterance
from .logging_setup import job_context
from .metrics import RECONCILE_REPAIRED, RECONCILIATIONS
from .models import ENDED_STATES, Event, InboxItem, Job, ReconciliationRun, SessionResult, Utterance, utcnow

log = logging.getLogger(__name__)

# A flag absent from the session's callback_config takes Gladia's documented default.
CALLBACK_DEFAULTS: dict[str, bool] = GLADIA_CALLBACK_DEFAULTS

# Statuses of GET /v2/live/:id.
PENDING_STATUSES = ("queued", "processing")
# Longest wait between two looks at a session still processing.
MAX_RETRY_DELAY_S = 300.0
# How many messages are backfilled per transaction (keeps SQLite write locks short).
BACKFILL_BATCH = 100
# Float tolerance when comparing utterance times (JSON and database round trips).
TIME_TOLERANCE_S = 1e-6


class JobNotFound(LookupError):
    """No job has this id or Gladia session id."""


# --------------------------------------------------------------------- fetching


@dataclass
class FetchResult:
    """The outcome of GET /v2/live/:id after the client's own retries.

    ``status_code`` is None when no HTTP answer came at all (timeouts,
    connection refused): a transient condition, like a 5xx.
    """

    status_code: Optional[int]
    body: Optional[dict[str, Any]] = None
    error: Optional[str] = None


class SessionFetcher(Protocol):
    def __call__(self, gladia_id: str) -> FetchResult: ...


def default_fetcher(settings: Settings) -> SessionFetcher:
    """GET /v2/live/:id through the service's Gladia REST client.

    The client retries 408/429/5xx and connection failures with backoff and
    honours Retry-After; what is left after its retries becomes a
    :class:`FetchResult`, and the caller decides between "look again later"
    and "give up" (only a 404 gives up).
    """
    from .gladia.client import GladiaClient, GladiaError

    client = GladiaClient.from_settings(settings)

    def fetch(gladia_id: str) -> FetchResult:
        try:
            body = client.get_live(gladia_id)
        except GladiaError as exc:
            return FetchResult(exc.status, None, str(exc)[:300])
        return FetchResult(200, body if isinstance(body, dict) else None, None if isinstance(body, dict)
                           else "answer is not a JSON object")

    return fetch


# ---------------------------------------------------------------------- results


@dataclass
class ReconcileResult:
    """What one call of :func:`reconcile_job` did (also stored as a run row)."""

    job_id: str
    gladia_id: Optional[str]
    outcome: str  # reconciled | retry | failed | skipped
    reason: Optional[str] = None
    expected: int = 0
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    mismatched: int = 0
    repaired: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    run_id: Optional[int] = None
    next_attempt_at: Optional[datetime] = None

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items()}
        if self.next_attempt_at:
            data["next_attempt_at"] = self.next_attempt_at.isoformat()
        return data


# --------------------------------------------------------------- pure helpers


def callback_flags(session_config: dict[str, Any] | None) -> dict[str, bool]:
    """The callback flags a session asked for, documented defaults filled in."""
    config = (session_config or {}).get("callback_config") or {}
    flags = dict(CALLBACK_DEFAULTS)
    for name in CALLBACK_DEFAULTS:
        if isinstance(config.get(name), bool):
            flags[name] = config[name]
    return flags


def is_expected(message: dict[str, Any], flags: dict[str, bool]) -> bool:
    """Whether the session's callback_config asked for this message.

    Unknown message types are expected: storing one raw costs nothing, and
    the receiver stores unknown types rather than refusing them.
    """
    flag = flag_for(message)
    return True if flag is None else flags[flag]


def parse_messages(raw: Iterable[Any]) -> tuple[list[dict[str, Any]], int]:
    """Decode ``result.messages`` (JSON strings); returns (messages, undecodable count)."""
    messages: list[dict[str, Any]] = []
    bad = 0
    for item in raw or ():
        if isinstance(item, dict):
            messages.append(item)
            continue
        try:
            value = json.loads(item)
        except (TypeError, ValueError):
            bad += 1
            continue
        if isinstance(value, dict):
            messages.append(value)
        else:
            bad += 1
    return messages, bad


def retry_delay(settings: Settings, previous_retries: int) -> float:
    """Growing delay before the next look at a session still processing."""
    base = max(settings.reconcile_delay_s, 1.0)
    return min(base * (2 ** min(previous_retries, 16)), MAX_RETRY_DELAY_S)


def synthetic_utterance_id(utterance: dict[str, Any]) -> str:
    """A stable id for a final utterance no transcript message names.

    Used only when ``result.messages`` lacks the transcript of an utterance
    that ``result.transcription`` has; deterministic so that a second run
    finds the row the first one wrote.
    """
    channel = int(utterance.get("channel") or 0)
    start_ms = int(round(float(utterance.get("start") or 0.0) * 1000))
    return f"reconcile_{channel:02d}_{start_ms:010d}"


def _utterance_key(utterance: dict[str, Any]) -> tuple[int, float, float]:
    return (int(utterance.get("channel") or 0), round(float(utterance.get("start") or 0.0), 3),
            round(float(utterance.get("end") or 0.0), 3))


def _differs(row: Any, ref: dict[str, Any]) -> bool:
    """Whether a stored utterance (a row or a snapshot of one) differs from the reference in what is compared."""
    return (
        row.text != (ref.get("text") or "")
        or row.channel != int(ref.get("channel") or 0)
        or not math.isclose(row.start_s, float(ref.get("start") or 0.0), abs_tol=TIME_TOLERANCE_S)
        or not math.isclose(row.end_s, float(ref.get("end") or 0.0), abs_tol=TIME_TOLERANCE_S)
    )


def _num(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ------------------------------------------------------------------- the run


@dataclass
class _JobView:
    """The few job fields a run needs, read in a short transaction."""

    id: str
    gladia_id: Optional[str]
    state: str
    session_config: dict[str, Any]
    deadline_from: Optional[datetime]
    previous_retries: int
    # Whether the worker finished with the audio (closed the stream, or gave up on the job). A
    # session can be `done` at Gladia while the job's audio was never sent: one created by a run
    # that lost its claim and then ended by Gladia for lack of audio. Settling the job on it
    # would report a transcript that does not exist.
    stream_finished: bool = True
    stream_progress: str = ""
    # A worker holds the job and reported recently: it may still be streaming or replacing the session.
    owned_by_live_worker: bool = False


def find_job_id(settings: Settings, job_or_session_id: str) -> str:
    """The job id for a job id or a Gladia session id; raises :class:`JobNotFound`."""
    with session_scope(settings.database_url) as session:
        job_id = session.scalar(
            select(Job.id).where((Job.id == job_or_session_id) | (Job.gladia_id == job_or_session_id))
        )
    if job_id is None:
        raise JobNotFound(f"no job or session with id {job_or_session_id!r}")
    return job_id


def _load(settings: Settings, job_id: str) -> _JobView:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        retries = 0
        first_run = None
        if job.gladia_id:
            retries, first_run = session.execute(
                select(
                    func.count().filter(ReconciliationRun.outcome == "retry"),
                    func.min(ReconciliationRun.started_at),
                ).where(ReconciliationRun.gladia_id == job.gladia_id)
            ).one()
        # Every byte of the file acknowledged. A stream that reached its end records the file's
        # exact length there; ``stream_closed`` alone is not enough, since a run also closes the job
        # when the session ended under it with audio still unsent.
        if job.bytes_total:
            finished = (job.bytes_acked or 0) >= job.bytes_total
        else:
            finished = job.stream_closed_at is not None
        deadline_from = job.stream_closed_at or job.failed_at or first_run
        if finished:
            deadline_from = deadline_from or job.processing_at or job.done_at
        alive_since = utcnow() - timedelta(seconds=settings.stale_heartbeat_s)
        owned = job.worker_id is not None and job.heartbeat_at is not None and job.heartbeat_at >= alive_since
        return _JobView(job.id, job.gladia_id, job.state, dict(job.session_config or {}),
                        deadline_from, int(retries or 0), finished,
                        f"{job.bytes_acked or 0} of {job.bytes_total or '?'} bytes acknowledged", owned)


def reconcile_job(
    settings: Settings,
    job_id: str,
    trigger: str = "task",
    *,
    fetch: Optional[SessionFetcher] = None,
    now: Optional[datetime] = None,
    settle: bool = True,
) -> ReconcileResult:
    """Reconcile one job's session; see the module docstring.

    ``trigger`` says who asked (end_session, webhook, stream_closed, sweep,
    cli) and is recorded. With ``settle``, a session that completed less
    than RECONCILE_DELAY_S ago is looked at again once that time has passed,
    without recording a run: callbacks still in flight then land first and
    are not counted as missing. ``fetch`` replaces the HTTP client;
    ``now`` fixes the clock. Raises :class:`JobNotFound` for an unknown job;
    every other problem is recorded as a run.
    """
    view = _load(settings, job_id)
    with job_context(view.id, view.gladia_id):
        if not view.gladia_id:
            # No session was ever created: nothing at Gladia to compare with.
            # The sweeper re-drives such jobs through the worker instead.
            _settle_without_session(settings, view.id)
            log.info("job has no Gladia session yet; nothing to reconcile")
            return ReconcileResult(view.id, None, "skipped", reason="no Gladia session")
        started = now or utcnow()
        fetch = fetch or default_fetcher(settings)
        try:
            result = _run(settings, view, trigger, fetch, started, settle)
        except JobNotFound:
            raise
        except Exception as exc:  # a bug or a database outage: try again later, keep the reason
            log.exception("reconciliation crashed; will retry")
            result = _retry_or_deadline(settings, view, trigger, started, f"{type(exc).__name__}: {exc}"[:500])
        RECONCILIATIONS.labels(result.outcome).inc()
        if result.repaired:
            RECONCILE_REPAIRED.inc(result.repaired)
        log.info(
            "reconciliation %s: expected=%d received=%d missing=%d duplicates=%d mismatched=%d repaired=%d%s",
            result.outcome, result.expected, result.received, result.missing, result.duplicates,
            result.mismatched, result.repaired, f" ({result.reason})" if result.reason else "",
        )
        return result


def _settle_without_session(settings: Settings, job_id: str) -> None:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.reconcile_after = None


def _run(settings: Settings, view: _JobView, trigger: str, fetch: SessionFetcher,
         started: datetime, settle: bool) -> ReconcileResult:
    gladia_id = view.gladia_id
    assert gladia_id
    answer = fetch(gladia_id)

    if answer.status_code == 404:
        return _finish_failed(settings, view, trigger, started, "not_found: GET /v2/live/:id answered 404")
    if answer.status_code != 200 or not isinstance(answer.body, dict):
        reason = f"GET /v2/live/:id failed: {answer.error or answer.status_code or 'no answer'}"
        return _retry_or_deadline(settings, view, trigger, started, reason[:500])

    body = answer.body
    status = body.get("status")
    _store_session_result(settings, view, body)
    if status in PENDING_STATUSES:
        return _retry_or_deadline(settings, view, trigger, started, f"session still {status}")
    if status == "error":
        code = body.get("error_code")
        return _finish_failed(settings, view, trigger, started, f"gladia_error: status error (error_code {code})")
    if status != "done":
        return _retry_or_deadline(settings, view, trigger, started, f"unexpected session status {status!r}")
    if not view.stream_finished and view.owned_by_live_worker:
        # The worker is still at it (resuming, or replacing a session it could not use).
        return _retry_or_deadline(settings, view, trigger, started,
                                  f"session done but the job's audio is not fully streamed ({view.stream_progress})")
    completed = parse_timestamp(body.get("completed_at"))
    settled_at = completed + timedelta(seconds=settings.reconcile_delay_s) if completed else None
    if settle and settled_at and started < settled_at:
        return _wait_for_settling(settings, view, settled_at)
    return _compare_and_repair(settings, view, trigger, started, body)


def _wait_for_settling(settings: Settings, view: _JobView, settled_at: datetime) -> ReconcileResult:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, view.id)
        if job is not None:
            job.reconcile_after = settled_at
    return ReconcileResult(view.id, view.gladia_id, "retry", reason="waiting for callbacks still in flight",
                           next_attempt_at=settled_at)


def _store_session_result(settings: Settings, view: _JobView, body: dict[str, Any]) -> None:
    """Upsert the whole GET answer into session_results (the reference copy)."""
    result = body.get("result") if isinstance(body.get("result"), dict) else {}
    metadata = result.get("metadata") if isinstance(result.get("metadata"), dict) else {}
    transcription = result.get("transcription") if isinstance(result.get("transcription"), dict) else {}
    values: dict[str, Any] = {
        "job_id": view.id,
        "gladia_status": body.get("status"),
        "gladia_error_code": body.get("error_code") if isinstance(body.get("error_code"), int) else None,
        "gladia_completed_at": parse_timestamp(body.get("completed_at")),
        "gladia_response": body,
        "fetched_at": utcnow(),
    }
    if metadata:
        values.update(
            audio_duration_s=_num(metadata.get("audio_duration")),
            billing_time_s=_num(metadata.get("billing_time")),
            transcription_time_s=_num(metadata.get("transcription_time")),
            number_of_channels=metadata.get("number_of_distinct_channels")
            if isinstance(metadata.get("number_of_distinct_channels"), int) else None,
        )
    if transcription:
        if isinstance(transcription.get("full_transcript"), str):
            values["full_transcript"] = transcription["full_transcript"]
        if isinstance(transcription.get("languages"), list):
            values["languages"] = transcription["languages"]
    with session_scope(settings.database_url) as session:
        _upsert(session, SessionResult, {"gladia_id": view.gladia_id, **values}, ["gladia_id"], values)


def _upsert(session: Session, model: type, row: dict[str, Any], keys: list[str], update: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, on PostgreSQL and SQLite alike."""
    if is_postgres(session):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    update = {**update, "updated_at": utcnow()} if hasattr(model, "updated_at") else update
    statement = insert(model).values(**row)
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=update))


def _count_duplicates(session: Session, gladia_id: str) -> int:
    return int(session.scalar(
        select(func.coalesce(func.sum(InboxItem.duplicates), 0)).where(InboxItem.gladia_id == gladia_id)
    ) or 0)


def _compare_and_repair(settings: Settings, view: _JobView, trigger: str, started: datetime,
                        body: dict[str, Any]) -> ReconcileResult:
    """Backfill the missing messages, repair the final utterances, settle the job and record the run."""
    gladia_id = view.gladia_id
    assert gladia_id
    result = _object(body.get("result"))
    messages, undecodable = parse_messages(result.get("messages") or [])
    flags = callback_flags(_callback_config(view, body))
    expected = _expected_messages(messages, flags)
    missing = _missing_messages(settings, gladia_id, expected)
    backfill = _backfill(settings, view, missing)
    with session_scope(settings.database_url) as session:
        job = session.get(Job, view.id)
        utterances = _repair_utterances(session, view, messages, result)
        replaced = job is not None and job.gladia_id != gladia_id
        # Gladia ended the session before it had all the audio, and no worker is on it: a done
        # session takes no more audio, so the results stored are all there will be. Keep them,
        # but never call the job reconciled.
        incomplete = (f"incomplete: Gladia ended the session with {view.stream_progress}"
                      if not view.stream_finished else None)
        if job is not None and not replaced:
            _settle(job, parse_timestamp(body.get("completed_at")), incomplete)
        details = {
            "status": body.get("status"),
            "messages": len(messages),
            "undecodable_messages": undecodable,
            "not_asked_by_callback_config": len(messages) - sum(1 for m in messages if is_expected(m, flags)),
            "missing_by_type": _count_by_type(msg for _key, msg in missing),
            "backfilled": backfill.repaired,
            "invalid_messages": backfill.invalid[:20],
            "utterances": utterances.as_details(),
        }
        if replaced:
            # The worker gave the job another session meanwhile: this one settles nothing.
            details["replaced_by"] = job.gladia_id
        outcome = ReconcileResult(
            view.id, gladia_id, "retry" if replaced else "failed" if incomplete else "reconciled",
            reason="the job was given another session meanwhile" if replaced else incomplete,
            expected=len(expected), received=len(expected) - len(missing), missing=len(missing),
            duplicates=_count_duplicates(session, gladia_id), mismatched=utterances.mismatched,
            repaired=backfill.repaired + utterances.repaired, details=details,
        )
        outcome.run_id = _record(session, outcome, trigger, started)
    return outcome


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _callback_config(view: _JobView, body: dict[str, Any]) -> dict[str, Any]:
    """The session's configuration as far as callbacks go: the job's, else what Gladia says it applied."""
    if "callback_config" in view.session_config:
        return view.session_config
    # Older jobs may lack it; what Gladia applied is the next best record.
    return {"callback_config": (body.get("request_params") or {}).get("callback_config")}


def _expected_messages(messages: list[dict[str, Any]], flags: dict[str, bool]) -> dict[str, dict[str, Any]]:
    """The messages the session's callback_config asked for, by message key (first copy wins)."""
    expected: dict[str, dict[str, Any]] = {}
    for message in messages:
        if is_expected(message, flags):
            expected.setdefault(message_key(message), message)
    return expected


def _missing_messages(settings: Settings, gladia_id: str,
                      expected: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The expected messages with no ``events`` row, as (message key, message)."""
    with session_scope(settings.database_url) as session:
        stored = set(session.scalars(select(Event.message_key).where(Event.gladia_id == gladia_id)))
    return [(key, msg) for key, msg in expected.items() if key not in stored]


def _count_by_type(messages: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for msg in messages:
        kind = str(msg.get("type"))
        counts[kind] = counts.get(kind, 0) + 1
    return counts


@dataclass
class _Backfill:
    repaired: int = 0
    invalid: list[str] = field(default_factory=list)


def _backfill(settings: Settings, view: _JobView, missing: list[tuple[str, dict[str, Any]]]) -> _Backfill:
    """Store each missing message through the receiver's normalization (source ``reconcile``), in batches."""
    done = _Backfill()
    for offset in range(0, len(missing), BACKFILL_BATCH):
        with session_scope(settings.database_url) as session:
            job = session.get(Job, view.id)
            for key, msg in missing[offset: offset + BACKFILL_BATCH]:
                try:
                    if normalize_message(session, msg, source="reconcile", job=job, gladia_id=view.gladia_id):
                        done.repaired += 1
                except InvalidMessage as exc:
                    # Validation runs before any write: the transaction is intact.
                    done.invalid.append(f"{key[:12]}: {exc}")
    return done


@dataclass
class _UtteranceCheck:
    expected: int
    missing: int = 0
    mismatched: int = 0
    repaired: int = 0
    extra: list[str] = field(default_factory=list)

    def as_details(self) -> dict[str, Any]:
        return {"expected": self.expected, "missing": self.missing, "mismatched": self.mismatched,
                "repaired": self.repaired, "extra": self.extra[:50], "extra_count": len(self.extra)}


def _final_ids_by_key(messages: list[dict[str, Any]]) -> dict[tuple[int, float, float], str]:
    """The final transcript messages give each reference utterance its id (matched on channel, start, end)."""
    ids_by_key: dict[tuple[int, float, float], str] = {}
    for message in messages:
        data = _object(message.get("data"))
        if message.get("type") == "transcript" and data.get("is_final") and isinstance(data.get("utterance"), dict):
            ids_by_key.setdefault(_utterance_key(data["utterance"]), str(data.get("id")))
    return ids_by_key


def _repair_utterances(session: Session, view: _JobView, messages: list[dict[str, Any]],
                       result: dict[str, Any]) -> _UtteranceCheck:
    """Compare the stored final utterances with ``result.transcription.utterances``; repair through ingest."""
    gladia_id = view.gladia_id
    assert gladia_id
    reference = [u for u in (_object(result.get("transcription")).get("utterances") or []) if isinstance(u, dict)]
    ids_by_key = _final_ids_by_key(messages)
    rows: dict[str, Any] = {row.utterance_id: row for row in session.execute(
        select(Utterance.utterance_id, Utterance.job_id, Utterance.is_final, Utterance.text, Utterance.channel,
               Utterance.start_s, Utterance.end_s, Utterance.language, Utterance.created_at)
        .where(Utterance.gladia_id == gladia_id))}
    check = _UtteranceCheck(expected=len(reference))
    reference_ids: set[str] = set()
    for ref in reference:
        uid = ids_by_key.get(_utterance_key(ref)) or synthetic_utterance_id(ref)
        reference_ids.add(uid)
        row = rows.get(uid)
        if row is None or not row.is_final:
            check.missing += 1
        elif _differs(row, ref):
            check.mismatched += 1
        else:
            continue
        rows[uid] = SimpleNamespace(**repair_utterance(session, ref, gladia_id=gladia_id, utterance_id=uid,
                                                       job_id=view.id, stored=row))
        check.repaired += 1
    check.extra = sorted(uid for uid, row in rows.items() if row.is_final and uid not in reference_ids)
    return check


def _settle(job: Job, done_at: Optional[datetime], incomplete: Optional[str]) -> None:
    """The session is done: the job is reconciled, or failed when Gladia ended it with audio unsent."""
    job.advance("done", when=done_at)
    if incomplete:
        if job.advance("failed"):
            job.last_error = f"reconciliation: {incomplete}"
    else:
        job.advance("reconciled")
    job.reconcile_after = None


def _record(session: Session, result: ReconcileResult, trigger: str, started: datetime) -> int:
    run = ReconciliationRun(
        job_id=result.job_id,
        gladia_id=result.gladia_id,
        trigger=trigger[:32],
        started_at=started,
        finished_at=utcnow(),
        outcome=result.outcome,
        reason=result.reason,
        expected=result.expected,
        received=result.received,
        missing=result.missing,
        duplicates=result.duplicates,
        mismatched=result.mismatched,
        repaired=result.repaired,
        details=result.details or None,
    )
    session.add(run)
    session.flush()
    return run.id


def _finish_failed(settings: Settings, view: _JobView, trigger: str, started: datetime,
                   reason: str) -> ReconcileResult:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, view.id)
        duplicates = _count_duplicates(session, view.gladia_id or "")
        if job is not None:
            if job.advance("failed"):
                job.last_error = f"reconciliation: {reason}"
            job.reconcile_after = None
        result = ReconcileResult(view.id, view.gladia_id, "failed", reason=reason, duplicates=duplicates)
        result.run_id = _record(session, result, trigger, started)
    return result


def _retry_or_deadline(settings: Settings, view: _JobView, trigger: str, started: datetime,
                       reason: str) -> ReconcileResult:
    """Schedule another look, or give up once the deadline has passed."""
    deadline_from = view.deadline_from or started
    if started - deadline_from >= timedelta(seconds=settings.reconcile_deadline_s):
        return _finish_failed(settings, view, trigger, started,
                              f"deadline: not settled {settings.reconcile_deadline_s:.0f} s after the stream "
                              f"closed ({reason})")
    delay = retry_delay(settings, view.previous_retries)
    next_at = started + timedelta(seconds=delay)
    with session_scope(settings.database_url) as session:
        job = session.get(Job, view.id)
        if job is not None:
            job.reconcile_after = next_at
        result = ReconcileResult(view.id, view.gladia_id, "retry", reason=reason,
                                 details={"retry_in_s": delay}, next_attempt_at=next_at)
        result.run_id = _record(session, result, trigger, started)
    return result


def pending_job_ids(settings: Settings, limit: int = 10_000) -> list[str]:
    """Jobs awaiting reconciliation: a session exists and the job is not settled.

    Used by ``webhook-service reconcile --pending``: every job with a Gladia
    session whose stream has ended (or that has a reconciliation scheduled)
    and that is neither reconciled nor failed for good.
    """
    with session_scope(settings.database_url) as session:
        return list(session.scalars(
            select(Job.id)
            .where(Job.gladia_id.is_not(None))
            .where(
                Job.state.in_(ENDED_STATES)
                | (Job.reconcile_after.is_not(None) & (Job.state != "reconciled"))
            )
            .order_by(Job.created_at)
            .limit(limit)
        ))
