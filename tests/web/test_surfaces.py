"""`--surface`: the public receiver and the private operator side served by separate processes.

Each surface over a real socket serves its routes and nothing else; then the
Procfile's way, gunicorn with ``WEB_SURFACE`` through ``webhook_service.wsgi``,
started by ``webhook-service web --surface``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]
# Both are POST routes: a GET answers 405 where the route is served, 404 where it is not.
RECEIVER_ONLY = [("GET", "/callbacks/gladia/not-a-token"), ("GET", "/webhooks/gladia")]
OPERATOR_ONLY = [("GET", "/api/sessions"), ("GET", "/api/reports"), ("GET", "/metrics"), ("GET", "/dashboard"),
                 ("GET", "/dashboard/sessions"), ("GET", "/login"), ("GET", "/dashboard/static/dashboard.css")]


def status(base: str, method: str, path: str, token: str) -> int:
    return requests.request(method, base + path, headers={"Authorization": f"Bearer {token}"}, json={},
                            allow_redirects=False, timeout=30).status_code


@pytest.fixture
def surface_server(settings):
    started = []

    def start(surface: str) -> LiveServer:
        from webhook_service.web import create_app

        server = LiveServer(create_app(settings, surface=surface, TESTING=True)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_each_surface_serves_only_its_routes(surface_server, admin_token):
    receiver, operator, both = surface_server("receiver"), surface_server("operator"), surface_server("all")
    for base in (receiver.url, operator.url, both.url):
        assert status(base, "GET", "/healthz", admin_token) == 200
    for method, path in RECEIVER_ONLY:
        assert status(receiver.url, method, path, admin_token) == 405, path
        assert status(both.url, method, path, admin_token) == 405, path
        assert status(operator.url, method, path, admin_token) == 404, path
    for method, path in OPERATOR_ONLY:
        assert status(operator.url, method, path, admin_token) == 200, path
        assert status(both.url, method, path, admin_token) == 200, path
        assert status(receiver.url, method, path, admin_token) == 404, path
    assert status(receiver.url, "GET", "/", admin_token) == 404


def test_a_bad_surface_is_refused(settings):
    from webhook_service.config import ConfigError, Settings
    from webhook_service.web import create_app

    with pytest.raises(ValueError, match="surface"):
        create_app(settings, surface="public")
    with pytest.raises(ConfigError, match="WEB_SURFACE"):
        Settings.from_env(environ={"WEB_SURFACE": "public"})


def wait_until_up(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            requests.get(url + "/healthz", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError("the web process did not start")


@pytest.mark.parametrize("surface, open_path, closed_path", [
    ("receiver", ("GET", "/webhooks/gladia"), ("GET", "/api/sessions")),
    ("operator", ("GET", "/api/sessions"), ("GET", "/callbacks/gladia/not-a-token")),
])
def test_web_command_serves_a_surface_under_gunicorn(settings, admin_token, tmp_path, surface, open_path,
                                                     closed_path):
    port = free_port()
    env = dict(os.environ, DATABASE_URL=settings.database_url, DATA_DIR=str(tmp_path / "data"),
               CELERY_BROKER_URL="memory://", LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    env.pop("WEB_SURFACE", None)
    proc = subprocess.Popen([sys.executable, "-m", "webhook_service.cli", "web", "--surface", surface, "--port",
                             str(port), "--workers", "1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(proc, base)
        assert status(base, *open_path, admin_token) == (405 if surface == "receiver" else 200)
        assert status(base, *closed_path, admin_token) == 404
        anonymous = requests.get(base + "/api/sessions", timeout=10)
        assert anonymous.status_code == (401 if surface == "operator" else 404)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_procfile_splits_the_public_receiver_from_the_operator_side():
    lines = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                 if ":" in line and not line.startswith("#"))
    assert "--surface receiver" in lines["web"] and "--host 127.0.0.1 " in lines["web"]
    assert "--surface operator" in lines["operator"] and "--host 127.0.0.1 " in lines["operator"]
