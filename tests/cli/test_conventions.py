"""Conventions of a command-line service: --version, shell completion, Heroku-style database URLs, the schema's
revisions (db current, history, downgrade)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from webhook_service.cli import cli
from webhook_service.config import Settings
from webhook_service.migrate import heads
from webhook_service.migrate import history as migration_history

pytestmark = pytest.mark.dbless


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("webhook-service, version ")


def test_shell_completion_is_click_s():
    env = {**os.environ, "_WEBHOOK_SERVICE_COMPLETE": "bash_source"}
    done = subprocess.run([sys.executable, "-m", "webhook_service.cli"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "_webhook_service_completion" in done.stdout
    env = {**os.environ, "_WEBHOOK_SERVICE_COMPLETE": "bash_complete", "COMP_WORDS": "webhook-service d",
           "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "webhook_service.cli"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert "plain,db" in done.stdout.splitlines()


@pytest.mark.parametrize("given", ["postgres://svc:pw@db.internal:5432/hooks", "postgresql://svc:pw@db.internal:5432/hooks"])
def test_heroku_style_database_urls_are_normalized(given):
    settings = Settings.from_env(environ={"DATABASE_URL": given, "CALLBACK_SIGNING_KEY": "k" * 40})
    assert settings.database_url == "postgresql+psycopg://svc:pw@db.internal:5432/hooks"
    kept = "postgresql+psycopg://svc:pw@db.internal:5432/hooks"
    assert Settings.from_env(environ={"DATABASE_URL": kept, "CALLBACK_SIGNING_KEY": "k" * 40}).database_url == kept


def test_db_current_history_and_downgrade(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    latest = heads()[0]
    previous = next(parent for revision, parent, _ in migration_history() if revision == latest)

    fresh = runner.invoke(cli, ["db", "current"])
    assert fresh.exit_code == 0 and fresh.stdout.startswith("base (no migration applied")
    assert runner.invoke(cli, ["db", "upgrade", "-q"]).exit_code == 0
    assert runner.invoke(cli, ["db", "current"]).stdout.strip() == f"{latest} (head)"

    history = runner.invoke(cli, ["db", "history"]).stdout.splitlines()
    assert history[0].startswith(f"{previous} -> {latest} (current), ") and history[-1].startswith("<base> -> 0001, ")

    down = runner.invoke(cli, ["db", "downgrade", "-1"])
    assert down.exit_code == 0 and down.stdout.strip().endswith(f"is at revision {previous}")
    assert "behind" in runner.invoke(cli, ["db", "current"]).stdout

    refused = runner.invoke(cli, ["db", "downgrade", "nope"])
    assert refused.exit_code == 2 and "Can't locate revision" in refused.output and "Traceback" not in refused.output
    assert runner.invoke(cli, ["db", "upgrade", "-q"]).exit_code == 0
    assert runner.invoke(cli, ["db", "current"]).stdout.strip() == f"{latest} (head)"
