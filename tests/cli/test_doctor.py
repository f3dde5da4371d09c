"""`webhook-service doctor`, its probe route, and what every command says about a database it cannot use."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import TEST_SIGNING_KEY
from webhook_service.cli import cli
from webhook_service.tokens import probe_answer, probe_signature
from webhook_service.migrate import heads


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def env(settings, emulator, live_app) -> dict[str, str]:
    return {"DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir, "CELERY_BROKER_URL": "filesystem://",
            "GLADIA_API_URL": emulator.url, "GLADIA_API_KEY": emulator.api_key, "PUBLIC_BASE_URL": live_app.url,
            "CALLBACK_SIGNING_KEY": TEST_SIGNING_KEY, "LOG_LEVEL": "WARNING",
            "STALE_HEARTBEAT_S": "10", "SWEEP_INTERVAL_S": "5"}


def test_doctor_passes_on_a_working_setup_and_names_the_fix_of_each_failure(env, emulator):
    good = run(env, "doctor", "--json")
    assert good.exit_code == 0, good.output
    checks = {c["name"]: c for c in json.loads(good.stdout)}
    assert all(c["ok"] for c in checks.values()), checks
    assert f"at revision {heads()[0]} (latest)" in checks["database"]["detail"]

    bad = run(dict(env, GLADIA_API_KEY="wrong-key", PUBLIC_BASE_URL=emulator.url, STALE_HEARTBEAT_S="60",
                   SWEEP_INTERVAL_S="30"), "doctor")
    assert bad.exit_code == 1
    lines = bad.output.splitlines()
    assert any(line.startswith("FAIL  gladia") and "GLADIA_API_KEY was refused by Gladia (401: " in line
               for line in lines)
    assert any(line.startswith("FAIL  public_base_url") and "not as this receiver" in line for line in lines)
    assert any(line.startswith("warn  resume_window") and "GLADIA_RECONNECT_WINDOW_S (30 s)" in line
               for line in lines)
    assert sum("fix: " in line for line in lines) == 3 and "wrong-key" not in bad.output

    down = run(dict(env, GLADIA_API_URL="http://127.0.0.1:9", PUBLIC_BASE_URL="http://127.0.0.1:9"), "doctor")
    assert "cannot reach http://127.0.0.1:9 (connection refused); check GLADIA_API_URL" in down.output
    assert "FAIL  public_base_url  http://127.0.0.1:9: connection refused" in down.output


def test_without_callbacks_no_public_url_is_needed(env):
    done = run(dict(env, CALLBACKS="off", PUBLIC_BASE_URL="http://127.0.0.1:9"), "doctor")
    assert done.exit_code == 0, done.output
    assert "ok    public_base_url  not needed: CALLBACKS=off" in done.output


def test_the_probe_route_answers_only_a_fresh_challenge_signed_with_the_key(live_app):
    url = live_app.url + "/healthz/probe"
    nonce, now = "ab" * 16, int(time.time())
    good = {"nonce": nonce, "ts": str(now), "sig": probe_signature(TEST_SIGNING_KEY, nonce, now)}
    answer = requests.get(url, params=good, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"answer": probe_answer(TEST_SIGNING_KEY, nonce)}
    unknown = requests.get(live_app.url + "/no/such/route", timeout=10)
    for params in ({}, dict(good, sig="0" * 64), dict(good, nonce="cd" * 16),
                   dict(good, ts=str(now - 600), sig=probe_signature(TEST_SIGNING_KEY, nonce, now - 600)),
                   dict(good, sig=probe_signature("another key of at least thirty-two bytes", nonce, now))):
        refused = requests.get(url, params=params, timeout=10)
        assert refused.status_code == 404 and refused.json() == unknown.json()  # nothing to tell it apart


def test_a_database_without_the_schema_or_out_of_reach_gets_one_line_and_exit_2(tmp_path):
    base = os.environ.get("TEST_DATABASE_URL", "")
    env = {"DATA_DIR": str(tmp_path / "data"), "CALLBACK_SIGNING_KEY": TEST_SIGNING_KEY, "LOG_LEVEL": "WARNING"}
    empty_name = None
    if base.startswith("postgresql"):
        url = make_url(base)
        empty_name = f"wst_empty_{os.getpid()}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{empty_name}"'))
        empty = url.set(database=empty_name).render_as_string(hide_password=False)
    else:
        empty = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    try:
        for args in (["status"], ["retry", "--failed"], ["report", "daily_usage"], ["token", "list"],
                     ["reconcile", "--pending"]):
            result = run(dict(env, DATABASE_URL=empty), *args)
            assert result.exit_code == 2, (args, result.output)
            assert len(result.output.strip().splitlines()) == 1, result.output
            assert "run `webhook-service db upgrade`" in result.output and "Traceback" not in result.output
        # PostgreSQL down (nothing listens on that port), whichever database the suite runs on.
        unreachable = run(dict(env, DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:9/webhooks"), "status")
        assert unreachable.exit_code == 2 and len(unreachable.output.strip().splitlines()) == 1
        assert "cannot reach the database" in unreachable.output and "check DATABASE_URL" in unreachable.output
    finally:
        if empty_name is not None:
            from webhook_service.db import dispose_engines

            dispose_engines()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{empty_name}" WITH (FORCE)'))
            admin.dispose()


def test_worker_and_beat_warn_at_start_when_a_killed_stream_could_not_be_resumed(monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(os, "execvp", lambda *args: started.append(args))
    # The commands point this process's metrics at their folder; the test's process keeps its own.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(os, "environ", os.environ.copy())
    env = {"DATA_DIR": str(tmp_path), "STALE_HEARTBEAT_S": "60", "SWEEP_INTERVAL_S": "30"}
    for command in ("worker", "beat"):
        result = CliRunner().invoke(cli, [command], env=env, catch_exceptions=False)
        assert result.exit_code == 0
        assert "warning: STALE_HEARTBEAT_S (60) + SWEEP_INTERVAL_S (30) + ~5 s to restart = 95 s" in result.output
    assert len(started) == 2
    quiet = CliRunner().invoke(cli, ["beat"], env={"DATA_DIR": str(tmp_path)}, catch_exceptions=False)
    assert "warning" not in quiet.output
