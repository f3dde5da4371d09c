"""`webhook-service up`: the Procfile's processes under honcho, with the emulator, until Ctrl-C.

One run on the embedded defaults in a private folder: it must come up (the
migration once, then every Procfile line), print how to sign in, take a file
from `submit` to `reconciled`, show in the operator side's /metrics what the
receiver, the worker and beat did (one multiprocess folder per process kind,
added up) and the database gauges, then stop every process on SIGINT and
exit 0.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from webhook_service.demo import ROOT, free_port, stop_process_groups

SAMPLE = ROOT / "samples" / "voicemail.mp3"


def _reader(stream, lines: "queue.Queue[str]") -> None:
    for line in stream:
        lines.put(line)
    lines.put("")


def _read_until(lines: "queue.Queue[str]", seen: list[str], pattern: str, timeout_s: float) -> re.Match:
    """Read output lines until one matches ``pattern`` (fails with the output so far on EOF or timeout)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line == "":
            break
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"no line matching {pattern!r}:\n" + "".join(seen[-60:]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _sample(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.dbless
@pytest.mark.slow
def test_up_runs_the_procfile_takes_a_file_and_stops_cleanly(tmp_path):
    port, operator_port, emulator_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("TEST_DATABASE_URL", "DATABASE_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(DATA_DIR=str(tmp_path / "data"), RECEIVER_PORT=str(free_port()), STREAM_SPEED="0",
               RECONCILE_DELAY_S="1", SWEEP_INTERVAL_S="1", WEB_CONCURRENCY="1", WORKER_CONCURRENCY="4",
               PYTHONUNBUFFERED="1")
    up = subprocess.Popen(
        [sys.executable, "-m", "webhook_service.cli", "up", "--port", str(port), "--operator-port",
         str(operator_port), "--emulator-port", str(emulator_port), "--engine", "vad"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=_reader, args=(up.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        _read_until(lines, seen, r"webhook-service is up", 90)
        dashboard = _read_until(lines, seen, r"dashboard\s+(http://\S+)", 5).group(1)
        token = _read_until(lines, seen, r"^\s+(wso_\S+)\s*$", 5).group(1)
        assert dashboard == f"http://127.0.0.1:{operator_port}/dashboard"
        started = [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", "".join(seen))]
        assert len(started) == 6, "".join(seen)  # proxy, web, operator, worker, beat, emulator
        headers = {"Authorization": f"Bearer {token}"}
        operator = f"http://127.0.0.1:{operator_port}"

        submitted = subprocess.run(
            [sys.executable, "-m", "webhook_service.cli", "submit", str(SAMPLE), "--wait", "--until", "reconciled",
             "--timeout", "90", "--json"],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr + "".join(seen[-40:])

        sessions = requests.get(f"{operator}/api/sessions", headers=headers, timeout=10)
        assert sessions.status_code == 200 and [s["state"] for s in sessions.json()["items"]] == ["reconciled"]
        assert requests.get(f"{operator}/metrics", timeout=10).status_code == 401
        text = requests.get(f"{operator}/metrics", headers=headers, timeout=10).text
        # the receiver's processes, the worker's and beat's, added up by the operator side
        assert _sample(text, "webhook_callbacks_received_total", '{event="live.end_session"}') >= 1, text
        assert _sample(text, "webhook_stream_bytes_sent_total") > 0, text
        assert _sample(text, "webhook_stream_sessions_total", '{how="created"}') == 1, text
        assert _sample(text, "webhook_stream_ack_seconds_count") > 0, text
        assert _sample(text, "webhook_reconciliations_total", '{outcome="reconciled"}') == 1, text
        assert _sample(text, "webhook_sweeps_total") >= 1, text
        # the gauges, from the database
        assert _sample(text, "webhook_jobs", '{state="reconciled"}') == 1, text
        assert _sample(text, "webhook_database_up") == 1, text
        assert "webhook_slots_in_use" in text and 'webhook_inbox_rows{status="failed"} 0.0' in text

        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0, "".join(seen[-40:])
        while lines.get(timeout=5) != "":
            pass
        assert not [pid for pid in started if _alive(pid)]
    finally:
        if up.poll() is None:
            stop_process_groups([up], 5)


@pytest.mark.dbless
def test_honcho_reads_the_procfile():
    """`honcho start` runs the same lines `up` ran above: honcho parses the file and finds every process."""
    done = subprocess.run([sys.executable, "-m", "honcho", "-f", str(ROOT / "Procfile"), "check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "proxy, web, operator, worker, beat, emulator" in done.stdout + done.stderr
    procfile = (ROOT / "Procfile").read_text()
    assert "0.0.0.0" not in procfile.replace("BIND_HOST=0.0.0.0", "")  # loopback unless told otherwise
