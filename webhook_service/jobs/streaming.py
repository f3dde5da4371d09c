"""Stream one job's audio into its Gladia live session, and survive anything on the way.

:func:`run_job` (synchronous, called by the Celery task) owns the job row: it
claims the job, takes a concurrency slot, creates or finds the Gladia session,
runs a :class:`~webhook_service.gladia.stream.LiveStream` on the process's
shared event loop (:mod:`.runtime`) and records the outcome.

Crash safety rests on the job row:

* a job is *claimed* with a conditional UPDATE (its ``worker_id`` is free or
  its heartbeat is stale), so two runs of one job never stream at once; a run
  that loses its claim (its heartbeat UPDATE matches no row) drops its socket
  without closing the session;
* the Gladia session is created only when the row has none, and recorded at
  once with a conditional UPDATE (only if the row names no other session),
  even by a run that lost its claim meanwhile: the session belongs to the
  job, and its next owner adopts it from the row. A run that finds another
  session recorded ends its own and stops, so the session on the row is the
  one that streams. A crash between the POST and that commit leaves an orphan
  that the next run finds by ``custom_metadata.job_id`` before creating
  another;
* the resume point is ``bytes_acked`` (Gladia's ``byte_range`` end), so a new
  run or a reconnect sends exactly the bytes Gladia has not acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Any, Callable, Optional

from sqlalchemy import or_, select, update
from sqlalchemy.orm import object_session

from ..audio import AudioError, PcmFormat, estimated_bytes, probe, session_format
from ..config import Settings
from ..db import session_scope
from ..gladia import session_config
from ..gladia.client import (
    GladiaAuthError,
    GladiaBadRequest,
    GladiaClient,
    GladiaError,
    GladiaNotFound,
    GladiaRateLimited,
)
from ..gladia.messages import parse_timestamp
from ..gladia.stream import LiveStream, StreamResult, redact_ws_url
from ..ingest.locks import ROW_LOCK
from ..logging_setup import job_context, set_gladia_id
from .. import metrics
from ..metrics import JOBS_STATE_CHANGES
from ..models import CLAIMABLE_STATES, Job, utcnow
from ..tokens import callback_token
from . import slots
from .dispatch import Dispatcher
from .redrive import previous_session_ids
from .runtime import runtime, shutting_down
from .socket_results import SocketResults

log = logging.getLogger(__name__)

# A resumption waits this long for a free concurrency slot before its task is re-queued (a new stream on
# standby waits up to slots.STANDBY_WAIT_S).
SLOT_WAIT_S = 30.0
# A run waiting for a slot checks again at most this often (seconds): a slot freed by another process
# is found within about this. New streams on standby check the one reading of the slots in use that
# their process shares (_Standby.slot_free), so the database sees one read per interval per process.
SLOT_POLL_MAX_S = 0.1
# POST /v2/live attempts within one run when Gladia is unreachable or answers 5xx.
CREATE_ATTEMPTS = 4
# Bound on how many times one job is (re)started by redelivery or the sweeper.
MAX_JOB_ATTEMPTS = 5
# This process, as recorded in a claimed job's worker_id (with a per-run suffix).
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


class _Standby:
    """The runs of this process waiting on their thread for a concurrency slot, and their wake-up.

    A run that frees a slot wakes one of them at once (:func:`hand_off_slot`):
    that is the fastest hand-off, with no broker or database round trip before
    the waiting run takes the slot. Every waiter also checks the database on
    its own (slots freed by other processes), so a wake-up is only a shortcut;
    they share one reading of the slots in use per :data:`SLOT_POLL_MAX_S`, so
    the database sees the same few reads however many runs wait.
    ``new`` counts the new streams among them, which ``SLOT_STANDBY`` bounds.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.waiting = 0  # every waiting run: resumptions and new streams
        self._wakes = 0  # wake-ups given and not yet taken by a waiting run
        self.new = 0
        self._reading = threading.Lock()
        self._in_use: Optional[int] = None  # slots in use at the last reading (None: read again)
        self._read_at = 0.0

    def slot_free(self, read_in_use: Callable[[], int], limit: int) -> bool:
        """Whether the slots in use, read at most once per :data:`SLOT_POLL_MAX_S` for the process, leave one free.

        A True answer counts the caller as taking that slot in the reading, so
        that one slot freed by another process is tried for by one waiting run
        of this process, not by every run that checks before the next reading
        (each would wait on the database for the first one's row, then fail).
        """
        with self._reading:
            now = time.monotonic()
            if self._in_use is None or now - self._read_at >= SLOT_POLL_MAX_S:
                self._in_use, self._read_at = read_in_use(), now
            if self._in_use >= limit:
                return False
            self._in_use += 1
            return True

    def forget_reading(self) -> None:
        """A slot was just tried for: the reading is out of date, the next waiter reads the database again."""
        with self._reading:
            self._in_use = None

    def enter_new(self, limit: int) -> bool:
        """Take one of the ``limit`` places for new streams; False when all are taken."""
        with self._cond:
            if self.new >= limit:
                return False
            self.new += 1
            return True

    def leave_new(self) -> None:
        with self._cond:
            self.new -= 1

    def wait(self, timeout: float) -> bool:
        """Wait until woken or ``timeout``; whether woken (a slot was just freed in this process)."""
        with self._cond:
            if not self._wakes:
                self.waiting += 1
                try:
                    self._cond.wait_for(lambda: self._wakes > 0, timeout)
                finally:
                    self.waiting -= 1
            if self._wakes:  # a wake-up that came as the wait timed out is taken all the same
                self._wakes -= 1
                return True
            return False

    def wake_one(self) -> bool:
        """Wake one waiting run that no other wake-up is meant for; whether there was one.

        Two slots freed at once with one run waiting: the second finds nobody and
        goes to the broker, rather than to a run that is already woken.
        """
        with self._cond:
            if self.waiting <= self._wakes:
                return False
            self._wakes += 1
            self._cond.notify()
            return True


