"""A real worker process (`webhook-service worker`), SIGKILLed mid-stream, recovers on the same session.

Broker: ``TEST_REDIS_URL`` when set (CI), else kombu's filesystem broker.
The emulator runs in the test process; the worker talks to it over TCP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from webhook_service.config import Settings
from webhook_service.jobs import submit
from webhook_service.audio import PcmFormat, PcmReader, synth_speechlike
from webhook_service.db import session_scope
from webhook_service.gladia.client import GladiaClient
from webhook_service.models import Job
from webhook_service.jobs.sweeper import sweep
from webhook_service.worker.dispatch import CeleryDispatcher, dispatcher_for

AUDIO_S = 6.0


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "webhook_service.cli", "worker", "--concurrency", "4",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def job_row(url: str, job_id: str) -> Job:
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def wait_for(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}; worker log:\n{log.read_text()[-4000:]}")


def test_killed_worker_resumes_on_the_same_session(settings, emulator, tmp_path):
    """With the default STALE_HEARTBEAT_S, SWEEP_INTERVAL_S and HEARTBEAT_INTERVAL_S: the stream resumes
    inside the emulator's reconnect window (30 s, as GLADIA_RECONNECT_WINDOW_S assumes), or its session
    would have ended with the audio unsent."""
    broker = os.environ.get("TEST_REDIS_URL") or "filesystem://"
    defaults = Settings()
    assert defaults.resume_window_problem() is None
    settings = replace(settings, celery_broker_url=broker, gladia_api_url=emulator.url,
                       gladia_api_key=emulator.api_key, stream_speed=1.0,
                       heartbeat_interval_s=defaults.heartbeat_interval_s,
                       stale_heartbeat_s=defaults.stale_heartbeat_s, sweep_interval_s=defaults.sweep_interval_s)
    settings.ensure_dirs()
    env = {**os.environ, "DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir,
           "CELERY_BROKER_URL": broker, "GLADIA_API_URL": emulator.url, "GLADIA_API_KEY": emulator.api_key,
           "STREAM_SPEED": "1", "LOG_LEVEL": "INFO"}
    for name in ("PROMETHEUS_MULTIPROC_DIR", "HEARTBEAT_INTERVAL_S", "STALE_HEARTBEAT_S", "SWEEP_INTERVAL_S"):
        env.pop(name, None)
    audio = synth_speechlike(tmp_path / "call.wav", AUDIO_S, sample_rate=16000, channels=2)
    log = tmp_path / "worker.log"

    first = start_worker(env, log)
    second = None
    try:
        plans = submit.plan(settings, [str(audio)], {})
        [job] = submit.record(settings, plans, "killed", {}).jobs
        job_id = job["id"]
        assert submit.enqueue([job_id], dispatcher_for(settings)) == []

        # Let it stream about a third of the file, then kill the whole worker without warning.
        fmt = PcmFormat(16000, 2, 16)
        wait_for(lambda: job_row(settings.database_url, job_id).bytes_acked >= 2 * fmt.bytes_per_second,
                 40, "the first worker to stream 2 s", log)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        before = job_row(settings.database_url, job_id)
        assert before.state == "streaming" and before.worker_id is not None
        assert before.bytes_acked < before.bytes_total

        # A new worker, and the sweeper re-driving the job once its heartbeat went stale.
        second = start_worker(env, log)

        def beat() -> list[str]:  # what Celery beat does: one sweep every SWEEP_INTERVAL_S
            time.sleep(settings.sweep_interval_s)
            return sweep(settings, dispatcher=CeleryDispatcher()).restarted_stale
        wait_for(beat, 30, "the sweeper to re-drive the job", log)
        after = wait_for(
            lambda: (lambda j: j if j.state == "stream_closed" else None)(job_row(settings.database_url, job_id)),
            60, "the job to finish streaming", log)
    finally:
        stop(first, signal.SIGKILL)
        if second is not None:
            stop(second)

    assert after.gladia_id == before.gladia_id and after.ws_url == before.ws_url  # same session, same socket url
    assert after.attempts == 2
    with PcmReader(audio, fmt) as reader:
        expected = b"".join(reader.chunks(65536))
    assert after.bytes_acked == after.bytes_total == len(expected)
    assert emulator.received_audio(after.gladia_id) == expected  # no gap, no duplicate across the kill
    sessions = GladiaClient(emulator.url, emulator.api_key).list_live(custom_metadata={"job_id": job_id})["items"]
    assert [s["id"] for s in sessions] == [after.gladia_id]


def test_sigterm_hands_streams_back_and_another_worker_resumes(settings, emulator, tmp_path):
    """A deploy's warm shutdown must not wait hours for streams, nor lose them."""
    broker = os.environ.get("TEST_REDIS_URL") or "filesystem://"
    settings = replace(settings, celery_broker_url=broker, gladia_api_url=emulator.url,
                       gladia_api_key=emulator.api_key, stream_speed=1.0, heartbeat_interval_s=0.3)
    settings.ensure_dirs()
    env = {**os.environ, "DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir,
           "CELERY_BROKER_URL": broker, "GLADIA_API_URL": emulator.url, "GLADIA_API_KEY": emulator.api_key,
           "STREAM_SPEED": "1", "HEARTBEAT_INTERVAL_S": "0.3", "LOG_LEVEL": "INFO"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    audio = synth_speechlike(tmp_path / "deploy.wav", AUDIO_S)
    log = tmp_path / "worker.log"
    first = start_worker(env, log)
    second = None
    try:
        [job] = submit.record(settings, submit.plan(settings, [str(audio)], {}), "deploy", {}).jobs
        job_id = job["id"]
        assert submit.enqueue([job_id], dispatcher_for(settings)) == []
        wait_for(lambda: job_row(settings.database_url, job_id).bytes_acked >= 32000, 40, "streaming", log)
        started = time.monotonic()
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(20)
        assert time.monotonic() - started < 15  # did not wait for the stream to end
        handed = job_row(settings.database_url, job_id)
        assert handed.worker_id is None and handed.state == "streaming"
        second = start_worker(env, log)

        def finished():
            # The re-queued task (Redis), or the sweeper's next pass (the filesystem broker may have held the
            # delayed task in the dying worker's memory) resumes the job on the second worker.
            sweep(settings, dispatcher=CeleryDispatcher())
            job = job_row(settings.database_url, job_id)
            return job if job.state == "stream_closed" else None

        after = wait_for(finished, 60, "the job to finish on the second worker", log)
    finally:
        stop(first, signal.SIGKILL)
        if second is not None:
            stop(second)
    assert after.gladia_id == handed.gladia_id and after.attempts == 2
    with PcmReader(audio, PcmFormat()) as reader:
        assert emulator.received_audio(after.gladia_id) == b"".join(reader.chunks(65536))


@pytest.mark.parametrize("standby", [0, 1], ids=["through-the-broker", "on-standby"])
def test_a_freed_slot_wakes_a_waiting_job_without_the_sweeper(settings, emulator, tmp_path, standby):
    """One slot, two files, no sweeper. Without a standby place, the second job's deferred task is due only in
    an hour, so it can only start because the first job's run woke it through the broker when its slot was
    freed; with one, the second run waits on its thread and gets the slot there, from the first run's hand-off
    or its own check of the slots (every 0.1 s; tests/jobs/test_streaming.py checks the hand-off alone)."""
    broker = os.environ.get("TEST_REDIS_URL") or "filesystem://"
    settings = replace(settings, celery_broker_url=broker, gladia_api_url=emulator.url,
                       gladia_api_key=emulator.api_key, stream_speed=4.0, max_concurrent_sessions=1,
                       slot_retry_s=3600.0)
    settings.ensure_dirs()
    env = {**os.environ, "DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir,
           "CELERY_BROKER_URL": broker, "GLADIA_API_URL": emulator.url, "GLADIA_API_KEY": emulator.api_key,
           "STREAM_SPEED": "4", "MAX_CONCURRENT_SESSIONS": "1", "SLOT_RETRY_S": "3600", "LOG_LEVEL": "INFO",
           "SLOT_STANDBY": str(standby)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    files = [str(synth_speechlike(tmp_path / f"clip{i}.wav", 2.0)) for i in range(2)]
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        jobs = [job["id"] for job in submit.record(settings, submit.plan(settings, files, {}), "handoff", {}).jobs]
        assert submit.enqueue(jobs, dispatcher_for(settings)) == []

        def waiting_one():
            rows = [job_row(settings.database_url, job_id) for job_id in jobs]
            if standby:  # claimed by its run, which waits on its thread while the other job holds the slot
                if not any(r.state != "queued" for r in rows):
                    return []  # both runs may still be between their claim and the slot
                return [r for r in rows if r.state == "queued" and r.retry_at is None and r.worker_id is not None]
            return [r for r in rows if r.state == "queued" and r.retry_at is not None and r.worker_id is None]

        [waiting] = wait_for(waiting_one, 40, "one job to wait for the slot", log)
        if not standby:
            assert (waiting.retry_at - waiting.queued_at).total_seconds() > 600  # its own retry is far away
        done = wait_for(
            lambda: all(job_row(settings.database_url, j).state == "stream_closed" for j in jobs),
            60, "both jobs to stream", log)
    finally:
        stop(worker)
    assert done
    first, second = sorted((job_row(settings.database_url, j) for j in jobs), key=lambda j: j.starting_at)
    assert second.id == waiting.id
    assert second.starting_at >= first.stream_closed_at  # one session at a time
    if standby:
        assert "slot handed to job" not in log.read_text()  # not through the broker
        assert second.retry_at is None and second.attempts == 1  # never sent back to the broker
    else:
        assert "slot handed to job " + waiting.id in log.read_text()
