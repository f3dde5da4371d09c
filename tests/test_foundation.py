"""Schema, migrations, settings, app factory and CLI basics."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from webhook_service.config import ConfigError, Settings
from webhook_service.db import get_engine, make_engine, session_scope
from webhook_service.migrate import heads
from webhook_service.models import (
    AddonResult,
    Base,
    Batch,
    ConcurrencySlot,
    Event,
    InboxItem,
    Job,
    ReconciliationRun,
    SessionResult,
    Utterance,
    compared_on,
)
from webhook_service.gladia.stream import redact_ws_url
from webhook_service.tokens import callback_token, job_id_from_token

from conftest import TEST_SIGNING_KEY


# ---------------------------------------------------------------- migrations

def test_alembic_has_exactly_one_head():
    assert len(heads()) == 1


# That index exists on PostgreSQL only (models.DIALECT_ONLY); Alembic warns before include_object leaves it out.
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_migrations_match_models(database_url):
    with get_engine(database_url).connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": compared_on(conn.dialect.name)})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


# -------------------------------------------------------------------- models

@pytest.mark.dbless
def test_a_sqlite_transaction_that_cannot_take_the_write_lock_raises_sqlalchemys_error(tmp_path):
    """BEGIN IMMEDIATE runs on the sqlite3 connection itself; a locked database still raises
    SQLAlchemy's OperationalError, which the writers' retry loops catch."""
    import sqlite3

    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")  # as the service's connections have it
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            conn.connection.driver_connection.execute("PRAGMA busy_timeout=0")
            with pytest.raises(OperationalError, match="database is locked"):
                conn.begin()
        holder.execute("ROLLBACK")
        with engine.connect() as conn, conn.begin():  # free again: the write lock is taken
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert holder.execute("SELECT count(*) FROM t").fetchone() == (1,)
    finally:
        engine.dispose()
        holder.close()


def test_job_round_trip_keeps_utc_and_json(settings):
    started = datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(settings.database_url) as s:
        batch = Batch(name="calls-2026-01", session_config={"language_config": {"languages": ["en"]}})
        s.add(batch)
        s.flush()
        s.add(Job(id="job-1", batch_id=batch.id, source_path="/a.wav", starting_at=started,
                  session_config={"sample_rate": 16000}, custom_metadata={"job_id": "job-1"}))
    with session_scope(settings.database_url) as s:
        job = s.get(Job, "job-1")
        assert job.state == "queued"
        assert job.starting_at == started
        assert job.starting_at.tzinfo is not None and job.starting_at.utcoffset() == timedelta(0)
        assert job.session_config == {"sample_rate": 16000}
        assert job.bytes_acked == 0 and job.attempts == 0
        assert s.get(Batch, job.batch_id).session_config["language_config"]["languages"] == ["en"]


def test_job_state_check_constraint(settings):
    with pytest.raises(IntegrityError):
        with session_scope(settings.database_url) as s:
            s.add(Job(id="j", source_path="/x", state="bogus"))


def test_gladia_id_is_unique_across_jobs(settings):
    with session_scope(settings.database_url) as s:
        s.add(Job(id="a", source_path="/a", gladia_id="g-1"))
    with pytest.raises(IntegrityError):
        with session_scope(settings.database_url) as s:
            s.add(Job(id="b", source_path="/b", gladia_id="g-1"))


def test_inbox_dedupe_key_is_unique(settings):
    with session_scope(settings.database_url) as s:
        s.add(InboxItem(dedupe_key="k" * 64, body=b"{}", headers={"a": "b"}))
    with pytest.raises(IntegrityError):
        with session_scope(settings.database_url) as s:
            s.add(InboxItem(dedupe_key="k" * 64, body=b"{}"))
    with session_scope(settings.database_url) as s:
        item = s.scalars(select(InboxItem)).one()
        assert item.body == b"{}" and item.status == "pending" and item.headers == {"a": "b"}


def test_natural_keys_of_results_are_unique(settings):
    url = settings.database_url
    with session_scope(url) as s:
        s.add(Event(gladia_id="g", message_key="m", type="transcript", source="callback", payload={"x": 1}))
        s.add(Utterance(gladia_id="g", utterance_id="00_00000000", start_s=0, end_s=1, text=" hi",
                        source="callback", words=[{"word": " hi"}]))
        s.add(AddonResult(gladia_id="g", kind="summarization", data={"results": "s"}, source="callback"))
    for duplicate in (
        Event(gladia_id="g", message_key="m", type="transcript", source="reconcile", payload={}),
        Utterance(gladia_id="g", utterance_id="00_00000000", start_s=0, end_s=1, text="", source="reconcile"),
        AddonResult(gladia_id="g", kind="summarization", source="reconcile"),
    ):
        with pytest.raises(IntegrityError):
            with session_scope(url) as s:
                s.add(duplicate)


def test_session_result_and_reconciliation_run(settings):
    url = settings.database_url
    with session_scope(url) as s:
        s.add(Job(id="j", source_path="/a", gladia_id="g"))
        s.add(SessionResult(gladia_id="g", job_id="j", languages=["en"], gladia_response={"status": "done"}))
        s.add(ReconciliationRun(job_id="j", gladia_id="g", trigger="cli", outcome="reconciled", missing=2,
                                repaired=2))
    with session_scope(url) as s:
        assert s.get(SessionResult, "g").gladia_response == {"status": "done"}
        run = s.scalars(select(ReconciliationRun)).one()
        assert (run.missing, run.repaired, run.outcome) == (2, 2, "reconciled")


def test_concurrency_slot_numbers_are_exclusive(settings):
    url = settings.database_url
    expires = datetime.now(timezone.utc) + timedelta(minutes=1)
    with session_scope(url) as s:
        s.add_all([Job(id="a", source_path="/a"), Job(id="b", source_path="/b")])
        s.flush()
        s.add(ConcurrencySlot(slot=0, job_id="a", expires_at=expires))
    with pytest.raises(IntegrityError):
        with session_scope(url) as s:
            s.add(ConcurrencySlot(slot=0, job_id="b", expires_at=expires))


@pytest.mark.parametrize(
    "sequence, final",
    [
        (["starting", "streaming", "stream_closed", "processing", "done"], "done"),
        (["done", "processing", "streaming"], "done"),  # late messages never move a job back
        (["streaming", "failed", "streaming"], "failed"),
        (["streaming", "failed", "reconciled"], "reconciled"),
    ],
)
def test_job_advance_moves_forward_only(sequence, final):
    job = Job(id="j", source_path="/a", state="queued")
    for state in sequence:
        job.advance(state)
    assert job.state == final
    for state in sequence:
        assert getattr(job, f"{state}_at") is not None


def test_job_advance_rejects_unknown_state():
    with pytest.raises(ValueError):
        Job(state="queued").advance("nope")


# ------------------------------------------------------------------ settings

def test_settings_defaults_are_embedded(tmp_path):
    s = Settings.from_env(environ={"DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path}/webhook_service.sqlite3"
    assert s.celery_broker_url == "filesystem://"


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"CELERY_BROKER_URL": "kafka://x"}, "CELERY_BROKER_URL"),
        ({"MAX_CONCURRENT_SESSIONS": "many"}, "MAX_CONCURRENT_SESSIONS"),
        ({"MAX_CONCURRENT_SESSIONS": "0"}, "MAX_CONCURRENT_SESSIONS"),
        ({"GLADIA_API_URL": "api.gladia.io"}, "GLADIA_API_URL"),
        ({"STREAM_SPEED": "-1"}, "STREAM_SPEED"),
        ({"CLOSE_MODE": "slam"}, "CLOSE_MODE"),
    ],
)
def test_bad_setting_names_the_variable(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env(environ=env)


def test_database_password_is_redacted_in_errors():
    with pytest.raises(ConfigError) as info:
        Settings.from_env(environ={"DATABASE_URL": "mysql://user:hunter2@db/x"})
    assert "hunter2" not in str(info.value)


# -------------------------------------------------------------------- tokens

def test_callback_token_round_trip_and_tamper():
    token = callback_token("job-1", "key")
    assert job_id_from_token(token, "key") == "job-1"
    assert job_id_from_token(token, "other-key") is None
    assert job_id_from_token("job-2" + token[5:], "key") is None
    assert job_id_from_token("garbage", "key") is None
    assert job_id_from_token("", "key") is None


def test_ws_url_is_redacted():
    url = "wss://api.gladia.io/v2/live?token=4a39145c-2844-4557-8f34-34883f7be7d9"
    shown = redact_ws_url(url)
    assert "34883f7be7d9" not in shown and shown.startswith("wss://api.gladia.io/v2/live?token=4a39")


# ------------------------------------------------------------------- web app

def test_healthz_checks_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_reports_unreachable_database(tmp_path):
    from webhook_service.web import create_app

    bad = Settings.from_env(environ={}, data_dir=str(tmp_path), callback_signing_key=TEST_SIGNING_KEY,
                            database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    response = create_app(bad, TESTING=True).test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"


def test_metrics_exposition(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert b"webhook_callbacks_received_total" in response.data


def test_error_bodies_are_json(app, client):
    @app.post("/_boom")
    def boom():
        raise RuntimeError("secret detail")

    @app.post("/_limited")
    def limited():
        from flask import request
        return {"n": len(request.get_data())}

    not_found = client.get("/no/such/page")
    assert not_found.status_code == 404 and not_found.get_json()["error"]["status"] == 404
    wrong_method = client.delete("/healthz")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"]["status"] == 405
    assert "GET" in wrong_method.headers["Allow"]
    too_big = client.post("/_limited", data=b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1))
    assert too_big.status_code == 413 and too_big.get_json()["error"]["status"] == 413
    crash = client.post("/_boom")
    assert crash.status_code == 500
    assert crash.get_json() == {"error": {"status": 500, "message": "internal server error"}}


# ----------------------------------------------------------------------- CLI

def _cli(*args, env=None):
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "webhook_service.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=60)


def test_cli_help_lists_the_commands():
    result = _cli("--help")
    assert result.returncode == 0
    for command in ("db", "web", "worker", "status"):
        assert command in result.stdout


def test_cli_bad_setting_is_a_clear_error(tmp_path):
    result = _cli("status", env={"DATABASE_URL": "mysql://x", "DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_db_upgrade_creates_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path}/fresh.sqlite3"
    result = _cli("db", "upgrade", env={"DATABASE_URL": url, "DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    from sqlalchemy import create_engine, inspect

    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"jobs", "callback_inbox", "events", "utterances", "reconciliation_runs"} <= tables


def test_cli_status_unknown_job(settings):
    result = _cli("status", "no-such-job", env={"DATABASE_URL": settings.database_url,
                                                "DATA_DIR": settings.data_dir})
    assert result.returncode == 2
    assert "no job or batch" in result.stderr


def test_cli_status_json_shows_progress_and_heartbeat(settings):
    import json

    beat = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    with session_scope(settings.database_url) as s:
        s.add(Job(id="job-h", source_path="/calls/a.wav", state="streaming", bytes_total=1000,
                  bytes_acked=250, heartbeat_at=beat, worker_id="host:42"))
    result = _cli("status", "job-h", "--json", env={"DATABASE_URL": settings.database_url,
                                                    "DATA_DIR": settings.data_dir})
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["state"], row["bytes_acked"], row["bytes_total"]) == ("streaming", 250, 1000)
    assert row["heartbeat_at"] == beat.isoformat() and row["worker_id"] == "host:42"


def test_cli_status_shows_when_a_deferred_job_is_due(settings):
    import json

    due = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    with session_scope(settings.database_url) as s:
        s.add(Job(id="job-d", source_path="/calls/d.wav", state="queued", retry_at=due))
    env = {"DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir}
    (row,) = json.loads(_cli("status", "job-d", "--json", env=env).stdout)
    assert row["retry_at"] == due.isoformat()
    table = _cli("status", "job-d", env={**env, "COLUMNS": "200"})
    assert table.returncode == 0 and "queued (retry 05:06:07)" in table.stdout


@pytest.mark.dbless
def test_pool_settings_size_the_postgresql_pools(monkeypatch):
    from webhook_service import db

    settings = Settings.from_env(environ={"DB_POOL_SIZE": "3", "DB_MAX_OVERFLOW": "2"})
    assert (settings.db_pool_size, settings.db_max_overflow) == (3, 2)
    monkeypatch.setattr(db, "_pool", dict(db._pool))
    db.configure_pool(settings.db_pool_size, settings.db_max_overflow)
    engine = db.make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # no connection is made
    try:
        assert (engine.pool.size(), engine.pool._max_overflow) == (3, 2)
    finally:
        engine.dispose()
    with pytest.raises(ConfigError, match="DB_POOL_SIZE must be >= 1"):
        Settings.from_env(environ={"DB_POOL_SIZE": "0"})
