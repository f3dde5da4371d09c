"""Operator tokens: the `token` commands on the real database, and what the store keeps of a token."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from webhook_service.auth import create_token, verify_token
from webhook_service.cli import cli
from webhook_service.config import ConfigError, Settings
from webhook_service.db import session_scope
from webhook_service.models import OperatorToken, utcnow


@pytest.fixture
def run(settings):
    """``run(*args)`` -> the `webhook-service` CliRunner result against the test database."""
    env = {"DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir, "CELERY_BROKER_URL": "memory://"}

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


def rows(settings) -> list[tuple]:
    with session_scope(settings.database_url) as s:
        return [(t.name, t.scope, t.revoked_at is not None, t.expires_at is not None)
                for t in s.scalars(select(OperatorToken).order_by(OperatorToken.id))]


def test_create_prints_the_token_last_and_stores_only_its_hash(run, settings):
    result = run("token", "create", "--name", "grafana", "--scope", "read", "--expires", "30")
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    assert secret.startswith("wso_") and len(secret) >= 40
    with session_scope(settings.database_url) as s:
        row = s.scalars(select(OperatorToken)).one()
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr(vars(row))
        assert timedelta(days=29) < row.expires_at - utcnow() <= timedelta(days=30)
        operator = verify_token(s, secret)
        assert (operator.name, operator.scope) == ("grafana", "read")
    listing = run("token", "list")
    assert listing.exit_code == 0 and "grafana" in listing.output and "active" in listing.output
    assert secret not in listing.output and secret[4:20] not in listing.output


def test_revoke_stops_the_token_and_frees_its_name(run, settings):
    first = run("token", "create", "--name", "ci", "--scope", "admin").output.strip().splitlines()[-1]
    assert run("token", "revoke", "ci").exit_code == 0
    with session_scope(settings.database_url) as s:
        assert verify_token(s, first) is None
    again = run("token", "create", "--name", "ci")
    assert again.exit_code == 0
    assert rows(settings) == [("ci", "admin", True, False), ("ci", "read", False, False)]
    listing = run("token", "list").output
    assert "revoked" in listing and "active" in listing


@pytest.mark.parametrize("args, message", [
    (("token", "create", "--name", "taken"), "is in force"),
    (("token", "create", "--name", "x", "--scope", "root"), "scope must be one of read, admin"),
    (("token", "create", "--name", "x", "--expires", "0"), "between 1 and"),
    (("token", "create", "--name", "x", "--expires", "-3"), "between 1 and"),
    (("token", "create", "--name", "  "), "1 to 100 printable characters"),
    (("token", "revoke", "ghost"), "no token in force named 'ghost'"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(run, settings, args, message):
    assert run("token", "create", "--name", "taken").exit_code == 0
    before = rows(settings)
    result = run(*args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert rows(settings) == before


def test_expired_and_unknown_tokens_verify_to_nobody(settings):
    with session_scope(settings.database_url) as s:
        _, secret = create_token(s, "short", "admin", expires_days=1)
    with session_scope(settings.database_url) as s:
        assert verify_token(s, secret) is not None
        assert verify_token(s, secret, now=utcnow() + timedelta(days=1, seconds=1)) is None
        assert verify_token(s, secret + "x") is None
        assert verify_token(s, "") is None
        assert verify_token(s, "wso_" + "x" * 500) is None


@pytest.mark.dbless
@pytest.mark.parametrize("environ, variable", [
    ({"TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES"),
    ({"TRUSTED_PROXIES": "127.0.0.1, proxy.internal"}, "TRUSTED_PROXIES"),
    ({"TRUSTED_PROXY_AUTH_HEADER": "X Forwarded User"}, "TRUSTED_PROXY_AUTH_HEADER"),
    ({"TRUSTED_PROXY_SCOPE": "root"}, "TRUSTED_PROXY_SCOPE"),
    ({"WEB_SURFACE": "public"}, "WEB_SURFACE"),
])
def test_bad_operator_settings_stop_at_start(environ, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(environ=environ)


@pytest.mark.dbless
def test_trusted_proxies_accept_ips_and_cidrs():
    settings = Settings.from_env(environ={"TRUSTED_PROXIES": "127.0.0.1, 10.8.0.0/16, ::1"})
    assert [str(n) for n in settings.trusted_proxy_networks] == ["127.0.0.1/32", "10.8.0.0/16", "::1/128"]