_standby = _Standby()


class Deferred(Exception):
    """Nothing wrong, but not now (no free slot, Gladia's 429, a transient outage): retry later."""

    def __init__(self, reason: str, countdown: float, *, keep_slot: bool = False):
        super().__init__(reason)
        self.countdown = countdown
        self.keep_slot = keep_slot  # the job's slot stays held (for the run that resumes its session)


def _new_run_id() -> str:
    return f"{WORKER_ID}:{uuid.uuid4().hex[:8]}"[:200]


def claim_job(settings: Settings, job_id: str, run_id: str) -> tuple[Optional[Job], str]:
    """Take ownership of a job that nobody streams (free, or its owner's heartbeat is stale).

    Returns (job, "") on success, or (None, why-not).
    """
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.stale_heartbeat_s)
    with session_scope(settings.database_url) as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(CLAIMABLE_STATES),
                   or_(Job.worker_id.is_(None), Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before))
            .values(worker_id=run_id, heartbeat_at=now, retry_at=None)
        )
        job = session.get(Job, job_id)
        if job is None:
            return None, "no such job"
        if result.rowcount == 0:
            if job.state not in CLAIMABLE_STATES:
                return None, f"job is already {job.state}"
            return None, f"job is being streamed by {job.worker_id} (heartbeat {job.heartbeat_at:%H:%M:%S})"
        session.expunge(job)
        return job, ""


def _update_owned(settings: Settings, job_id: str, run_id: str, **values: Any) -> bool:
    with session_scope(settings.database_url) as session:
        result = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == run_id).values(**values))
        return result.rowcount == 1


def _with_job(settings: Settings, job_id: str, run_id: str, change: Callable[[Job], None]) -> bool:
    """Apply ``change`` to the job row if this run still owns it (row locked on PostgreSQL).

    FOR NO KEY UPDATE: it serializes with the job's other writers but does not wait for the
    KEY SHARE locks of the rows being inserted for the job (callbacks at the session's end).
    """
    with session_scope(settings.database_url) as session:
        job = session.execute(select(Job).where(Job.id == job_id).with_for_update(**ROW_LOCK)).scalar_one_or_none()
        if job is None or job.worker_id != run_id:
            return False
        before = job.state
        change(job)
        if job.state != before:
            JOBS_STATE_CHANGES.labels(job.state).inc()
        return True


def _fail(settings: Settings, job_id: str, run_id: str, reason: str, *, reconcile: bool = False) -> None:
    def change(job: Job) -> None:
        job.advance("failed")
        job.last_error = reason[:2000]
        job.worker_id = None
        if reconcile and job.gladia_id:
            job.reconcile_after = utcnow()

    _with_job(settings, job_id, run_id, change)
    slots.release_slot(settings.database_url, job_id)
    log.error("job failed: %s", reason)


