"""Metrics: the database gauges on /metrics, every process kind of a machine added up, the worker's own port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from werkzeug.test import Client

from webhook_service import metrics
from webhook_service.db import session_scope
from webhook_service.models import ConcurrencySlot, InboxItem, Job, utcnow
from webhook_service.worker.metrics_server import metrics_app

def _value(text: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert found, f"{series} not in:\n{text}"
    return float(found.group(1))


def test_metrics_show_the_database_gauges(client, settings):
    with session_scope(settings.database_url) as session:
        session.add_all([Job(id="j-queued", source_path="/a.wav", state="queued"),
                         Job(id="j-streaming", source_path="/b.wav", state="streaming", heartbeat_at=utcnow())])
        session.flush()
        session.add(ConcurrencySlot(slot=0, job_id="j-streaming", acquired_at=utcnow(), expires_at=utcnow().replace(year=2100)))
        session.add(InboxItem(kind="callback", dedupe_key="k1", body=b"{}", headers={}, status="failed"))
    text = client.get("/metrics").get_data(as_text=True)
    assert _value(text, 'webhook_jobs{state="queued"}') == 1
    assert _value(text, 'webhook_jobs{state="streaming"}') == 1
    assert _value(text, 'webhook_jobs{state="reconciled"}') == 0
    assert _value(text, "webhook_slots_in_use") == 1
    assert _value(text, "webhook_slots_limit") == settings.max_concurrent_sessions
    assert _value(text, 'webhook_inbox_rows{status="failed"}') == 1
    assert _value(text, "webhook_jobs_stalled") == 0
    assert _value(text, "webhook_database_up") == 1
    for name in metrics.DATABASE_GAUGES:
        assert f"# TYPE {name} gauge" in text


@pytest.mark.dbless
def test_metrics_still_answer_when_the_database_is_down(tmp_path):
    from webhook_service.config import Settings
    from webhook_service.web import create_app

    down = Settings.from_env(environ={}, data_dir=str(tmp_path), callback_signing_key="k" * 40,
                             database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    app = create_app(down, TESTING=True)
    with app.test_request_context():
        from webhook_service.web.health import prometheus_metrics

        response = prometheus_metrics()
    text = response.get_data(as_text=True)
    assert "webhook_database_up 0.0" in text and "webhook_callbacks_received_total" in text


def _run_with_folder(folder: str, code: str, *args: str) -> str:
    """Python code in a process started with PROMETHEUS_MULTIPROC_DIR set, as the CLI execs gunicorn or Celery."""
    env = {**os.environ, metrics.ENV: folder}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True,
                          timeout=60).stdout


WRITE = ("import sys\nfrom webhook_service import metrics\n"
         "metrics.STREAM_BYTES_SENT.inc(int(sys.argv[1]))\nmetrics.SWEEP_SECONDS.observe(0.2)\n")
READ = ("import sys\nfrom webhook_service import metrics\n"
        "sys.stdout.write(metrics.render(machine_dir=sys.argv[1])[0].decode())\n")


@pytest.mark.dbless
def test_every_process_kind_of_a_machine_is_added_up(tmp_path, monkeypatch):
    base = tmp_path / "metrics"
    monkeypatch.setenv(metrics.ENV, str(tmp_path))  # use_process_dir sets it: restored (unset) after the test
    _run_with_folder(metrics.use_process_dir(str(base), "worker", wipe=True), WRITE, "1000")
    _run_with_folder(metrics.use_process_dir(str(base), "beat", wipe=True), WRITE, "24")
    operator = metrics.use_process_dir(str(base), "web-operator", wipe=False)
    text = _run_with_folder(operator, READ, str(base))
    assert _value(text, "webhook_stream_bytes_sent_total") == 1024
    assert _value(text, "webhook_sweep_seconds_count") == 2
    # Without METRICS_DIR as its parent, a process reads only its own folder.
    alone = _run_with_folder(operator, READ, str(tmp_path / "elsewhere"))
    assert _value(alone, "webhook_stream_bytes_sent_total") == 0

    # A process kind that starts again starts from zero (its folder wiped); the others keep theirs.
    _run_with_folder(metrics.use_process_dir(str(base), "worker", wipe=True), WRITE, "5")
    assert _value(_run_with_folder(operator, READ, str(base)), "webhook_stream_bytes_sent_total") == 29


def test_a_workers_metrics_port_wants_an_operator_token(settings, read_token):
    client = Client(metrics_app(settings))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wso_not-a-token"}).status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {read_token}"})
    assert response.status_code == 200 and b"webhook_stream_bytes_sent_total" in response.data
    assert client.get("/other", headers={"Authorization": f"Bearer {read_token}"}).status_code == 404


@pytest.mark.dbless
def test_beat_serves_its_metrics_port_behind_a_token(tmp_path):
    import requests

    from conftest import free_port, make_operator_token
    from webhook_service.demo import stop_process_groups
    from webhook_service.migrate import upgrade

    database_url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(database_url)
    token = make_operator_token(database_url, "scraper", "read")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in (metrics.ENV, "TEST_DATABASE_URL")}
    env.update(DATA_DIR=str(tmp_path), DATABASE_URL=database_url, CELERY_BROKER_URL="filesystem://")
    beat = subprocess.Popen([sys.executable, "-m", "webhook_service.cli", "beat", "--metrics-port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        for _ in range(300):
            try:
                refused = requests.get(url, timeout=2)
                break
            except requests.ConnectionError:
                assert beat.poll() is None, "beat exited"
                time.sleep(0.1)
        else:
            pytest.fail("beat's metrics port never opened")
        assert refused.status_code == 401 and refused.json()["error"]["status"] == 401
        answer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert answer.status_code == 200 and "webhook_sweeps_total" in answer.text
        assert (tmp_path / "metrics" / "beat").is_dir()  # its own folder of METRICS_DIR
    finally:
        stop_process_groups([beat], 5)
