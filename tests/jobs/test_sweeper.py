"""The sweeper re-drives stale work found in SQL, once per lease.

The dispatcher (the Celery boundary) is replaced by one that records what it
was asked to send; the selection, the claims and the inbox retries run
against the real database and the real ingest code.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select

from webhook_service.db import session_scope
from webhook_service.ingest import store_inbox
from webhook_service.models import Event, InboxItem, Job
from webhook_service.jobs.sweeper import reconcile_lease_s, sweep

GID = "5d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a"


class Recorder:
    """Records the tasks a sweep sends (thread-safe: sweeps may run concurrently)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.resumes: list[bool] = []
        self._lock = threading.Lock()

    def reconcile(self, job_id: str, trigger: str) -> None:
        with self._lock:
            self.sent.append(("reconcile", job_id))

    def stream(self, job_id: str, resume: bool) -> None:
        with self._lock:
            self.sent.append(("stream", job_id))
            self.resumes.append(resume)


@pytest.fixture
def ssettings(settings):
    return replace(settings, stale_heartbeat_s=60.0, stale_queued_s=300.0, sweep_interval_s=10.0,
                   reconcile_delay_s=10.0, inbox_retry_after_s=5.0, inbox_max_attempts=3)


NOW = datetime(2026, 3, 2, 12, 0, 0, tzinfo=timezone.utc)


def add_job(url: str, **fields: Any) -> str:
    with session_scope(url) as session:
        fields.setdefault("created_at", NOW - timedelta(hours=1))
        fields.setdefault("queued_at", fields["created_at"])
        job = Job(source_path="/audio/a.wav", **fields)
        session.add(job)
        session.flush()
        return job.id


def job(url: str, job_id: str) -> Job:
    with session_scope(url) as session:
        return session.get(Job, job_id)


def test_due_reconciliations_are_sent_once_per_lease(ssettings):
    url = ssettings.database_url
    due = add_job(url, state="stream_closed", gladia_id=GID, reconcile_after=NOW - timedelta(seconds=1))
    later = add_job(url, state="stream_closed", gladia_id="g-later", reconcile_after=NOW + timedelta(hours=2))
    settled = add_job(url, state="reconciled", gladia_id="g-settled", reconcile_after=NOW - timedelta(seconds=1))
    failed = add_job(url, state="failed", gladia_id="g-failed", reconcile_after=NOW - timedelta(seconds=1))
    rec = Recorder()

    report = sweep(ssettings, dispatcher=rec, now=NOW)

    assert sorted(rec.sent) == sorted([("reconcile", due), ("reconcile", failed)])
    assert report.cleared == [settled] and job(url, settled).reconcile_after is None
    lease = timedelta(seconds=reconcile_lease_s(ssettings))
    assert job(url, due).reconcile_after == NOW + lease
    assert job(url, later).reconcile_after == NOW + timedelta(hours=2)

    # Within the lease nothing is sent again; after it, the lost task is sent again.
    sweep(ssettings, dispatcher=rec, now=NOW + lease - timedelta(seconds=1))
    assert len(rec.sent) == 2
    sweep(ssettings, dispatcher=rec, now=NOW + lease)
    assert sorted(rec.sent[2:]) == sorted([("reconcile", due), ("reconcile", failed)])