def _release(settings: Settings, job_id: str, run_id: str, error: Optional[str] = None,
             retry_in: Optional[float] = None) -> None:
    """Give the job up; ``retry_in``: its task goes back to the broker, due in that many seconds."""
    values: dict[str, Any] = {"worker_id": None}
    if error:
        values["last_error"] = error[:2000]
    if retry_in is not None:
        values["retry_at"] = utcnow() + timedelta(seconds=retry_in)
    _update_owned(settings, job_id, run_id, **values)


def new_session_backoff(settings: Settings) -> tuple[float, float]:
    """The range of delays (seconds) after which a new stream that found no free slot is retried.

    Only a fallback: a run that frees a slot wakes the oldest waiting job at
    once (:func:`hand_off_slot`), so this bounds what a lost wake-up costs.
    """
    return 0.5 * settings.slot_retry_s, 1.5 * settings.slot_retry_s


def hand_off_slot(settings: Settings, dispatcher: Dispatcher) -> Optional[str]:
    """A slot was just freed: wake a run of this process waiting for one, else the new job that has waited
    longest (through the broker); the id of the job woken through the broker, or None.

    Best effort: the job's row (``retry_at``) keeps it due, so a wake-up lost
    with the broker costs the sweeper's delay, never the job.
    """
    if _standby.wake_one():
        log.info("slot handed to a run of this process waiting for one")
        return None
    try:
        job_id = slots.next_waiting(settings.database_url)
        if job_id is not None:
            dispatcher.wake(job_id)
            log.info("slot handed to job %s", job_id)
        return job_id
    except Exception as exc:  # noqa: BLE001 - the waiting job's own retry or the sweeper takes over
        log.warning("could not hand the freed slot over: %s", exc)
        return None


def run_job(settings: Settings, job_id: str, dispatcher: Optional[Dispatcher] = None) -> str:
    """Stream one job to its end; safe to call again, and safe against concurrent calls.

    Returns a short outcome (``stream_closed``, ``failed``, ``skipped: ...``);
    raises :class:`Deferred` when the task should be retried later. With a
    ``dispatcher``, a run that ends (and so frees its slot) wakes the next job
    waiting for one.
    """
    outcome = _run_job(settings, job_id)
    if dispatcher is not None and outcome in ("stream_closed", "failed"):
        hand_off_slot(settings, dispatcher)
    return outcome


def _run_job(settings: Settings, job_id: str) -> str:
    if shutting_down():
        raise Deferred("worker shutting down", 5.0)
    run_id = _new_run_id()
    with job_context(job_id):
        job, why = claim_job(settings, job_id, run_id)
        if job is None:
            log.info("not streaming: %s", why)
            return f"skipped: {why}"
        if job.gladia_id:
            set_gladia_id(job.gladia_id)
        try:
            return _run_claimed(settings, job, run_id, MAX_JOB_ATTEMPTS)
        except ClaimLost as exc:
            # The job (and its concurrency slot, keyed by job) belongs to the run that took it over.
            log.warning("this run stops: %s", exc)
            return "skipped: claim lost"
        except Deferred as exc:
            # The reason is kept: should the job give up later, its last error says why.
            _release(settings, job_id, run_id, str(exc), retry_in=exc.countdown)
            if not exc.keep_slot:
                slots.release_slot(settings.database_url, job_id)
            raise
        except BaseException as exc:
            # Unexpected: let the job be re-driven (bounded by its attempts) rather than stuck.
            _release(settings, job_id, run_id, f"{type(exc).__name__}: {str(exc)[:300]}")
            slots.release_slot(settings.database_url, job_id)
            raise


def _audio_facts(settings: Settings, job: Job, run_id: str) -> Optional[PcmFormat]:
    """The session's PCM format; probes the file when submit did not (or the file changed). None: failed."""
    config = job.session_config or {}
    try:
        if job.audio_channels is None or job.audio_duration_s is None or "channels" not in config:
            info = probe(job.source_path)
            fmt = session_format(info, config.get("sample_rate"), config.get("bit_depth", 16))
            total = estimated_bytes(info, fmt)

            def store(row: Job) -> None:
                row.audio_channels, row.audio_duration_s = info.channels, info.duration_s
                row.audio_sample_rate, row.audio_sha256 = info.sample_rate, info.sha256
                row.bytes_total = row.bytes_total or total
                row.session_config = session_config.job_config(
                    config, None, channels=fmt.channels, sample_rate=fmt.sample_rate, bit_depth=fmt.bit_depth)

            _with_job(settings, job.id, run_id, store)
            job.session_config = session_config.job_config(
                config, None, channels=fmt.channels, sample_rate=fmt.sample_rate, bit_depth=fmt.bit_depth)
            return fmt
        if not os.path.isfile(job.source_path):
            raise AudioError(f"{job.source_path}: no such file (moved or deleted after submit)")
        return PcmFormat(sample_rate=int(config.get("sample_rate", 16000)), channels=int(config.get("channels", job.audio_channels)),
                         bit_depth=int(config.get("bit_depth", 16)))
    except AudioError as exc:
        _fail(settings, job.id, run_id, str(exc))
        return None


