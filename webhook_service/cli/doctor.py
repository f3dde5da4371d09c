"""`webhook-service doctor`: every dependency checked from here, each with the one line that fixes it.

Checks, in order: the database (reachable, schema at the latest revision), the
broker, Gladia (``GET /v2/live?limit=1`` with the key), that PUBLIC_BASE_URL
reaches this receiver (a challenge signed with CALLBACK_SIGNING_KEY sent to
its public ``/healthz/probe`` route, whose answer proves the same key is
there; not needed with ``CALLBACKS=off``), and that the heartbeat and sweep settings resume a killed stream
inside Gladia's reconnect window. Exit status 1 when a check fails.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import click

from .common import load_settings


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: Optional[str] = None
    warning: bool = False  # not a failure, but worth changing


def check_database(settings) -> Check:
    from alembic.runtime.migration import MigrationContext

    from ..config import redact_url
    from ..db import database_problem, get_engine
    from ..migrate import heads

    logging.getLogger("alembic").setLevel(logging.WARNING)
    where = redact_url(settings.database_url)
    try:
        with get_engine(settings.database_url).connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        problem = database_problem(exc, settings.database_url) or f"{type(exc).__name__}: {_line(exc)}"
        return Check("database", False, problem, "check DATABASE_URL and that the database server is running")
    head = heads()[0]
    if current is None:
        return Check("database", False, f"{where}: no schema", "run `webhook-service db upgrade`")
    if current != head:
        return Check("database", False, f"{where}: at revision {current}, the code expects {head}",
                     "run `webhook-service db upgrade`")
    return Check("database", True, f"{where} at revision {current} (latest)")


def check_broker(settings) -> Check:
    from ..config import redact_url
    from ..web import create_app
    from ..worker.app import celery_init_app

    where = redact_url(settings.celery_broker_url)
    try:
        app = celery_init_app(create_app(settings))
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
    except Exception as exc:  # noqa: BLE001
        return Check("broker", False, f"{where}: {type(exc).__name__}: {_line(exc)}",
                     "check CELERY_BROKER_URL and that the broker (Redis) is running")
    return Check("broker", True, f"{where} accepts connections")


def check_gladia(settings) -> Check:
    from ..gladia.client import GladiaAuthError, GladiaClient, GladiaError, RetryPolicy

    try:
        client = GladiaClient(settings.gladia_api_url, settings.gladia_api_key, timeout_s=10,
                              retry=RetryPolicy(max_attempts=1))
    except ValueError as exc:
        return Check("gladia", False, str(exc), "set GLADIA_API_URL to https://api.gladia.io (or the emulator)")
    try:
        client.list_live(limit=1)
    except GladiaAuthError as exc:
        return Check("gladia", False, exc.key_refused(),
                     "set GLADIA_API_KEY to a key of your Gladia account (app.gladia.io, API keys)")
    except GladiaError as exc:
        return Check("gladia", False, str(exc), "check GLADIA_API_URL and that Gladia (or the emulator) answers")
    finally:
        client.close()
    return Check("gladia", True, f"{settings.gladia_api_url}: GET /v2/live answered with the key")


def check_public_url(settings, get: Optional[Callable] = None) -> Check:
    if not settings.callbacks:
        return Check("public_base_url", True, "not needed: CALLBACKS=off (results come from the sessions' sockets "
                                              "and reconciliation)")
    import requests

    from ..tokens import probe_answer, probe_signature

    nonce = secrets.token_hex(16)
    issued = int(time.time())
    url = settings.public_base_url.rstrip("/") + "/healthz/probe"
    params = {"nonce": nonce, "ts": str(issued),
              "sig": probe_signature(settings.callback_signing_key, nonce, issued)}
    fix_reach = ("start the receiver (`webhook-service web`, or the proxy) at PUBLIC_BASE_URL, or set "
                 "PUBLIC_BASE_URL to the address Gladia reaches it at")
    try:
        response = (get or requests.get)(url, params=params, timeout=10, allow_redirects=False)
    except requests.RequestException as exc:
        reason = ("no answer within 10 s" if isinstance(exc, requests.Timeout)
                  else "connection refused" if "refused" in str(exc) else type(exc).__name__)
        return Check("public_base_url", False, f"{settings.public_base_url}: {reason}", fix_reach)
    try:
        answer = response.json().get("answer") if response.status_code == 200 else None
    except ValueError:
        answer = None
    if answer != probe_answer(settings.callback_signing_key, nonce):
        return Check("public_base_url", False,
                     f"{settings.public_base_url} answered {response.status_code}, not as this receiver",
                     "point PUBLIC_BASE_URL at this service's receiver, running with the same CALLBACK_SIGNING_KEY")
    return Check("public_base_url", True, f"{settings.public_base_url} reaches this receiver (same signing key)")


def check_resume_window(settings) -> Check:
    problem = settings.resume_window_problem()
    if problem:
        return Check("resume_window", False, problem, "set STALE_HEARTBEAT_S=10 and SWEEP_INTERVAL_S=5",
                     warning=True)
    return Check("resume_window", True,
                 f"a killed stream is resumed within {settings.stale_heartbeat_s + settings.sweep_interval_s:g} s "
                 f"(+ restart), inside GLADIA_RECONNECT_WINDOW_S ({settings.gladia_reconnect_window_s:g} s)")


def _line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(as_json: bool) -> None:
    """Check the database, the broker, Gladia and PUBLIC_BASE_URL; say how to fix what fails."""
    settings = load_settings()
    checks = [check(settings) for check in (check_database, check_broker, check_gladia, check_public_url,
                                            check_resume_window)]
    if as_json:
        click.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            mark = "ok  " if c.ok else ("warn" if c.warning else "FAIL")
            click.echo(f"{mark}  {c.name:<16} {c.detail}")
            if c.fix and not c.ok:
                click.echo(f"      {'':<16} fix: {c.fix}")
    if any(not c.ok and not c.warning for c in checks):
        raise SystemExit(1)


COMMANDS = (doctor,)
