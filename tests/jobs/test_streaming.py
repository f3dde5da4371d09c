"""The streamer against the emulator, over real sockets and a real database."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from webhook_service.jobs import slots as concurrency, streaming as streamer, submit
from webhook_service.audio import PcmFormat, PcmReader, synth_speechlike
from webhook_service.config import Settings
from webhook_service.db import session_scope
from webhook_service.gladia import stream as stream_module
from webhook_service.gladia.client import GladiaClient
from webhook_service.gladia.stream import LatencyRecorder, LiveStream
from webhook_service.jobs.runtime import runtime
from webhook_service.jobs.streaming import Deferred, run_job
from webhook_service.models import ConcurrencySlot, Job, utcnow
from webhook_service.tokens import callback_token

AUDIO_CACHE: dict[tuple, Path] = {}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audio")


def audio_file(folder: Path, name: str, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    key = (folder, name, seconds, rate, channels)
    if key not in AUDIO_CACHE:
        AUDIO_CACHE[key] = synth_speechlike(folder / name, seconds, sample_rate=rate, channels=channels)
    return AUDIO_CACHE[key]


def decoded(path: Path, fmt: PcmFormat) -> bytes:
    with PcmReader(path, fmt) as reader:
        return b"".join(reader.chunks(65536))


def job_format(settings: Settings, job_id: str) -> PcmFormat:
    job = load_job(settings, job_id)
    config = job.session_config
    return PcmFormat(config["sample_rate"], config["channels"], config["bit_depth"])


def load_job(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def make_jobs(settings: Settings, *paths: Path, config: dict | None = None, batch: str | None = None) -> list[str]:
    plans = submit.plan(settings, [str(p) for p in paths], config or {})
    result = submit.record(settings, plans, batch, config or {})
    return [job["id"] for job in result.jobs]


@pytest.fixture
def stream_settings(settings: Settings, emulator) -> Settings:
    return replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key, stream_speed=4.0,
                   heartbeat_interval_s=0.2, stale_heartbeat_s=2.0, reconcile_delay_s=5.0)


def test_job_streams_every_byte_once_and_closes(stream_settings, emulator, audio_dir):
    path = audio_file(audio_dir, "two.wav", 2.0)
    [job_id] = make_jobs(stream_settings, path, batch="first")

    assert run_job(stream_settings, job_id) == "stream_closed"

    job = load_job(stream_settings, job_id)
    expected = decoded(path, job_format(stream_settings, job_id))
    assert job.state == "stream_closed"
    assert job.bytes_total == job.bytes_acked == job.bytes_sent == len(expected)
    assert job.worker_id is None and job.attempts == 1
    assert job.reconcile_after is not None and job.reconcile_after > job.stream_closed_at
    assert emulator.received_audio(job.gladia_id) == expected
    # The session was created as the contract says.
    gladia = GladiaClient(emulator.url, emulator.api_key).get_live(job.gladia_id)
    assert gladia["custom_metadata"]["job_id"] == job_id
    assert gladia["custom_metadata"]["batch_id"] == job.batch_id
    ledger = emulator.ledger(job.gladia_id)
    assert callback_token(job_id, stream_settings.callback_signing_key) in str(ledger)
    with session_scope(stream_settings.database_url) as session:
        assert session.execute(select(ConcurrencySlot)).first() is None
    # Running the task again (a redelivery) changes nothing and opens no second session.
    assert run_job(stream_settings, job_id).startswith("skipped")
    assert len(GladiaClient(emulator.url, emulator.api_key).list_live(custom_metadata={"job_id": job_id})["items"]) == 1


def test_resume_after_repeated_socket_cuts_is_byte_identical(stream_settings, emulator_factory, audio_dir):
    emulator = emulator_factory(faults={"ws_cut_after_chunks": 4, "ws_cut_code": 1011})
    settings = replace(stream_settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key,
                       stream_speed=0.0)
    path = audio_file(audio_dir, "stereo.flac", 3.0, rate=44100, channels=2)
    [job_id] = make_jobs(settings, path)

    assert run_job(settings, job_id) == "stream_closed"

    job = load_job(settings, job_id)
    fmt = job_format(settings, job_id)
    assert (fmt.sample_rate, fmt.channels) == (44100, 2)
    expected = decoded(path, fmt)
    assert job.reconnects >= 2  # cut several times in one session
    assert job.bytes_acked == len(expected)
    assert emulator.received_audio(job.gladia_id) == expected


def test_pacing_follows_the_schedule(stream_settings, emulator, audio_dir):
    """Structure, not speed: chunks of the configured size, never ahead of the real-time schedule."""
    path = audio_file(audio_dir, "pace.wav", 1.0)
    client = GladiaClient(emulator.url, emulator.api_key)
    fmt = PcmFormat(16000, 1, 16)
    session = client.create_live({"encoding": "wav/pcm", "sample_rate": 16000, "bit_depth": 16, "channels": 1})
    lateness = LatencyRecorder()
    stream = LiveStream(url=session["url"], path=str(path), fmt=fmt, chunk_ms=50, speed=2.0, lateness=lateness)
    started = time.monotonic()
    result = runtime(stream_settings).run(stream.run())
    elapsed = time.monotonic() - started

    assert result.outcome == "complete"
    # 20 chunks of 50 ms, each paced; the end of the file is seen when the last chunk is read, without
    # waiting one more chunk's time.
    assert len(lateness.samples) == 20
    assert min(lateness.samples) >= -0.001  # never sent before its due time (clock resolution aside)
    assert elapsed >= 19 * 0.050 / 2.0 * 0.95  # the 20th chunk is due 19 chunks (at twice real time) after the first
    assert emulator.received_audio(session["id"]) == decoded(path, fmt)


@pytest.mark.parametrize("set_up_s", [0.4, 30.0])
def test_a_new_session_is_paced_from_its_creation_up_to_one_window(stream_settings, emulator, audio_dir, set_up_s):
    """Its slot is held from the POST on: audio due while the socket opened goes at once, up to MAX_CATCH_UP_S."""
    path = audio_file(audio_dir, "pace.wav", 1.0)
    client = GladiaClient(emulator.url, emulator.api_key)
    fmt = PcmFormat(16000, 1, 16)
    session = client.create_live({"encoding": "wav/pcm", "sample_rate": 16000, "bit_depth": 16, "channels": 1})
    lateness = LatencyRecorder()
    stream = LiveStream(url=session["url"], path=str(path), fmt=fmt, chunk_ms=50, speed=1.0, lateness=lateness,
                        created_at=time.monotonic() - set_up_s)
    result = runtime(stream_settings).run(stream.run())

    assert result.outcome == "complete"
    caught_up = min(set_up_s, stream_module.MAX_CATCH_UP_S)
    # The first chunk was due when the session was created (or one window before the socket opened), not
    # when the socket opened: it went at least that late against its schedule, at once.
    assert lateness.samples[0] >= caught_up - 0.001
    if set_up_s > stream_module.MAX_CATCH_UP_S:
        assert lateness.samples[0] < set_up_s / 2  # one window made up, not the whole 30 s
    assert min(lateness.samples) >= -0.001  # still never ahead of the schedule
    assert emulator.received_audio(session["id"]) == decoded(path, fmt)


def test_a_run_that_died_after_its_last_ack_is_completed_by_the_next(stream_settings, emulator, audio_dir):
    # The run closed with 1000 after the last acknowledgement (Gladia ended the session) and died
    # before recording the stream's end: the job still has the size estimated at submit. The next
    # run finds the session ended and the file read to its end: complete, not audio missing.
    path = audio_file(audio_dir, "died.wav", 1.0)
    [job_id] = make_jobs(stream_settings, path)
    assert run_job(stream_settings, job_id) == "stream_closed"
    acked = load_job(stream_settings, job_id).bytes_acked
    assert acked == len(decoded(path, job_format(stream_settings, job_id)))
    with session_scope(stream_settings.database_url) as session:  # as the dead run left it
        session.execute(update(Job).where(Job.id == job_id).values(
            state="streaming", stream_closed_at=None, reconcile_after=None, bytes_total=acked + 898,
            worker_id=None, heartbeat_at=None))

    assert run_job(stream_settings, job_id) == "stream_closed"

    job = load_job(stream_settings, job_id)
    assert (job.state, job.bytes_total, job.bytes_acked) == ("stream_closed", acked, acked)
    assert job.last_error is None or "before all audio" not in job.last_error


def test_429_is_back_pressure_not_failure(stream_settings, emulator, audio_dir):
    path = audio_file(audio_dir, "short.wav", 1.0)
    [job_id] = make_jobs(stream_settings, path)
    emulator.set_faults(rest_429_rate=1.0, rest_fault_routes=["POST /v2/live"])

    with pytest.raises(Deferred) as deferred:
        run_job(stream_settings, job_id)

    assert deferred.value.countdown > 0
    job = load_job(stream_settings, job_id)
    assert job.state in ("queued", "starting") and job.gladia_id is None and job.worker_id is None
    with session_scope(stream_settings.database_url) as session:
        assert session.execute(select(ConcurrencySlot)).first() is None  # the slot went back
    emulator.reset_faults()
    assert run_job(stream_settings, job_id) == "stream_closed"
    assert load_job(stream_settings, job_id).state == "stream_closed"


def test_concurrent_runs_of_one_job_stream_it_once(stream_settings, emulator, audio_dir):
    path = audio_file(audio_dir, "twice.wav", 1.5)
    [job_id] = make_jobs(stream_settings, path)
    outcomes: list[str] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        barrier.wait()
        outcomes.append(run_job(stream_settings, job_id))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(o.split(":")[0] for o in outcomes) == ["skipped", "skipped", "stream_closed"]
    sessions = GladiaClient(emulator.url, emulator.api_key).list_live(custom_metadata={"job_id": job_id})["items"]
    assert len(sessions) == 1
    job = load_job(stream_settings, job_id)
    assert emulator.received_audio(job.gladia_id) == decoded(path, job_format(stream_settings, job_id))


def test_orphan_session_from_a_crash_is_not_doubled(stream_settings, emulator, audio_dir):
    path = audio_file(audio_dir, "orphan.wav", 1.0)
    [job_id] = make_jobs(stream_settings, path)
    client = GladiaClient(emulator.url, emulator.api_key)
    # A run that crashed after POST /v2/live, before it could record the session.
    orphan = client.create_live({"custom_metadata": {"job_id": job_id}})

    assert run_job(stream_settings, job_id) == "stream_closed"

    job = load_job(stream_settings, job_id)
    expected = decoded(path, job_format(stream_settings, job_id))
    assert emulator.received_audio(job.gladia_id) == expected
    if job.gladia_id != orphan["id"]:
        # Gladia's list does not give the socket URL back, so the orphan cannot be fed; it must have
        # been left without audio (deleted when Gladia allows it), never a second session with audio.
        remaining = {s["id"] for s in client.list_live(custom_metadata={"job_id": job_id})["items"]}
        assert orphan["id"] not in remaining or emulator.received_audio(orphan["id"]) == b""


def run_until_done(settings: Settings, job_id: str) -> str:
    """What Celery does with a deferred task: run it again later (here, sooner than asked)."""
    while True:
        try:
            return run_job(settings, job_id)
        except Deferred as exc:
            time.sleep(min(exc.countdown, 0.2))


def test_concurrency_limit_is_global(stream_settings, emulator, audio_dir):
    settings = replace(stream_settings, max_concurrent_sessions=1, stream_speed=2.0)
    first, second = make_jobs(settings, audio_file(audio_dir, "slot1.wav", 1.0), audio_file(audio_dir, "slot2.wav", 1.0))
    results: dict[str, str] = {}
    threads = [threading.Thread(target=lambda j=j: results.__setitem__(j, run_until_done(settings, j)))
               for j in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert results == {first: "stream_closed", second: "stream_closed"}
    a, b = load_job(settings, first), load_job(settings, second)
    earlier, later = sorted((a, b), key=lambda j: j.starting_at)
    assert later.starting_at >= earlier.stream_closed_at  # never two live sessions at once


def run_while_the_slot_is_busy(settings: Settings, audio_dir: Path) -> tuple[str, str, float]:
    """A new job run while another holds the only slot: (busy, waiting, seconds the run took).

    Checks what every such run ends with: its task goes back to the broker with a new session's
    backoff, the job unclaimed, without a session, and due again (the sweeper's cue if the task is lost).
    """
    busy, waiting = make_jobs(settings, audio_file(audio_dir, "busy.wav", 1.0), audio_file(audio_dir, "wait.wav", 1.0))
    assert concurrency.acquire_slot(settings.database_url, busy, 1, 60) == 0
    started = time.monotonic()
    with pytest.raises(Deferred) as deferred:
        run_job(settings, waiting)
    waited_s = time.monotonic() - started
    low, high = streamer.new_session_backoff(settings)
    assert low <= deferred.value.countdown <= high
    job = load_job(settings, waiting)
    assert job.worker_id is None and job.gladia_id is None
    assert job.retry_at is not None
    return busy, waiting, waited_s


def test_a_new_stream_without_a_slot_gives_its_thread_back(stream_settings, emulator, audio_dir):
    # A backlog of new files must not hold worker threads that resumptions need: beyond the standby places
    # (none here), no waiting.
    settings = replace(stream_settings, max_concurrent_sessions=1, slot_standby=0)
    busy, waiting, waited_s = run_while_the_slot_is_busy(settings, audio_dir)

    assert waited_s < streamer.SLOT_WAIT_S
    assert GladiaClient.from_settings(settings).list_live(custom_metadata={"job_id": waiting})["items"] == []
    concurrency.release_slot(settings.database_url, busy)
    assert run_job(settings, waiting) == "stream_closed"
    assert load_job(settings, waiting).retry_at is None


class WakeRecorder:
    """A dispatcher that records the wake-ups a run sends when it frees its slot."""

    def __init__(self) -> None:
        self.woken: list[str] = []

    def wake(self, job_id: str) -> None:
        self.woken.append(job_id)


def test_a_run_that_frees_its_slot_wakes_the_oldest_waiting_job(stream_settings, emulator, audio_dir):
    # Through the broker: no run of this process is on standby.
    settings = replace(stream_settings, max_concurrent_sessions=1, slot_retry_s=3600, slot_standby=0)
    first, second, third = make_jobs(settings, *(audio_file(audio_dir, f"wake{i}.wav", 0.5) for i in range(3)))
    with session_scope(settings.database_url) as session:  # submitted in this order
        for i, job_id in enumerate((first, second, third)):
            session.execute(update(Job).where(Job.id == job_id).values(created_at=utcnow() - timedelta(minutes=9 - i)))
    assert concurrency.acquire_slot(settings.database_url, first, 1, 60) == 0
    for waiting in (second, third):  # both find the slot busy; their tasks come back only in about an hour
        with pytest.raises(Deferred) as deferred:
            run_job(settings, waiting)
        assert deferred.value.countdown >= 1800
    concurrency.release_slot(settings.database_url, first)

    recorder = WakeRecorder()
    assert run_job(settings, first, dispatcher=recorder) == "stream_closed"

    assert recorder.woken == [second]  # the oldest waiting job, once
    woken = load_job(settings, second)
    assert woken.retry_at <= load_job(settings, first).stream_closed_at + timedelta(seconds=5)  # due now
    assert run_job(settings, second, dispatcher=recorder) == "stream_closed"
    assert recorder.woken == [second, third]
    assert run_job(settings, third, dispatcher=recorder) == "stream_closed"
    assert recorder.woken == [second, third]  # nobody left waiting: no wake-up


def test_a_new_stream_on_standby_takes_the_slot_its_process_frees(stream_settings, emulator, audio_dir, caplog,
                                                                  monkeypatch):
    """The fastest hand-off: the run that frees the slot wakes a run of its own process waiting on its thread."""
    # The waiting run's own check of the slots would find the freed slot too, a moment later: keep the
    # reading it takes while the first run streams, so that the wake-up is the only way the slot reaches it.
    monkeypatch.setattr(streamer, "SLOT_POLL_MAX_S", 600.0)
    monkeypatch.setattr(streamer, "_standby", streamer._Standby())
    settings = replace(stream_settings, max_concurrent_sessions=1, slot_retry_s=3600, slot_standby=1,
                       stream_speed=2.0, stale_heartbeat_s=10.0)
    # The first file is long enough (3 s at this speed) for the other two runs to start while it streams.
    first, second, third = make_jobs(settings, *(audio_file(audio_dir, f"standby{i}.wav", 6.0 if i == 0 else 1.0)
                                                for i in range(3)))
    recorder = WakeRecorder()
    results: dict[str, object] = {}

    def run(job_id: str) -> None:
        try:
            results[job_id] = run_job(settings, job_id, dispatcher=recorder)
        except Deferred as exc:
            results[job_id] = exc

    streaming = threading.Thread(target=run, args=(first,))
    streaming.start()
    deadline = time.monotonic() + 30
    while load_job(settings, first).state != "streaming" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert load_job(settings, first).state == "streaming"
    with caplog.at_level("INFO", logger="webhook_service.jobs.streaming"):
        waiting = threading.Thread(target=run, args=(second,))  # takes the one standby place
        waiting.start()
        while streamer._standby.new < 1 and time.monotonic() < deadline:  # on standby, not just claimed
            time.sleep(0.01)
        assert load_job(settings, first).state == "streaming"
        run(third)  # no standby place left: back to the broker, its thread given back
        for thread in (streaming, waiting):
            thread.join(60)

    assert results[first] == results[second] == "stream_closed"
    assert isinstance(results[third], Deferred) and results[third].countdown >= 1800
    assert "slot handed to a run of this process waiting for one" in caplog.text
    assert recorder.woken == [third]  # the standby run took the first slot freed; the second went to the broker
    a, b = load_job(settings, first), load_job(settings, second)
    assert b.starting_at >= a.stream_closed_at  # never two live sessions at once
    assert b.retry_at is None and b.attempts == 1  # never deferred: it waited on its thread


def test_a_new_stream_stays_on_standby_longer_than_a_resumption_waits(stream_settings, emulator, audio_dir,
                                                                      monkeypatch):
    # The runs waiting behind a wave of sessions must still be on standby when it ends: a new stream waits
    # up to STANDBY_WAIT_S (scaled down here), not the resumption's SLOT_WAIT_S, then goes back to the broker.
    monkeypatch.setattr(streamer, "SLOT_WAIT_S", 0.2)
    monkeypatch.setattr(concurrency, "STANDBY_WAIT_S", 1.5)
    monkeypatch.setattr(streamer, "_standby", streamer._Standby())
    settings = replace(stream_settings, max_concurrent_sessions=1, slot_standby=1)
    _, _, waited_s = run_while_the_slot_is_busy(settings, audio_dir)

    assert waited_s >= 1.5
    assert streamer._standby.new == 0  # its standby place is given back


def test_runs_on_standby_share_one_reading_of_the_slots_in_use(monkeypatch):
    """However many runs of a process wait, the database is read once per poll interval for all of them."""
    monkeypatch.setattr(streamer, "SLOT_POLL_MAX_S", 3600.0)
    standby = streamer._Standby()
    reads = []

    def read_in_use() -> int:
        reads.append(1)
        return 3

    # One slot free in the reading: one waiting run tries for it, the others wait for the next reading.
    assert [standby.slot_free(read_in_use, 4) for _ in range(20)] == [True] + [False] * 19
    assert len(reads) == 1
    standby.forget_reading()  # a slot was tried for: the next waiter reads again
    assert [standby.slot_free(read_in_use, 5) for _ in range(3)] == [True, True, False]  # two free: two tries
    assert len(reads) == 2


def test_a_waiting_run_gets_one_wake_up_and_a_second_freed_slot_goes_elsewhere():
    standby = streamer._Standby()
    woken: list[bool] = []
    waiter = threading.Thread(target=lambda: woken.append(standby.wait(30)))
    waiter.start()
    deadline = time.monotonic() + 10
    while standby.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert standby.wake_one()
    assert not standby.wake_one()  # the one run waiting is already woken: this slot goes to the broker
    waiter.join(10)
    assert woken == [True]
    assert not standby.wake_one()  # nobody waits any more
    assert not standby.wait(0)  # and no wake-up is left over for a later run


def test_two_slots_freed_at_once_wake_two_different_jobs(settings):
    ids = make_jobs_raw(settings, 3)
    far = utcnow() + timedelta(hours=1)
    with session_scope(settings.database_url) as session:
        for i, job_id in enumerate(ids):
            session.execute(update(Job).where(Job.id == job_id).values(retry_at=far, created_at=far - timedelta(minutes=9 - i)))
        session.execute(update(Job).where(Job.id == ids[2]).values(ws_url="wss://resumption"))

    picked = [concurrency.next_waiting(settings.database_url) for _ in range(3)]

    assert picked == [ids[0], ids[1], None]  # a resumption is never woken here: it waits on its own thread
    assert load_job(settings, ids[0]).retry_at < far


def test_slot_leases_expire_and_are_taken_over(settings):
    from datetime import timedelta

    from webhook_service.models import utcnow

    ids = make_jobs_raw(settings, 3)
    now = utcnow()
    first = concurrency.acquire_slot(settings.database_url, ids[0], 2, 30, now)
    second = concurrency.acquire_slot(settings.database_url, ids[1], 2, 30, now)
    assert {first, second} == {0, 1}  # any free number (in random order, so that runs starting together spread)
    assert concurrency.acquire_slot(settings.database_url, ids[2], 2, 30, now) is None
    assert concurrency.acquire_slot(settings.database_url, ids[0], 2, 30, now) == first  # a resume keeps its slot
    later = now + timedelta(seconds=31)
    taken_over = concurrency.acquire_slot(settings.database_url, ids[2], 2, 30, later)  # both leases expired
    assert taken_over in (0, 1)
    concurrency.release_slot(settings.database_url, ids[1])
    # ids[0] keeps its slot if it still holds it, else takes the one ids[1] gave back: the one not taken over
    assert concurrency.acquire_slot(settings.database_url, ids[0], 2, 30, later) == 1 - taken_over


def make_jobs_raw(settings: Settings, n: int) -> list[str]:
    with session_scope(settings.database_url) as session:
        jobs = [Job(source_path=f"/nowhere/{i}.wav") for i in range(n)]
        session.add_all(jobs)
        session.flush()
        return [j.id for j in jobs]


def test_file_removed_after_submit_fails_with_reason(stream_settings, audio_dir, tmp_path):
    path = synth_speechlike(tmp_path / "gone.wav", 0.5)
    [job_id] = make_jobs(stream_settings, path)
    path.unlink()

    assert run_job(stream_settings, job_id) == "failed"
    job = load_job(stream_settings, job_id)
    assert job.state == "failed" and "no such file" in job.last_error and job.gladia_id is None


def test_session_gone_is_left_to_reconciliation(stream_settings, emulator, audio_dir):
    path = audio_file(audio_dir, "gone.wav", 1.0)
    [job_id] = make_jobs(stream_settings, path)
    client = GladiaClient(emulator.url, emulator.api_key)
    session = client.create_live({"custom_metadata": {"job_id": job_id}})
    bogus = session["url"].split("?")[0] + "?token=00000000-0000-0000-0000-000000000000"
    with session_scope(stream_settings.database_url) as db:
        job = db.get(Job, job_id)
        job.gladia_id, job.ws_url = session["id"], bogus

    assert run_job(stream_settings, job_id) == "stream_closed"
    job = load_job(stream_settings, job_id)
    assert job.state == "stream_closed"
    assert "before all audio" in job.last_error
    assert job.reconcile_after is not None


def test_stop_mode_waits_for_end_session(stream_settings, emulator, audio_dir):
    settings = replace(stream_settings, close_mode="stop")
    path = audio_file(audio_dir, "stop.wav", 1.0)
    [job_id] = make_jobs(settings, path)

    assert run_job(settings, job_id) == "stream_closed"

    job = load_job(settings, job_id)
    assert job.last_error is None  # end_session arrived before the wait ran out
    # Post-processing had finished when the worker let go: Gladia's record says done.
    assert GladiaClient(emulator.url, emulator.api_key).get_live(job.gladia_id)["status"] == "done"


def test_a_run_that_loses_its_claim_stops_and_the_new_owner_finishes(stream_settings, emulator, audio_dir):
    """What the sweeper does to a silent worker: release its claim; the old run must stop sending."""
    settings = replace(stream_settings, stream_speed=1.0)
    path = audio_file(audio_dir, "handover.wav", 3.0)
    [job_id] = make_jobs(settings, path)
    outcomes: dict[str, str] = {}
    first = threading.Thread(target=lambda: outcomes.__setitem__("first", run_job(settings, job_id)))
    first.start()
    deadline = time.monotonic() + 20
    while load_job(settings, job_id).bytes_acked < 16000 and time.monotonic() < deadline:
        time.sleep(0.05)
    with session_scope(settings.database_url) as session:  # the sweeper's release of a stale owner
        session.get(Job, job_id).worker_id = None
    first.join(30)  # its next heartbeat finds the claim gone: it stops sending, without closing the session
    assert outcomes == {"first": "skipped: claim lost"}
    assert load_job(settings, job_id).bytes_acked < load_job(settings, job_id).bytes_total

    outcomes["second"] = run_job(settings, job_id)

    assert outcomes == {"first": "skipped: claim lost", "second": "stream_closed"}
    job = load_job(settings, job_id)
    assert job.attempts == 2
    assert emulator.received_audio(job.gladia_id) == decoded(path, job_format(settings, job_id))


def test_a_run_that_cannot_record_heartbeats_fences_itself(stream_settings, emulator, audio_dir):
    """If its heartbeats stop landing, a run stops sending before the sweeper may hand the job on."""
    path = audio_file(audio_dir, "fence.wav", 2.0)
    client = GladiaClient(emulator.url, emulator.api_key)
    session = client.create_live({"encoding": "wav/pcm", "sample_rate": 16000, "bit_depth": 16, "channels": 1})
    stream = LiveStream(url=session["url"], path=str(path), fmt=PcmFormat(), speed=1.0)
    stream.fence_after(0.5)  # and no heartbeat renews it
    result = runtime(stream_settings).run(stream.run())
    assert result.outcome == "lost_claim"
    assert 0 < result.bytes_sent < 64000
    assert "no heartbeat" in result.error


def test_audio_that_breaks_mid_stream_ends_the_session_cleanly(stream_settings, emulator, audio_dir):
    path = audio_file(audio_dir, "long.wav", 1.0)
    client = GladiaClient(emulator.url, emulator.api_key)
    session = client.create_live({"encoding": "wav/pcm", "sample_rate": 16000, "bit_depth": 16, "channels": 1})
    stream = LiveStream(url=session["url"], path=str(path), fmt=PcmFormat(), speed=0, max_duration_s=0.5)
    result = runtime(stream_settings).run(stream.run())
    assert result.outcome == "failed_audio" and "limited to 3 h" in result.error
    # Closed with 1000, not left waiting for a reconnect: Gladia finishes the session with what it got.
    done = emulator.wait_session_done(session["id"], timeout=20)
    assert done["status"] == "done"
    assert 0 < len(emulator.received_audio(session["id"])) <= 16000


def claimed_job(settings: Settings, audio_dir: Path, name: str, run_id: str) -> tuple[Path, str, Job]:
    """A 1 s file's job, claimed by ``run_id`` as a worker's run claims it: (audio path, job id, claimed row)."""
    from webhook_service.jobs.streaming import claim_job

    path = audio_file(audio_dir, name, 1.0)
    [job_id] = make_jobs(settings, path)
    job, why = claim_job(settings, job_id, run_id)
    assert job is not None, why
    return path, job_id, job


def assert_ended_without_audio(client: GladiaClient, emulator, session_id: str) -> None:
    """The session ended at once (not after Gladia's reconnect grace), and no audio ever reached it."""
    deadline = time.monotonic() + 10
    while client.get_live(session_id)["status"] in ("queued", "processing") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get_live(session_id)["status"] in ("done", "error")
    assert emulator.received_audio(session_id) == b""


def test_a_session_created_by_a_run_that_lost_its_claim_is_recorded_and_streamed_by_the_next_owner(
        stream_settings, emulator, audio_dir):
    """A run whose claim is taken while POST /v2/live is in flight leaves no orphan: the next owner adopts it."""
    from sqlalchemy import update

    from webhook_service.jobs.streaming import ClaimLost, _ensure_session

    path, job_id, job = claimed_job(stream_settings, audio_dir, "lost-claim.wav", "old-host:1:run")
    # Its heartbeat looked stale: the sweeper released the claim (a new run is on its way).
    with session_scope(stream_settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(worker_id=None))
    client = GladiaClient(emulator.url, emulator.api_key)

    with pytest.raises(ClaimLost):
        _ensure_session(stream_settings, client, job, "old-host:1:run")

    recorded = load_job(stream_settings, job_id)
    assert recorded.gladia_id is not None and recorded.ws_url is not None
    assert run_job(stream_settings, job_id) == "stream_closed"
    job = load_job(stream_settings, job_id)
    assert job.gladia_id == recorded.gladia_id and job.state == "stream_closed"
    sessions = client.list_live(custom_metadata={"job_id": job_id})["items"]
    assert [s["id"] for s in sessions] == [recorded.gladia_id]
    assert emulator.received_audio(job.gladia_id) == decoded(path, job_format(stream_settings, job_id))


def test_a_job_cancelled_while_its_session_is_created_takes_none_and_the_session_ends_at_once(
        stream_settings, emulator, audio_dir):
    """Cancel lands while POST /v2/live is in flight: nobody will feed that session, so it must not wait for audio."""
    from webhook_service.jobs.redrive import cancel
    from webhook_service.jobs.streaming import ClaimLost, _ensure_session

    _, job_id, job = claimed_job(stream_settings, audio_dir, "cancelled-in-flight.wav", "host:1:run")

    class CancelledDuringThePost(GladiaClient):
        def create_live(self, body):
            created = super().create_live(body)
            assert [d["job_id"] for d in cancel(stream_settings, job=job_id).done] == [job_id]
            return created

    client = CancelledDuringThePost(emulator.url, emulator.api_key)
    with pytest.raises(ClaimLost, match="cancelled"):
        _ensure_session(stream_settings, client, job, "host:1:run")

    row = load_job(stream_settings, job_id)
    assert (row.state, row.gladia_id, row.ws_url) == ("failed", None, None)
    assert row.cancelled_at is not None
    [created] = client.list_live(custom_metadata={"job_id": job_id})["items"]
    assert_ended_without_audio(client, emulator, created["id"])


def test_a_run_that_finds_another_session_recorded_ends_its_own_and_stops(stream_settings, emulator, audio_dir):
    """Two runs POSTed for one job: the session recorded first is the job's; the other ends without audio."""
    from sqlalchemy import update

    from webhook_service.jobs.streaming import ClaimLost, _ensure_session

    _, job_id, job = claimed_job(stream_settings, audio_dir, "two-posts.wav", "old-host:1:run")
    client = GladiaClient(emulator.url, emulator.api_key)
    # The job's next owner created and recorded its session while this run's POST was in flight.
    theirs = client.create_live({"encoding": "wav/pcm", "sample_rate": 16000, "bit_depth": 16, "channels": 1})
    with session_scope(stream_settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id)
                        .values(worker_id="new-host:2:run", gladia_id=theirs["id"], ws_url=theirs["url"]))

    with pytest.raises(ClaimLost):
        _ensure_session(stream_settings, client, job, "old-host:1:run")

    row = load_job(stream_settings, job_id)
    assert (row.gladia_id, row.ws_url) == (theirs["id"], theirs["url"])
    [own] = client.list_live(custom_metadata={"job_id": job_id})["items"]
    assert own["id"] != theirs["id"]
    assert_ended_without_audio(client, emulator, own["id"])