def _acquire_slot(settings: Settings, job: Job, run_id: str) -> int:
    """Hold a concurrency slot, resumptions first (see :func:`slots.acquire_slot`); the job's attempts.

    The slot and this run's attempt are taken in one commit (:func:`_take_slot`).

    A resumption (the job has a recorded session) races Gladia's reconnect
    grace, so it waits here for the next free slot, then is re-queued almost at
    once (after :data:`SLOT_WAIT_S`). A new session can wait too, on standby,
    as long as fewer than ``SLOT_STANDBY`` new streams of this process
    already do: a run of the process that frees a slot wakes it at once.
    Beyond that its task goes back to the broker at once, so that a backlog
    of new files never keeps resumptions from the threads they need; after
    :data:`~.slots.STANDBY_WAIT_S` on standby, too.
    """
    return _wait_for_slot(settings, job, run_id, resuming=bool(job.gladia_id and job.ws_url))


def _take_slot(settings: Settings, job: Job, run_id: str, *, resuming: bool) -> Optional[int]:
    """Take a slot and count this run's attempt, in one commit; the job's attempts, or None: every slot is busy.

    The job's row is locked first (:func:`_with_job`), as every writer of a job and its slot does.
    Raises :class:`ClaimLost` when another run owns the job: an attempt that
    is not counted must not create a session (see :func:`_may_have_orphan`).
    """
    attempts = None

    def take(row: Job) -> None:
        nonlocal attempts
        slot = slots.acquire_slot_in(object_session(row), row.id, settings.max_concurrent_sessions,
                                     slots.lease_s(settings), new_session=not resuming)
        if slot is None:
            return
        log.debug("holding concurrency slot %d", slot)
        row.attempts = attempts = (row.attempts or 0) + 1
        row.advance("starting")

    if not _with_job(settings, job.id, run_id, take):
        raise ClaimLost("claim lost before the session was created")
    return attempts


def _wait_for_slot(settings: Settings, job: Job, run_id: str, *, resuming: bool) -> int:
    deadline = time.monotonic() + (SLOT_WAIT_S if resuming else slots.STANDBY_WAIT_S)
    beat_at = time.monotonic() + settings.heartbeat_interval_s
    delay = 0.1
    standby = woken = False
    try:
        while True:
            attempts = None
            if not standby or woken:
                attempts = _take_slot(settings, job, run_id, resuming=resuming)
            elif _standby.slot_free(lambda: slots.slots_in_use(settings.database_url), settings.max_concurrent_sessions):
                attempts = _take_slot(settings, job, run_id, resuming=resuming)  # freed by another process
                _standby.forget_reading()
            if attempts is not None:
                if not job.attempts and job.created_at is not None:  # the job's first slot: its wait since submission
                    metrics.SLOT_WAIT_SECONDS.observe(max(0.0, (utcnow() - job.created_at).total_seconds()))
                return attempts
            busy = f"all {settings.max_concurrent_sessions} session slots are busy"
            if not resuming and not standby:
                standby = _standby.enter_new(settings.slot_standby)
                if not standby:
                    metrics.SLOT_WAITS.labels("new").inc()
                    raise Deferred(busy, random.uniform(*new_session_backoff(settings)))
            if time.monotonic() >= deadline or shutting_down():
                metrics.SLOT_WAITS.labels("resume" if resuming else "new").inc()
                raise Deferred(busy, random.uniform(0.2, 1.0) if resuming
                               else random.uniform(*new_session_backoff(settings)))
            if time.monotonic() >= beat_at:  # keep the claim fresh while waiting, so nobody presumes this run dead
                if not _update_owned(settings, job.id, run_id, heartbeat_at=utcnow()):
                    raise Deferred("claim lost while waiting for a slot", 1, keep_slot=True)
                beat_at = time.monotonic() + settings.heartbeat_interval_s
            woken = _standby.wait(delay * random.uniform(0.5, 1.5))  # at once when this process frees a slot
            delay = min(delay * 1.6, SLOT_POLL_MAX_S)
    finally:
        if standby:
            _standby.leave_new()


