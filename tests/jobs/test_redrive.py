"""Failed work run again and work cancelled, through `webhook-service retry|cancel`, against the emulator.

The worker's part runs in this process (``run_job``, what the Celery task
calls); the sessions are the emulator's, over real HTTP and WebSocket.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from webhook_service.audio import synth_speechlike
from webhook_service.cli import cli
from webhook_service.db import session_scope
from webhook_service.gladia.client import GladiaClient, GladiaNotFound
from webhook_service.jobs import submit
from webhook_service.jobs.session_detail import session_detail
from webhook_service.jobs.streaming import Deferred, run_job
from webhook_service.models import Job, JobSession, Utterance
from webhook_service.reconcile import reconcile_job


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("redrive-audio")
    synth_speechlike(folder / "short.wav", 1.5)
    synth_speechlike(folder / "long.wav", 6.0)
    return folder


@pytest.fixture
def stream_settings(settings, emulator):
    return replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key, stream_speed=0,
                   heartbeat_interval_s=0.2, stale_heartbeat_s=2.0, reconcile_delay_s=0.0)


def cli_env(settings) -> dict[str, str]:
    return {"DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir, "CELERY_BROKER_URL": "filesystem://",
            "GLADIA_API_URL": settings.gladia_api_url, "GLADIA_API_KEY": settings.gladia_api_key,
            "LOG_LEVEL": "WARNING"}


def invoke(settings, *args: str):
    return CliRunner().invoke(cli, list(args), env=cli_env(settings), catch_exceptions=False)


def make_job(settings, path: Path, batch: str = "redrive") -> str:
    [job] = submit.record(settings, submit.plan(settings, [str(path)], {}), batch, {}).jobs
    return job["id"]


def load(settings, job_id: str) -> Job:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def run(settings, job_id: str) -> str:
    while True:
        try:
            return run_job(settings, job_id)
        except Deferred as exc:
            time.sleep(min(exc.countdown, 0.2))


def broker_tasks(settings) -> list[str]:
    folder = Path(settings.data_dir) / "broker" / "in"
    bodies = [json.loads(p.read_text()) for p in folder.glob("*")] if folder.exists() else []
    return [b["headers"]["argsrepr"] for b in bodies]


def test_a_refused_key_fails_at_once_and_retry_runs_the_job_again_after_the_fix(stream_settings, emulator,
                                                                               audio_dir):
    wrong = replace(stream_settings, gladia_api_key="not-the-key")
    job_id = make_job(wrong, audio_dir / "short.wav")

    assert run_job(wrong, job_id) == "failed"  # no retry: a wrong key stays wrong
    job = load(wrong, job_id)
    assert job.state == "failed" and job.attempts == 1
    assert job.last_error.startswith("GLADIA_API_KEY was refused by Gladia (401: ")
    assert "not-the-key" not in job.last_error

    # After the fix, by the 8-character id `status` shows.
    result = invoke(stream_settings, "retry", job_id[:8])
    assert result.exit_code == 0, result.output
    assert "1 retried, 0 skipped" in result.output and job_id in result.output
    assert any(job_id in args for args in broker_tasks(stream_settings))  # sent to the workers at once
    queued = load(stream_settings, job_id)
    assert (queued.state, queued.retries, queued.attempts, queued.last_error) == ("queued", 1, 0, None)

    assert run(stream_settings, job_id) == "stream_closed"
    emulator.wait_session_done(load(stream_settings, job_id).gladia_id)
    assert reconcile_job(stream_settings, job_id, trigger="cli", settle=False).outcome == "reconciled"
    # It failed before any session existed: no earlier session to keep.
    with session_scope(stream_settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(JobSession)) == 0


def test_retry_refuses_what_it_cannot_do_with_one_line(stream_settings, audio_dir):
    job_id = make_job(stream_settings, audio_dir / "short.wav")
    for args, message in [
        ((), "give exactly one of JOB, --batch B or --failed"),
        (("--failed", job_id), "give exactly one"),
        (("--batch", "b", "--since", "2026-01-01"), "--since goes with --failed"),
        (("--failed", "--since", "yesterday"), "--since must be a date"),
        (("00000000-dead",), "no job with id"),
        (("--batch", "no-such-batch"), "no batch named"),
        ((job_id,), "only a failed job can be retried"),
    ]:
        result = invoke(stream_settings, "retry", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert load(stream_settings, job_id).state == "queued"
    result = invoke(stream_settings, "retry", "--failed", "--since", "2020-01-01")
    assert result.exit_code == 0 and "0 retried, 0 skipped" in result.output


def test_an_incomplete_session_is_rerun_once_and_its_partial_results_replaced_when_the_new_one_settles(
        stream_settings, emulator, emulator_factory, audio_dir):
    capped = emulator_factory(max_session_s=2.0)  # ends every session after 2 s of audio
    first = replace(stream_settings, gladia_api_url=capped.url, gladia_api_key=capped.api_key)
    job_id = make_job(first, audio_dir / "long.wav")

    assert run(first, job_id) == "stream_closed"
    ended = load(first, job_id)
    capped.wait_session_done(ended.gladia_id)
    result = reconcile_job(first, job_id, trigger="cli", settle=False)
    assert result.outcome == "failed" and result.reason.startswith("incomplete")
    with session_scope(first.database_url) as session:
        partial = session.scalar(select(func.count()).select_from(Utterance)
                                 .where(Utterance.gladia_id == ended.gladia_id))
        job = session.get(Job, job_id)
        assert job.state == "queued" and job.retries == 1 and job.retry_at is not None  # the sweeper sends it
        [kept] = session.scalars(select(JobSession)).all()
        assert kept.gladia_id == ended.gladia_id and kept.replaced_by == "auto" and kept.results_deleted_at is None
    assert partial > 0  # kept while the new session runs

    # The new run gets a fresh session (the emulator without the cap), never the ended one.
    assert run(stream_settings, job_id) == "stream_closed"
    rerun = load(stream_settings, job_id)
    assert rerun.gladia_id != ended.gladia_id and rerun.bytes_acked == rerun.bytes_total
    assert emulator.wait_session_done(rerun.gladia_id)["custom_metadata"]["job_id"] == job_id
    assert reconcile_job(stream_settings, job_id, trigger="cli", settle=False).outcome == "reconciled"
    with session_scope(stream_settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Utterance)
                              .where(Utterance.gladia_id == ended.gladia_id)) == 0  # replaced
        assert session.scalar(select(func.count()).select_from(Utterance).where(Utterance.job_id == job_id)) > 0
        assert session.scalars(select(JobSession)).one().results_deleted_at is not None
    [status] = json.loads(invoke(stream_settings, "status", job_id, "--json").output)
    assert status["retries"] == 1 and status["state"] == "reconciled"
    with session_scope(stream_settings.database_url) as session:
        [previous] = session_detail(session, job_id)["previous_sessions"]
    assert previous["gladia_id"] == ended.gladia_id and previous["results_deleted_at"] is not None


def test_cancel_a_queued_job_never_starts_it(stream_settings, audio_dir):
    job_id = make_job(stream_settings, audio_dir / "short.wav", batch="to-cancel")
    result = invoke(stream_settings, "cancel", "--batch", "to-cancel")
    assert result.exit_code == 0 and "1 cancelled, 0 skipped" in result.output
    assert run_job(stream_settings, job_id) == "skipped: job is already failed"
    job = load(stream_settings, job_id)
    assert job.state == "failed" and job.cancelled_at is not None and job.last_error.startswith("cancelled by ")
    assert job.gladia_id is None
    # A cancelled job is left alone by batch-wide retries, and run again when named.
    assert "cancelled (retry it by its id)" in invoke(stream_settings, "retry", "--batch", "to-cancel").output
    assert invoke(stream_settings, "cancel", job_id).output.count("skipped") == 2  # settled: nothing to cancel
    assert invoke(stream_settings, "retry", job_id).exit_code == 0
    assert load(stream_settings, job_id).state == "queued"


def test_cancel_a_streaming_job_sends_stop_recording_and_keeps_the_audio_it_took(stream_settings, emulator,
                                                                                 audio_dir):
    paced = replace(stream_settings, stream_speed=1.0, stale_heartbeat_s=10.0)
    job_id = make_job(paced, audio_dir / "long.wav")
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(run(paced, job_id)))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while load(paced, job_id).bytes_acked < 32000:
            assert worker.is_alive() and time.monotonic() < deadline, f"the job never streamed: {outcome}"
            time.sleep(0.05)
        result = invoke(paced, "cancel", job_id[:8])
    finally:
        worker.join(30)
    assert result.exit_code == 0, result.output
    assert "stop_recording sent" in result.output and "session kept" in result.output
    assert outcome and outcome[0].startswith("skipped")  # the worker let go of it
    job = load(paced, job_id)
    assert job.state == "failed" and job.cancelled_at is not None and job.bytes_acked < job.bytes_total
    client = GladiaClient(emulator.url, emulator.api_key)
    session = emulator.wait_session_done(job.gladia_id)
    assert session["status"] == "done" and job.reconcile_after is not None  # reconciled for its partial text
    assert reconcile_job(paced, job_id, trigger="cli", settle=False).outcome == "failed"
    job = load(paced, job_id)
    assert job.state == "failed" and job.retries == 0 and job.last_error.startswith("cancelled")  # no auto re-run
    assert client.get_live(job.gladia_id)["id"] == job.gladia_id


def test_cancel_deletes_a_session_that_received_no_audio(stream_settings, emulator, audio_dir):
    job_id = make_job(stream_settings, audio_dir / "short.wav")
    client = GladiaClient(emulator.url, emulator.api_key)
    created = client.create_live({"custom_metadata": {"job_id": job_id}})
    with session_scope(stream_settings.database_url) as session:
        job = session.get(Job, job_id)
        job.gladia_id, job.ws_url, job.state = created["id"], created["url"], "streaming"

    result = invoke(stream_settings, "cancel", job_id)

    assert result.exit_code == 0 and "session deleted at Gladia" in result.output, result.output
    with pytest.raises(GladiaNotFound):
        client.get_live(created["id"])
    assert load(stream_settings, job_id).reconcile_after is None


def test_gladia_out_of_reach_is_the_last_error_and_what_the_job_gives_up_with(stream_settings, audio_dir):
    from webhook_service.jobs.streaming import MAX_JOB_ATTEMPTS

    down = replace(stream_settings, gladia_api_url="http://127.0.0.1:9")
    job_id = make_job(down, audio_dir / "short.wav")
    with pytest.raises(Deferred):
        run_job(down, job_id)
    job = load(down, job_id)
    assert job.state == "starting" and job.worker_id is None
    assert "cannot reach http://127.0.0.1:9 (connection refused); check GLADIA_API_URL" in job.last_error
    with session_scope(down.database_url) as session:
        session.get(Job, job_id).attempts = MAX_JOB_ATTEMPTS  # as after that many redeliveries
    assert run_job(down, job_id) == "failed"
    job = load(down, job_id)
    assert job.last_error.startswith(f"gave up after {MAX_JOB_ATTEMPTS} attempts; last error: ")
    assert "cannot reach http://127.0.0.1:9 (connection refused)" in job.last_error and "None" not in job.last_error