def test_concurrent_sweeps_send_each_task_once(ssettings):
    url = ssettings.database_url
    ids = [add_job(url, state="done", gladia_id=f"g-{i}", reconcile_after=NOW - timedelta(seconds=1))
           for i in range(20)]
    rec = Recorder()
    threads = [threading.Thread(target=sweep, args=(ssettings,), kwargs={"dispatcher": rec, "now": NOW})
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(job_id for _kind, job_id in rec.sent) == sorted(ids)


def test_ended_jobs_nobody_scheduled_get_a_reconciliation(ssettings):
    url = ssettings.database_url
    closed = add_job(url, state="stream_closed", gladia_id="g-1", stream_closed_at=NOW - timedelta(seconds=3))
    done = add_job(url, state="done", gladia_id="g-2", stream_closed_at=NOW - timedelta(seconds=3))
    old = add_job(url, state="processing", gladia_id="g-3", stream_closed_at=NOW - timedelta(minutes=5))
    streaming = add_job(url, state="streaming", gladia_id="g-4", heartbeat_at=NOW)
    rec = Recorder()

    report = sweep(ssettings, dispatcher=rec, now=NOW)

    assert sorted(report.scheduled) == sorted([closed, done, old])
    assert job(url, closed).reconcile_after == NOW + timedelta(seconds=7)  # RECONCILE_DELAY_S after the close
    assert job(url, streaming).reconcile_after is None
    # Due ones are sent in the same sweep.
    assert sorted(rec.sent) == sorted([("reconcile", done), ("reconcile", old)])


def test_streams_whose_worker_went_silent_are_redriven(ssettings):
    url = ssettings.database_url
    stale = add_job(url, state="streaming", gladia_id="g-1", worker_id="w:1", heartbeat_at=NOW - timedelta(seconds=61))
    starting = add_job(url, state="starting", worker_id="w:1", starting_at=NOW - timedelta(seconds=90))
    alive = add_job(url, state="streaming", gladia_id="g-2", worker_id="w:2", heartbeat_at=NOW - timedelta(seconds=5))
    # Claimed by a worker that died before it created the session.
    claimed = add_job(url, state="queued", worker_id="w:3", heartbeat_at=NOW - timedelta(seconds=61))
    rec = Recorder()

    report = sweep(ssettings, dispatcher=rec, now=NOW)

    assert sorted(report.restarted_stale) == sorted([stale, starting, claimed])
    assert sorted(rec.sent) == sorted([("stream", stale), ("stream", starting), ("stream", claimed)])
    assert job(url, claimed).worker_id is None
    assert rec.resumes == [True, True, True]  # resumptions go first (short-task queue)
    assert job(url, stale).heartbeat_at == NOW
    # The silent owner's claim is released so that the new run can claim the job.
    assert job(url, stale).worker_id is None and job(url, alive).worker_id == "w:2"
    assert job(url, alive).heartbeat_at == NOW - timedelta(seconds=5)
    # The next sweeps leave them alone for another STALE_HEARTBEAT_S.
    sweep(ssettings, dispatcher=rec, now=NOW + timedelta(seconds=30))
    assert len(rec.sent) == 3
    sweep(ssettings, dispatcher=rec, now=NOW + timedelta(seconds=61))
    # The released queued job is now an ordinary queued job (STALE_QUEUED_S applies); the
    # still silent streams are sent again, and the third one, silent since NOW - 5 s, too.
    assert sorted(rec.sent[3:]) == sorted([("stream", stale), ("stream", starting), ("stream", alive)])


def test_queued_jobs_never_picked_up_are_sent_again(ssettings):
    url = ssettings.database_url
    lost = add_job(url, state="queued", created_at=NOW - timedelta(seconds=301))
    fresh = add_job(url, state="queued", created_at=NOW - timedelta(seconds=30))
    # Claimed by a live worker (fresh heartbeat): waiting for a slot, not lost.
    owned = add_job(url, state="queued", worker_id="w:1", created_at=NOW - timedelta(seconds=900),
                    heartbeat_at=NOW - timedelta(seconds=1))
    rec = Recorder()

    report = sweep(ssettings, dispatcher=rec, now=NOW)

    assert report.restarted_queued == [lost] and rec.sent == [("stream", lost)]
    assert rec.resumes == [False]  # a new stream waits its turn behind the others
    sweep(ssettings, dispatcher=rec, now=NOW + timedelta(seconds=30))
    assert rec.sent == [("stream", lost)]
    assert job(url, fresh).heartbeat_at is None and job(url, owned).worker_id == "w:1"


def test_queued_jobs_whose_deferred_task_is_overdue_are_sent_again(ssettings):
    # A deferred task waits in a worker's memory until due; a SIGKILLed worker takes it along.
    url = ssettings.database_url
    lease = timedelta(seconds=reconcile_lease_s(ssettings))
    overdue = add_job(url, state="queued", created_at=NOW - timedelta(seconds=40), heartbeat_at=NOW - lease,
                      retry_at=NOW - lease - timedelta(seconds=1))
    due = add_job(url, state="queued", created_at=NOW - timedelta(seconds=40), heartbeat_at=NOW - lease,
                  retry_at=NOW - timedelta(seconds=5))  # due a moment ago: its task is likely running
    rec = Recorder()

    report = sweep(ssettings, dispatcher=rec, now=NOW)

    assert report.restarted_queued == [overdue] and rec.sent == [("stream", overdue)]
    assert job(url, overdue).retry_at == NOW and job(url, due).retry_at == NOW - timedelta(seconds=5)
    sweep(ssettings, dispatcher=rec, now=NOW + lease - timedelta(seconds=6))  # the sent task owns a lease
    assert rec.sent == [("stream", overdue)]
    sweep(ssettings, dispatcher=rec, now=NOW + lease + timedelta(seconds=1))  # both overdue now
    assert sorted(rec.sent[1:]) == sorted([("stream", overdue), ("stream", due)])


def _callback(gid: str, mtype: str, n: int) -> dict[str, Any]:
    payload = {"session_id": gid, "created_at": f"2026-03-02T11:00:0{n}.000Z", "type": mtype}
    return {"id": gid, "event": f"live.{mtype}", "payload": payload}


def _inbox(url: str, job_id: str, body: dict[str, Any], *, received_at: datetime, status: str = "pending",
           attempts: int = 0, raw: bytes | None = None) -> int:
    with session_scope(url) as session:
        stored = store_inbox(session, kind="callback", raw=raw or json.dumps(body).encode(), body=body, headers={},
                             event=body["event"], gladia_id=body["id"], job_id=job_id, received_at=received_at)
        row = session.get(InboxItem, stored.inbox_id)
        row.status, row.attempts = status, attempts
        return stored.inbox_id


def test_inbox_rows_left_pending_or_failed_are_normalized_again(ssettings):
    url = ssettings.database_url
    job_id = add_job(url, state="streaming", gladia_id=GID, ws_url="wss://api.gladia.io/v2/live?token=test", heartbeat_at=NOW)
    old_pending = _inbox(url, job_id, _callback(GID, "start_recording", 1), received_at=NOW - timedelta(seconds=6))
    new_pending = _inbox(url, job_id, _callback(GID, "speech_start", 2), received_at=NOW - timedelta(seconds=1))
    failed = _inbox(url, job_id, _callback(GID, "end_recording", 3), received_at=NOW - timedelta(hours=1),
                    status="failed", attempts=1)
    exhausted = _inbox(url, job_id, _callback(GID, "end_session", 4), received_at=NOW - timedelta(hours=1),
                       status="failed", attempts=3)

    report = sweep(ssettings, dispatcher=Recorder(), now=NOW)

    assert sorted(report.inbox_retried) == sorted([old_pending, failed])
    with session_scope(url) as session:
        statuses = dict(session.execute(select(InboxItem.id, InboxItem.status)).all())
        types = set(session.scalars(select(Event.type)))
        state = session.get(Job, job_id).state
    assert statuses == {old_pending: "processed", new_pending: "pending", failed: "processed",
                        exhausted: "failed"}
    assert types == {"start_recording", "end_recording"}
    assert state == "processing"  # end_recording applied


def test_an_inbox_row_that_keeps_failing_stops_at_the_attempt_limit(ssettings):
    url = ssettings.database_url
    job_id = add_job(url, state="streaming", gladia_id=GID, ws_url="wss://api.gladia.io/v2/live?token=test", heartbeat_at=NOW)
    # Valid JSON envelope whose message cannot be normalized (transcript without data).
    body = {"id": GID, "event": "live.transcript", "payload": {"session_id": GID, "type": "transcript"}}
    row = _inbox(url, job_id, body, received_at=NOW - timedelta(minutes=1), status="failed", attempts=0)
    for minute in range(5):
        sweep(ssettings, dispatcher=Recorder(), now=NOW + timedelta(minutes=minute))
    with session_scope(url) as session:
        item = session.get(InboxItem, row)
        assert item.status == "failed" and item.attempts == ssettings.inbox_max_attempts


def test_a_stream_redriven_by_the_sweeper_can_be_claimed_by_the_next_run(ssettings):
    """The contract with the streamer: after a sweep released a dead worker's claim, a run takes over."""
    from webhook_service.jobs.streaming import claim_job

    url = ssettings.database_url
    now = datetime.now(timezone.utc)
    stale = add_job(url, state="streaming", gladia_id=GID, worker_id="dead-host:1:run",
                    heartbeat_at=now - timedelta(seconds=ssettings.stale_heartbeat_s + 1))
    rec = Recorder()
    sweep(ssettings, dispatcher=rec, now=now)
    assert rec.sent == [("stream", stale)]

    from webhook_service.models import ConcurrencySlot

    with session_scope(url) as session:  # the dead worker's slot, kept for the job by the sweep below
        session.add(ConcurrencySlot(slot=0, job_id=stale, expires_at=now + timedelta(minutes=5)))
    sweep(ssettings, dispatcher=Recorder(), now=now + timedelta(seconds=ssettings.stale_heartbeat_s + 1))
    with session_scope(url) as session:
        assert session.scalar(select(ConcurrencySlot.job_id)) == stale

    claimed, why = claim_job(ssettings, stale, "new-host:2:run")

    assert claimed is not None, why
    assert job(url, stale).worker_id == "new-host:2:run"


def test_a_redriven_stream_keeps_its_slot_ahead_of_new_sessions(ssettings):
    """Gladia keeps a dropped session only for a grace period: its resumption must not queue for capacity."""
    from webhook_service.jobs import slots as concurrency
    from webhook_service.jobs.slots import lease_s
    from webhook_service.models import ConcurrencySlot

    url = ssettings.database_url
    now = datetime.now(timezone.utc)
    stale = add_job(url, state="streaming", gladia_id=GID, ws_url="ws://gladia.invalid/v2/live?token=t",
                    worker_id="dead-host:1:run", heartbeat_at=now - timedelta(seconds=ssettings.stale_heartbeat_s + 1))
    fresh = add_job(url, state="queued")
    with session_scope(url) as session:  # its lease, renewed with the last heartbeat, is about to run out
        session.add(ConcurrencySlot(slot=0, job_id=stale, expires_at=now + timedelta(seconds=1)))

    sweep(ssettings, dispatcher=Recorder(), now=now)

    later = now + timedelta(seconds=5)  # the resumed run starts a few seconds after the sweep
    assert concurrency.acquire_slot(url, fresh, 1, lease_s(ssettings), later, new_session=True) is None
    assert concurrency.acquire_slot(url, stale, 1, lease_s(ssettings), later) == 0


def test_new_sessions_leave_free_slots_to_waiting_resumptions(ssettings):
    """A stream handed back without a slot (its lease ran out) is served before a new session."""
    from webhook_service.jobs import slots as concurrency

    url = ssettings.database_url
    now = datetime.now(timezone.utc)
    waiting = add_job(url, state="streaming", gladia_id=GID, ws_url="ws://gladia.invalid/v2/live?token=t")
    first, second = add_job(url, state="queued"), add_job(url, state="queued")

    taken = concurrency.acquire_slot(url, first, 2, 30, now, new_session=True)
    assert taken in (0, 1)
    assert concurrency.acquire_slot(url, second, 2, 30, now, new_session=True) is None  # the last one is reserved
    assert concurrency.acquire_slot(url, waiting, 2, 30, now) == 1 - taken
    concurrency.release_slot(url, first)
    assert concurrency.acquire_slot(url, second, 2, 30, now, new_session=True) == taken  # nobody waits any more