def _find_orphan(settings: Settings, client: GladiaClient, job: Job) -> Optional[dict[str, Any]]:
    """A session created for this job whose id never reached the database (crash after POST)."""
    try:
        page = client.list_live(custom_metadata={"job_id": job.id}, limit=10)
    except GladiaAuthError:
        raise
    except GladiaError as exc:
        log.warning("cannot look for an orphaned session: %s", exc)
        raise Deferred(f"orphan lookup failed: {exc}", random.uniform(5, 15)) from None
    items = [i for i in page.get("items") or [] if (i.get("custom_metadata") or {}).get("job_id") == job.id]
    if not items:  # the common case: no database round trip
        return None
    with session_scope(settings.database_url) as session:
        replaced = previous_session_ids(session, job.id)  # sessions of the job's earlier runs are not orphans
    items = [i for i in items if i.get("id") not in replaced]
    return items[0] if items else None


class ClaimLost(Exception):
    """Another run owns the job now; this run stops without touching the session it leaves to it."""


def _record_session(settings: Settings, job_id: str, run_id: str, created: dict[str, Any],
                    replaces: frozenset[str]) -> tuple[Optional[str], Optional[str], bool]:
    """Record ``created`` as the job's session unless another one is recorded; whether or not the claim holds.

    The session belongs to the job, not to the run that created it: a run
    that lost its claim while POST /v2/live was in flight still records it,
    so the job's next owner adopts it from the row instead of creating a
    second one. Only the worker records a session on a job (the receiver
    never binds one from a callback). The UPDATE is conditional: the row
    takes this session when it has none, when it already names this one
    (a row written without the socket URL), or
    when it names a session in ``replaces`` (orphans without a socket URL that
    this run found and deletes) and this run still owns the job, so nobody can
    have streamed into them. A failed job (cancelled while the POST was in
    flight) takes none: nobody would feed it, so the caller ends it at once
    rather than let it hold one of Gladia's concurrent sessions until its grace
    runs out. The UPDATE comes first in the transaction: on
    PostgreSQL it waits for a concurrent claim's row lock, so the owner read
    after it is current.

    When the row takes this session and this run owns the job, the job moves
    to ``streaming`` in the same commit.

    Returns the row's (gladia_id, ws_url) after the write and whether this
    run owns the job.
    """
    values: dict[str, Any] = {"gladia_id": created["id"], "ws_url": created["url"]}
    created_at = parse_timestamp(created.get("created_at"))
    if created_at is not None:
        values["gladia_created_at"] = created_at
    takes = [Job.gladia_id.is_(None), Job.gladia_id == created["id"]]
    if replaces:
        takes.append((Job.gladia_id.in_(sorted(replaces))) & (Job.worker_id == run_id))
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id, Job.state != "failed", or_(*takes)).values(**values))
        job = session.execute(select(Job).where(Job.id == job_id)).scalar_one()
        owner = job.worker_id == run_id
        if owner and job.gladia_id == created["id"] and job.advance("streaming"):
            JOBS_STATE_CHANGES.labels(job.state).inc()
        return job.gladia_id, job.ws_url, owner


def _names_job(client: GladiaClient, gladia_id: str, job_id: str) -> bool:
    """Whether Gladia says session ``gladia_id`` was created for ``job_id`` (its ``custom_metadata.job_id``)."""
    try:
        metadata = client.get_live(gladia_id).get("custom_metadata") or {}
    except GladiaError as exc:
        log.warning("not ending session %s: cannot read whose it is: %s", gladia_id, exc)
        return False
    if not isinstance(metadata, dict) or metadata.get("job_id") != job_id:
        log.warning("not ending session %s: its custom_metadata does not name job %s", gladia_id, job_id)
        return False
    return True


