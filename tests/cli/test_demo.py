"""`make demo` end to end: the command a newcomer runs first must keep working.

Runs ``python -m webhook_service.demo`` as `make demo` does (its own SQLite
file, filesystem broker, sphinx emulator, gunicorn, a Celery worker and beat),
in a private folder, then checks what it printed, what it stored, and that it
left no process behind.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from webhook_service.db import dispose_engines, session_scope
from webhook_service.demo import ROOT, free_port
from webhook_service.models import Event, InboxItem, Job


def processes_with(data_dir: Path) -> list[int]:
    """Processes whose environment names the demo's data folder (every process the demo starts has it)."""
    needle = f"DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.dbless
@pytest.mark.parametrize("callbacks", ["on", "off"])
def test_make_demo_runs_the_whole_pipeline_and_stops_everything(tmp_path, callbacks):
    data_dir = tmp_path / "demo"
    emulator_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    env["CALLBACKS"] = callbacks
    done = subprocess.run(
        [sys.executable, "-m", "webhook_service.demo", "--dir", str(data_dir),
         "--emulator-port", str(emulator_port), "--web-port", str(web_port)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    assert "4 reconciled, 0 failed, 0 unfinished, of 4" in output
    # Real speech recognition of the bundled samples (sphinx): a phrase of each clearly spoken file.
    for phrase in ("hello world this is a test", "large pizza", "turn off the lights"):
        assert phrase in output, output[-4000:]
    assert "Daily usage" in output and "all processes stopped" in output
    # The emulator drops 10 % of callbacks; reconciliation repairs exactly what is missing.
    found = re.findall(r"(\d+) missing -> (\d+) repaired", output)
    assert len(found) == 4 and all(missing == repaired for missing, repaired in found)

    url = f"sqlite:///{data_dir / 'webhook_service.sqlite3'}"
    try:
        with session_scope(url) as session:
            states = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            sources = dict(session.execute(select(Event.source, func.count()).group_by(Event.source)).all())
            callbacks_stored = session.scalar(select(func.count()).select_from(InboxItem))
    finally:
        dispose_engines()
    assert states == {"reconciled": 4}
    assert sources.get("websocket", 0) >= 4  # the sockets' results are stored (STORE_SOCKET_MESSAGES)
    if callbacks == "off":
        assert "CALLBACKS=off: no receiver" in output and callbacks_stored == 0
        assert not (data_dir / "logs" / "web.log").exists()
    else:
        assert callbacks_stored > 0
    assert processes_with(data_dir) == []
    for port in (emulator_port, web_port):  # nobody listens any more (TIME_WAIT may still hold the port)
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
