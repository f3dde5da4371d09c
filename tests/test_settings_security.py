"""Safe start and secret-free settings: what the service refuses to run with, and what it never prints.

The development signing key is in the source: anyone can sign a callback with
it. It is accepted only where nobody else reaches the receiver (the embedded
SQLite and a loopback ``PUBLIC_BASE_URL``); anywhere else every entry point
(the CLI, the WSGI app, the Celery app) refuses to start and names the setting.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from webhook_service.config import DEV_SIGNING_KEY, ConfigError, Settings

pytestmark = pytest.mark.dbless  # settings only: the PostgreSQL URLs here are never connected to
ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+psycopg://service:pg-hunter2@db.internal:5432/webhooks"
PUBLIC_HTTPS = "https://hooks.example.com"
STRONG = secrets.token_urlsafe(48)


def production(**env: str) -> dict[str, str]:
    return {"DATABASE_URL": PG_URL, "PUBLIC_BASE_URL": PUBLIC_HTTPS, **env}


# ------------------------------------------------------------------ safe start

def test_development_key_is_refused_in_production():
    with pytest.raises(ConfigError, match="CALLBACK_SIGNING_KEY is the development default"):
        Settings.from_env(environ=production())
    with pytest.raises(ConfigError, match="CALLBACK_SIGNING_KEY is the development default"):
        Settings.from_env(environ=production(CALLBACK_SIGNING_KEY=DEV_SIGNING_KEY))


def test_short_key_is_refused_in_production():
    with pytest.raises(ConfigError, match="CALLBACK_SIGNING_KEY is shorter than 32 bytes"):
        Settings.from_env(environ=production(CALLBACK_SIGNING_KEY="x" * 31))


def test_strong_key_starts_in_production():
    settings = Settings.from_env(environ=production(CALLBACK_SIGNING_KEY=STRONG))
    assert settings.callback_signing_key == STRONG
    assert Settings.from_env(environ=production(CALLBACK_SIGNING_KEY="k" * 32)).callback_signing_key == "k" * 32


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000",
                                      "http://127.8.9.10"])
def test_embedded_loopback_setup_keeps_the_development_key(tmp_path, base_url):
    settings = Settings.from_env(environ={"DATA_DIR": str(tmp_path), "PUBLIC_BASE_URL": base_url})
    assert settings.callback_signing_key == DEV_SIGNING_KEY
    assert settings.is_embedded_loopback


@pytest.mark.parametrize("env", [
    {"DATABASE_URL": PG_URL},  # PostgreSQL, even behind a loopback base URL
    {"PUBLIC_BASE_URL": PUBLIC_HTTPS},  # SQLite, but reachable from outside
    {"PUBLIC_BASE_URL": "http://10.0.0.5:8000"},
    {"PUBLIC_BASE_URL": "http://localhost.example.com"},
])
def test_development_key_needs_both_sqlite_and_loopback(tmp_path, env):
    with pytest.raises(ConfigError, match="CALLBACK_SIGNING_KEY"):
        Settings.from_env(environ={"DATA_DIR": str(tmp_path), **env})


def test_previous_keys_are_held_to_the_same_rule():
    env = production(CALLBACK_SIGNING_KEY=STRONG, CALLBACK_SIGNING_KEYS_PREVIOUS=f"{'p' * 40}, {DEV_SIGNING_KEY}")
    with pytest.raises(ConfigError, match="CALLBACK_SIGNING_KEYS_PREVIOUS is the development default"):
        Settings.from_env(environ=env)
    with pytest.raises(ConfigError, match="CALLBACK_SIGNING_KEYS_PREVIOUS is shorter"):
        Settings.from_env(environ=production(CALLBACK_SIGNING_KEY=STRONG, CALLBACK_SIGNING_KEYS_PREVIOUS="old"))
    old = secrets.token_urlsafe(48)
    settings = Settings.from_env(environ=production(CALLBACK_SIGNING_KEY=STRONG,
                                                    CALLBACK_SIGNING_KEYS_PREVIOUS=f" {old} ,, "))
    assert settings.callback_signing_keys_previous == (old,)
    assert settings.callback_verification_keys == (STRONG, old)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PROMETHEUS_"))}
    full.pop("CALLBACK_SIGNING_KEY", None)
    full.update(env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("command", [["status"], ["db", "upgrade"], ["web", "--port", "1"], ["worker"], ["beat"],
                                     ["submit", "nothing.wav"], ["report", "daily_usage"]])
def test_cli_refuses_the_development_key_with_exit_2(tmp_path, command):
    result = _run(["-m", "webhook_service.cli", *command], production(DATA_DIR=str(tmp_path)))
    assert result.returncode == 2, result.stderr
    assert "CALLBACK_SIGNING_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "pg-hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize("module", ["webhook_service.wsgi", "webhook_service.worker.celery_app"])
def test_wsgi_and_celery_apps_refuse_the_development_key(tmp_path, module):
    result = _run(["-c", f"import {module}"], production(DATA_DIR=str(tmp_path)))
    assert result.returncode != 0
    assert "CALLBACK_SIGNING_KEY is the development default" in result.stderr
    started = _run(["-c", f"import {module}"], production(DATA_DIR=str(tmp_path), CALLBACK_SIGNING_KEY=STRONG))
    assert started.returncode == 0, started.stderr


# ------------------------------------------------------------ the Gladia API URL

@pytest.mark.parametrize("url", ["http://api.gladia.io", "http://10.1.2.3:8765", "ftp://api.gladia.io"])
def test_gladia_api_url_must_be_https_unless_loopback(tmp_path, url):
    with pytest.raises(ConfigError, match="GLADIA_API_URL"):
        Settings.from_env(environ={"DATA_DIR": str(tmp_path), "GLADIA_API_URL": url})


@pytest.mark.parametrize("url", ["https://api.gladia.io", "http://127.0.0.1:8765", "http://localhost:1"])
def test_gladia_api_url_https_or_loopback_is_accepted(tmp_path, url):
    assert Settings.from_env(environ={"DATA_DIR": str(tmp_path), "GLADIA_API_URL": url}).gladia_api_url == url


# ---------------------------------------------------------- repr and str mask

SECRETS = {
    "GLADIA_API_KEY": "gk-" + secrets.token_hex(16),
    "CALLBACK_SIGNING_KEY": "cs-" + secrets.token_urlsafe(40),
    "CALLBACK_SIGNING_KEYS_PREVIOUS": "pv-" + secrets.token_urlsafe(40) + ",pw-" + secrets.token_urlsafe(40),
    "GLADIA_WEBHOOK_SECRET": "whsec_" + "c2VjcmV0LXdlYmhvb2stc2lnbmluZy1rZXktMTIzNDU2",
}


def _secret_texts() -> list[str]:
    texts = [v for k, v in SECRETS.items() if k != "CALLBACK_SIGNING_KEYS_PREVIOUS"]
    texts += SECRETS["CALLBACK_SIGNING_KEYS_PREVIOUS"].split(",")
    texts.append(SECRETS["GLADIA_WEBHOOK_SECRET"].removeprefix("whsec_"))
    return texts + ["pg-hunter2", "redis-pw-42", "qs-pw-77"]


def test_repr_and_str_mask_every_secret():
    settings = Settings.from_env(environ=production(
        CELERY_BROKER_URL="redis://:redis-pw-42@cache.internal:6379/0",
        **SECRETS,
    ))
    for shown in (repr(settings), str(settings), f"{settings}", repr([settings])):
        for secret in _secret_texts():
            assert secret not in shown
        assert "gladia_api_key='***'" in shown
        assert "callback_signing_key='***'" in shown
        assert "callback_signing_keys_previous=('***', '***')" in shown
        assert "gladia_webhook_secret='***'" in shown
        assert "postgresql+psycopg://service:***@db.internal:5432/webhooks" in shown
        assert "redis://:***@cache.internal:6379/0" in shown
        assert "public_base_url='https://hooks.example.com'" in shown  # what is not a secret stays readable


def test_password_in_a_url_query_is_masked():
    url = "postgresql+psycopg://db.internal/webhooks?user=svc&password=qs-pw-77&sslmode=require"
    settings = Settings.from_env(environ=production(DATABASE_URL=url, CALLBACK_SIGNING_KEY=STRONG))
    assert "qs-pw-77" not in repr(settings)
    assert "password=***" in repr(settings) and "sslmode=require" in repr(settings)


def test_settings_logged_at_start_carry_no_secret(caplog):
    settings = Settings.from_env(environ=production(**SECRETS))
    with caplog.at_level(logging.INFO):
        logging.getLogger("webhook_service.test").info("starting with %s", settings)
        logging.getLogger("webhook_service.test").info("starting with %r", settings)
    for secret in _secret_texts():
        assert secret not in caplog.text
    assert "Settings(" in caplog.text