def _delete_quietly(client: GladiaClient, gladia_id: str, why: str, url: Optional[str] = None, *,
                    job_id: str) -> None:
    """End a session of job ``job_id`` that holds no audio and never will (best effort).

    Only a session whose ``custom_metadata`` (``GET /v2/live/:id``) names the
    job is ended: an id that reached the job's row some other way is never
    deleted with the service's key. Gladia refuses to DELETE a session still
    waiting for audio; when the socket URL is known, ``stop_recording`` on it
    ends the session at once instead of leaving it to hold a concurrent-session
    place until its reconnect grace runs out. Its callbacks are refused by the
    receiver: the job's row names another session.
    """
    if not _names_job(client, gladia_id, job_id):
        return
    log.warning("ending session %s (%s)", gladia_id, why)
    try:
        client.delete_live(gladia_id)
        return
    except GladiaError as exc:
        if url is None:
            log.warning("could not delete session %s: %s", gladia_id, exc)
            return
    from websockets.sync.client import connect as connect_sync

    try:
        with connect_sync(url, open_timeout=5, close_timeout=5, proxy=None,
                          user_agent_header="webhook-service") as ws:
            ws.send(json.dumps({"type": "stop_recording"}))
    except Exception as exc:  # noqa: BLE001 - best effort: Gladia ends it after its grace anyway
        log.warning("could not end session %s: %s", gladia_id, exc)


def _ensure_session(settings: Settings, client: GladiaClient, job: Job,
                    run_id: str) -> Optional[tuple[str, str, Optional[float]]]:
    """(gladia_id, ws_url, created_at) of the job's one session, created if it has none; the job is ``streaming``.

    ``created_at``: when this run's POST created the session (``time.monotonic()``), so that it holds
    no audio yet; None when the session existed before. None instead of the tuple: job failed.

    Raises :class:`ClaimLost` when another run owns the job (after recording
    any session this run created, for that run to adopt), :class:`Deferred`
    when another run's session is about to be recorded.
    """
    if job.gladia_id and job.ws_url:
        metrics.STREAM_SESSIONS.labels("resumed").inc()
        _advance_to_streaming(settings, job.id, run_id)
        return job.gladia_id, job.ws_url, None
    # Sessions of this job that can never be fed (their socket URL was never recorded): replaced, then deleted.
    dead: set[str] = {job.gladia_id} if job.gladia_id else set()
    found = _create_or_adopt(settings, client, job, run_id, dead)
    if found is None:
        return None
    created, created_at = found
    gladia_id, url = created["id"], created["url"]
    dead.discard(gladia_id)
    recorded_id, recorded_url, owner = _record_session(settings, job.id, run_id, created, frozenset(dead))
    if recorded_id != gladia_id:
        adopted_id, adopted_url = _yield_to_recorded(client, job.id, created, recorded_id, recorded_url, owner)
        _advance_to_streaming(settings, job.id, run_id)
        return adopted_id, adopted_url, None
    set_gladia_id(gladia_id)
    for other in sorted(dead):
        _delete_quietly(client, other, "replaced: its socket URL was never recorded", job_id=job.id)
    if not owner:
        log.warning("session %s recorded for the job's new owner; this run lost its claim", gladia_id)
        raise ClaimLost("claim lost while creating the session")
    log.info("session %s created, socket %s", gladia_id, redact_ws_url(url))
    return gladia_id, url, created_at


def _advance_to_streaming(settings: Settings, job_id: str, run_id: str) -> None:
    """Move a job whose session was recorded earlier to ``streaming`` (a lost claim shows at the heartbeat)."""
    _with_job(settings, job_id, run_id, lambda row: row.advance("streaming"))


def _create_or_adopt(settings: Settings, client: GladiaClient, job: Job, run_id: str,
                     dead: set[str]) -> Optional[tuple[dict[str, Any], Optional[float]]]:
    """POST /v2/live for the job, unless an orphan of a crashed run can be adopted. None: job failed.

    Returns the session and when this run's POST created it (``time.monotonic()``; None: adopted).

    Orphans that cannot be fed (no socket URL) are added to ``dead``. Gladia's
    429 and a lasting outage raise :class:`Deferred` (the slot is given back).
    """
    callback_url = None
    if settings.callbacks:
        callback_url = (settings.public_base_url.rstrip("/") + "/callbacks/gladia/"
                        + callback_token(job.id, settings.callback_signing_key))
    body = session_config.post_body(job.session_config or {}, callback_url=callback_url, job_id=job.id,
                                    batch_id=job.batch_id, socket_results=settings.store_socket_messages)
    try:
        return _create_attempts(settings, client, job, run_id, dead, body)
    except GladiaAuthError as exc:
        # A wrong key stays wrong: fail now, with the setting to fix (no retry).
        _fail(settings, job.id, run_id, exc.key_refused())
        return None


