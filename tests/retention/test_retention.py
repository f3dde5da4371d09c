"""Retention and deletion as operators run them: `purge --dry-run`, `purge`, the sweeper's bounded batches,
`delete` against a real Gladia session (the emulator), and reports that keep their aggregates."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from sessions_fixture import A, B, C, D, load, utterance
from webhook_service import reports
from webhook_service.audio import synth_speechlike
from webhook_service.cli import cli
from webhook_service.db import session_scope
from webhook_service.gladia.client import GladiaClient, GladiaNotFound
from webhook_service.jobs import submit
from webhook_service.jobs.streaming import run_job
from webhook_service.jobs.sweeper import sweep
from webhook_service.models import DeletionAudit, Event, InboxItem, Job, SessionResult, Utterance, utcnow
from webhook_service.reconcile import reconcile_job
from webhook_service.retention import policy as purge_module

E = "eeeeeeee-0000-4000-8000-000000000005"


def cli_env(settings, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir, "CELERY_BROKER_URL": "memory://",
            "LOG_LEVEL": "WARNING", "GLADIA_API_URL": settings.gladia_api_url,
            "GLADIA_API_KEY": settings.gladia_api_key, **extra}


def run(env, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), env=env, input=input)


def rows(settings, model, *where) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def usage(settings) -> list[dict]:
    return reports.run_report(settings.database_url, "daily_usage").rows


@pytest.fixture
def stored(settings):
    """The fixtures (settled in March), a session reconciled just now, and old callback requests."""
    load(settings.database_url)
    old = utcnow() - timedelta(days=60)
    with session_scope(settings.database_url) as s:
        s.add(Job(id=E, source_path="/audio/new.wav", state="reconciled", gladia_id="g-eee", reconciled_at=utcnow(),
                  audio_duration_s=3.0, audio_channels=1))
        s.flush()
        s.add_all([utterance(E, "g-eee", "00_1", 0, 0.0, "Fresh words"),
                   InboxItem(dedupe_key="u" * 64, status="processed", body=b'{"unmatched": 1}', received_at=old),
                   InboxItem(dedupe_key="p" * 64, status="pending", body=b'{"pending": 1}', received_at=old)])
    return settings


def test_purge_dry_run_says_what_would_go_then_purge_keeps_the_reports(stored):
    env = cli_env(stored, RETENTION_DAYS="30", INBOX_RETENTION_DAYS="7")
    before = usage(stored)
    dry = run(env, "purge", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "transcripts and results of 4 settled sessions" in dry.output and "RETENTION_DAYS=30" in dry.output
    assert "raw bodies of 2 callback requests" in dry.output  # A's and the unmatched one; not the pending one
    assert "GLADIA_DELETE_AFTER_RECONCILE=off" in dry.output
    assert rows(stored, Utterance) == 7 and rows(stored, DeletionAudit) == 0  # a dry run changes nothing

    done = run(env, "purge")
    assert done.exit_code == 0, done.output
    assert "of 4 sessions, the raw bodies of 1 callback requests" in done.output
    assert rows(stored, Utterance) == 1 and rows(stored, Utterance, Utterance.job_id == E) == 1
    assert rows(stored, Event) == 0 and rows(stored, InboxItem) == 2  # A's request went with A
    with session_scope(stored.database_url) as s:
        bodies = dict(s.execute(select(InboxItem.status, InboxItem.body)).all())
        assert bodies == {"processed": b"", "pending": b'{"pending": 1}'}
        result = s.get(SessionResult, "g-aaa")
        assert result.full_transcript is None and result.gladia_response is None and result.billing_time_s == 40.0
        assert sorted(s.scalars(select(Job.id).where(Job.content_deleted_at.is_not(None)))) == [A, B, C, D]
        assert sorted(s.scalars(select(DeletionAudit.action))) == ["inbox_retention"] + ["retention"] * 4
    # Usage and billing still count the erased sessions: utterances, words, speech, audio and billed hours.
    assert usage(stored) == before
    assert reports.run_report(stored.database_url, "daily_usage").rows[0]["utterances"] == 4  # A: 3 finals, B: 1
    assert "0 settled sessions" in run(env, "purge", "--dry-run").output
    # Reconciling an erased session never fetches it back from Gladia.
    skipped = reconcile_job(stored, A, trigger="cli", fetch=lambda gladia_id: pytest.fail("fetched"))
    assert (skipped.outcome, skipped.reason) == ("skipped", "content deleted") and rows(stored, Event) == 0
    gone = run(env, "transcript", A)
    assert gone.exit_code == 2 and "was deleted" in gone.output


def test_zero_days_keeps_forever(stored):
    dry = run(cli_env(stored, RETENTION_DAYS="0", INBOX_RETENTION_DAYS="0"), "purge", "--dry-run")
    assert "kept forever" in dry.output and "RETENTION_DAYS=0" in dry.output
    assert run(cli_env(stored, RETENTION_DAYS="-1"), "purge").exit_code == 2


def test_deleting_a_job_before_it_settled_fails_it(stored):
    with session_scope(stored.database_url) as s:
        s.add(Job(id="ffffffff-0000-4000-8000-00000000000f", source_path="/audio/waiting.wav", state="queued"))
    done = run(cli_env(stored), "delete", "ffffffff", "--yes")
    assert done.exit_code == 0, done.output
    assert "(Gladia session -: no Gladia session)" in done.output
    with session_scope(stored.database_url) as s:
        job = s.get(Job, "ffffffff-0000-4000-8000-00000000000f")
        assert (job.state, job.last_error, job.source_path) == ("failed", "deleted by cli before it settled",
                                                                "(deleted)")
        assert s.scalars(select(DeletionAudit.gladia)).one() == "no Gladia session"


class NoTasks:
    def reconcile(self, job_id: str, trigger: str) -> None:
        raise AssertionError("no task expected")

    def stream(self, job_id: str, resume: bool) -> None:
        raise AssertionError("no task expected")


def test_the_sweeper_erases_one_bounded_batch_per_sweep(stored, monkeypatch):
    monkeypatch.setattr(purge_module, "JOB_BATCH", 3)
    conf = replace(stored, retention_days=30, inbox_retention_days=0)
    assert sweep(conf, dispatcher=NoTasks()).retention["sessions"] == 3
    assert rows(stored, Job, Job.content_deleted_at.is_not(None)) == 3
    assert sweep(conf, dispatcher=NoTasks()).retention["sessions"] == 1
    assert sweep(conf, dispatcher=NoTasks()).retention.get("sessions", 0) == 0
    assert rows(stored, Job, Job.content_deleted_at.is_not(None)) == 4


# ------------------------------------------------------------------ against a real Gladia session


@pytest.fixture
def live(settings, emulator, tmp_path):
    """One short file streamed into the emulator, its session finished and reconciled."""
    conf = replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key, stream_speed=0.0,
                   reconcile_delay_s=0.0)
    audio = synth_speechlike(tmp_path / "hello.wav", 1.5)
    plans = submit.plan(conf, [str(audio)], {})
    [job] = submit.record(conf, plans, "live", {}).jobs
    run_job(conf, job["id"])
    with session_scope(conf.database_url) as s:
        gladia_id = s.get(Job, job["id"]).gladia_id
    emulator.wait_session_done(gladia_id)
    reconcile_job(conf, job["id"], trigger="cli")
    return conf, job["id"], gladia_id


def gladia_has(conf, gladia_id: str) -> bool:
    client = GladiaClient.from_settings(conf)
    try:
        client.get_live(gladia_id)
        return True
    except GladiaNotFound:
        return False
    finally:
        client.close()


def test_delete_erases_here_and_at_gladia_after_confirmation(live):
    conf, job_id, gladia_id = live
    env = cli_env(conf)
    assert rows(conf, Event, Event.job_id == job_id) > 0 and gladia_has(conf, gladia_id)
    before = usage(conf)
    declined = run(env, "delete", job_id[:8], input="n\n")
    assert declined.exit_code == 1 and "Erase job" in declined.output and "hello.wav" in declined.output
    assert gladia_has(conf, gladia_id) and rows(conf, Event, Event.job_id == job_id) > 0

    done = run(env, "delete", gladia_id, "--yes")
    assert done.exit_code == 0, done.output
    assert f"deleted job {job_id}" in done.output and f"{gladia_id}: deleted)" in done.output
    assert not gladia_has(conf, gladia_id)
    assert rows(conf, Event, Event.job_id == job_id) == 0 and rows(conf, InboxItem, InboxItem.job_id == job_id) == 0
    with session_scope(conf.database_url) as s:
        audit = s.scalars(select(DeletionAudit)).one()
        assert (audit.actor, audit.gladia, audit.job_id) == ("cli", "deleted", job_id)
        assert audit.rows["events"] > 0 and "text" not in str(audit.rows)
    assert usage(conf) == before
    unknown = run(env, "delete", "no-such-session", "--yes")
    assert unknown.exit_code == 2 and "no session or job" in unknown.output and "Traceback" not in unknown.output


def test_gladia_delete_after_reconcile(live):
    conf, job_id, gladia_id = live
    off = purge_module.purge(conf)
    assert off.gladia_deleted == [] and gladia_has(conf, gladia_id)
    on = replace(conf, gladia_delete_after_reconcile=True)
    assert purge_module.plan(on).gladia_sessions == 1
    assert purge_module.purge(on).gladia_deleted == [gladia_id]
    assert not gladia_has(conf, gladia_id)
    assert purge_module.plan(on).gladia_sessions == 0
    assert rows(conf, Event, Event.job_id == job_id) > 0  # the transcript here is RETENTION_DAYS' business
    with session_scope(conf.database_url) as s:
        assert s.scalars(select(DeletionAudit.action)).one() == "gladia_after_reconcile"