def _may_have_orphan(job: Job) -> bool:
    """Whether an earlier run of the job may have created a session it never recorded.

    A run counts its attempt (``_take_slot``) before its POST /v2/live, so
    a job that comes to this run with no attempt, no re-run and no session
    (the first run of every new job) has none: its first POST needs no lookup
    before it. ``job`` is the row as claimed, before this run's attempt.
    """
    return bool(job.attempts or job.retries or job.gladia_id)


def _create_attempts(settings: Settings, client: GladiaClient, job: Job, run_id: str, dead: set[str],
                     body: dict[str, Any]) -> Optional[tuple[dict[str, Any], Optional[float]]]:
    may_have_orphan = _may_have_orphan(job)
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        # From the second attempt on, this run's own failed POST may have created one.
        orphan = _find_orphan(settings, client, job) if may_have_orphan or attempt > 1 else None
        if orphan is not None:
            if isinstance(orphan.get("url"), str):
                log.warning("adopting session %s created by a run that crashed before recording it", orphan["id"])
                metrics.STREAM_SESSIONS.labels("adopted").inc()
                return orphan, None
            # Gladia's list does not return the socket URL: unless its creator records it meanwhile (read
            # from the row afterwards), that session cannot be fed. It has received no audio: it is replaced
            # and deleted, so the job still ends up with exactly one session holding audio.
            dead.add(orphan["id"])
        try:
            created = client.create_live(body)
            metrics.STREAM_SESSIONS.labels("created").inc()
            return created, time.monotonic()
        except GladiaRateLimited as exc:
            # Back-pressure (Gladia's own concurrency limit), not a failure.
            slots.release_slot(settings.database_url, job.id)
            raise Deferred(f"Gladia answered 429: {exc}", exc.retry_after or random.uniform(5, 20)) from None
        except GladiaBadRequest as exc:
            _fail(settings, job.id, run_id, f"Gladia refused the session: {exc}")
            return None
        except GladiaError as exc:
            if attempt == CREATE_ATTEMPTS:
                slots.release_slot(settings.database_url, job.id)
                raise Deferred(f"cannot create the session: {exc}", random.uniform(10, 30)) from None
            log.warning("POST /v2/live failed (%s); looking for an orphan, then retrying", exc)
            time.sleep(min(5.0, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable: the last attempt returns or raises")


def _yield_to_recorded(client: GladiaClient, job_id: str, created: dict[str, Any], recorded_id: Optional[str],
                       recorded_url: Optional[str], owner: bool) -> tuple[str, str]:
    """Another session is the job's, or none will be: end the one this run created, and adopt, stop or wait.

    Another run recorded one, or the job failed (cancelled) meanwhile: the
    session this run created must hold no audio.
    """
    why = f"the job already has session {recorded_id}" if recorded_id else "the job failed or was cancelled meanwhile"
    _delete_quietly(client, created["id"], why, created["url"], job_id=job_id)
    if owner and recorded_id and recorded_url:
        log.warning("adopting session %s recorded by another run", recorded_id)
        set_gladia_id(recorded_id)
        return recorded_id, recorded_url
    if recorded_id is None:
        raise ClaimLost("the job failed or was cancelled while its session was created")
    if not owner:
        raise ClaimLost(f"another run owns the job (session {recorded_id})")
    raise Deferred(f"session {recorded_id} of another run is being recorded", random.uniform(0.5, 1.5))


def _run_claimed(settings: Settings, job: Job, run_id: str, max_attempts: int) -> str:
    fmt = _audio_facts(settings, job, run_id)
    if fmt is None:
        return "failed"
    if _acquire_slot(settings, job, run_id) > max_attempts:
        _fail(settings, job.id, run_id, f"gave up after {max_attempts} attempts; last error: "
              f"{job.last_error or 'none recorded (each run was interrupted: its worker stopped or was killed)'}",
              reconcile=True)
        return "failed"
    client = GladiaClient.from_settings(settings)
    try:
        found = _ensure_session(settings, client, job, run_id)
        if found is None:
            return "failed"
        return _stream_session(settings, client, job, run_id, fmt, *found)
    finally:
        client.close()


def _stream_session(settings: Settings, client: GladiaClient, job: Job, run_id: str, fmt: PcmFormat,
                    gladia_id: str, url: str, created_at: Optional[float]) -> str:
    """Run the job's :class:`LiveStream` on the process's event loop, then record its outcome."""
    options = session_config.stream_options(job.session_config or {}, settings)
    rt = runtime(settings)

    async def session_alive() -> bool:
        def check() -> bool:
            try:
                return client.get_live(gladia_id).get("status") not in ("done", "error")
            except GladiaNotFound:
                return False
            except GladiaError:
                return True
        return await asyncio.get_running_loop().run_in_executor(rt.db_pool, check)

    results = (SocketResults(settings.database_url, job.id, gladia_id, job.session_config, rt.results_pool,
                             reconcile_delay_s=settings.reconcile_delay_s)
               if settings.store_socket_messages else None)

    async def build() -> LiveStream:
        return LiveStream(url=url, path=job.source_path, fmt=fmt, start=job.bytes_acked or 0,
                          chunk_ms=options.chunk_ms, speed=options.speed, close_mode=settings.close_mode,
                          session_alive=session_alive, label=redact_ws_url(url) or gladia_id,
                          reconnects_before=job.reconnects or 0, on_message=results.add if results else None,
                          created_at=created_at)

    async def stream_then_store() -> StreamResult:
        try:
            return await stream.run()
        finally:
            if results is not None:
                await results.drain()  # what the socket delivered is stored before the outcome is recorded

    stream = rt.run(build())
    rt.register(job.id, stream, run_id, settings)
    log.info("streaming %s from byte %d (chunk %d ms, speed %g)", job.source_path, stream.bytes_acked,
             options.chunk_ms, options.speed)
    try:
        result = rt.run(stream_then_store())
    finally:
        rt.unregister(run_id)
    return _finish(settings, job, run_id, result, stream)


def _finish(settings: Settings, job: Job, run_id: str, result: StreamResult, stream: LiveStream) -> str:
    now = utcnow()
    reconnects = (job.reconnects or 0) + result.reconnects
    metrics.STREAM_RUNS.labels(result.outcome).inc()

    def progress(row: Job) -> None:
        row.bytes_sent, row.bytes_acked, row.reconnects, row.heartbeat_at = (
            result.bytes_sent, result.bytes_acked, reconnects, now)
        if result.bytes_total is not None:
            row.bytes_total = result.bytes_total

    if result.outcome == "lost_claim" and stream.interrupted:
        # Worker shutdown: record where the stream stands and give the job back for another worker.
        _with_job(settings, job.id, run_id, progress)
        # Back-date the heartbeat: the sweeper re-drives the job at its next pass even if the re-queued
        # task dies with this worker (a filesystem broker holds delayed tasks in the worker's memory).
        _update_owned(settings, job.id, run_id, worker_id=None,
                      heartbeat_at=utcnow() - timedelta(seconds=settings.stale_heartbeat_s + 1),
                      last_error="worker shut down while streaming; resumed elsewhere")
        # The session lives on at Gladia: its slot stays with the job for the run that resumes it.
        slots.hold_slot(settings.database_url, job.id, slots.lease_s(settings))
        raise Deferred("worker shutting down", 1.0, keep_slot=True)
    if result.outcome == "lost_claim":
        log.warning("another run owns the job now; this run stops")
        return "skipped: claim lost"
    if result.outcome == "failed_audio":
        _with_job(settings, job.id, run_id, progress)
        _fail(settings, job.id, run_id, result.error or "audio error", reconcile=True)
        return "failed"
    if result.outcome == "transient":
        _with_job(settings, job.id, run_id, progress)
        _release(settings, job.id, run_id, result.error)
        slots.release_slot(settings.database_url, job.id)
        raise Deferred(f"stream interrupted: {result.error}", random.uniform(5, 15))

    def closed(row: Job) -> None:
        progress(row)
        # The session ended with the socket: its slot is given back in the same commit, for the hand-off.
        slots.release_slot_in(object_session(row), row.id)
        row.advance("stream_closed")
        row.worker_id = None
        if result.outcome == "complete":
            row.reconcile_after = now + timedelta(seconds=settings.reconcile_delay_s)
        else:  # the session ended or vanished under us: what Gladia kept is for reconciliation to settle
            row.last_error = (f"session ended before all audio was acknowledged "
                              f"({result.bytes_acked} of {result.bytes_total or row.bytes_total or '?'} bytes): "
                              f"{result.error or ''}").strip()[:2000]
            row.reconcile_after = now

    if not _with_job(settings, job.id, run_id, closed):
        log.warning("another run owns the job now; leaving the outcome to it")
        return "skipped: claim lost"
    log.info("stream closed (%s): %d bytes acknowledged, %d reconnects", result.outcome, result.bytes_acked,
             result.reconnects)
    return "stream_closed"
