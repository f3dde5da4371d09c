"""`webhook-service up`: the whole service on this machine, from the Procfile, with the emulator, until Ctrl-C.

It runs what `honcho start` runs (every line of the ``Procfile``, through
honcho's process manager), on the embedded defaults (SQLite, the filesystem
broker, ``DATA_DIR``) with the local Gladia emulator as the API, after
applying the migrations once and emptying ``METRICS_DIR``. Once the receiver
and the operator side answer, it prints their addresses and a fresh admin
token to sign in to the dashboard with (it expires after a day). Ctrl-C (or
SIGTERM) stops every process, and the command exits 0 when they all stopped.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from .common import CLIError

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"
STOPPED_BY_SIGNAL = (130, 143)  # honcho's return code after SIGINT / SIGTERM


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


def stack_env(port: int, operator_port: int, emulator_port: int, engine: str) -> dict[str, str]:
    """This environment, pointed at the emulator, with the Procfile's ports."""
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        PORT=str(port),
        RECEIVER_PORT=env.get("RECEIVER_PORT") or str(port + 1),
        OPERATOR_PORT=str(operator_port),
        EMULATOR_PORT=str(emulator_port),
        EMULATOR_ENGINE=engine,
        GLADIA_API_URL=f"http://127.0.0.1:{emulator_port}",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        WEB_CONCURRENCY=env.get("WEB_CONCURRENCY", "2"),
        OPERATOR_CONCURRENCY=env.get("OPERATOR_CONCURRENCY", "1"),
        PYTHONUNBUFFERED="1",
    )
    bin_dir = str(Path(sys.executable).parent)  # the Procfile calls `webhook-service`: this installation's
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def _admin_token(settings) -> str:
    from ..auth import create_token
    from ..db import session_scope

    with session_scope(settings.database_url) as session:
        _row, secret = create_token(session, f"up-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", "admin", 1)
    return secret


def _announce(urls: dict[str, str], token: str, stop: threading.Event) -> None:
    """Print the addresses once the receiver and the operator side answer."""
    checks = [urls["receiver"] + "/healthz", urls["operator"] + "/healthz", urls["emulator"] + "/_emulator/health"]
    while not stop.is_set():
        if all(_answers(url) for url in checks):
            lines = [
                "",
                "webhook-service is up (Ctrl-C stops everything):",
                f"  dashboard  {urls['operator']}/dashboard  (sign in with the admin token below)",
                f"  API        {urls['operator']}/api/sessions  (Authorization: Bearer <token>)",
                f"  metrics    {urls['operator']}/metrics  (same token)",
                f"  receiver   {urls['receiver']}  (Gladia's callbacks)",
                f"  emulator   {urls['emulator']}",
                "  submit     webhook-service submit samples/ --wait   (from another terminal, same DATA_DIR)",
                "  admin token for this run (expires in a day; `webhook-service token revoke` ends it sooner):",
                f"  {token}",
                "",
            ]
            print("\n".join(lines), flush=True)
            return
        stop.wait(0.5)


@click.command()
@click.option("--port", default=8000, show_default=True, type=int, help="The receiver (Gladia's callbacks).")
@click.option("--operator-port", default=8002, show_default=True, type=int, help="Dashboard, API and /metrics.")
@click.option("--emulator-port", default=8765, show_default=True, type=int)
@click.option("--engine", type=click.Choice(["sphinx", "vad"]), default="sphinx", show_default=True,
              help="The emulator's speech engine.")
@click.option("--procfile", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=PROCFILE,
              show_default=True)
def up(port: int, operator_port: int, emulator_port: int, engine: str, procfile: Path) -> None:
    """Run the whole service locally with the Gladia emulator until Ctrl-C; print the dashboard's address."""
    from honcho.environ import parse_procfile
    from honcho.manager import Manager
    from honcho.printer import Printer

    from ..config import ConfigError, Settings
    from ..logging_setup import configure_logging
    from ..migrate import upgrade

    env = stack_env(port, operator_port, emulator_port, engine)
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        raise CLIError(f"invalid setting: {exc}") from None
    configure_logging(settings.log_level, settings.log_format)
    processes = parse_procfile(procfile.read_text(encoding="utf-8")).processes
    if "proxy" in processes and shutil.which("nginx") is None:
        # No nginx (`make system-deps` installs it): the receiver takes the public port itself.
        processes.pop("proxy")
        env["RECEIVER_PORT"] = str(port)
        click.echo("nginx not found: the receiver listens on the public port without the proxy")
    wanted = {int(env["RECEIVER_PORT"]): "receiver", operator_port: "operator", emulator_port: "emulator"}
    if "proxy" in processes:
        wanted[port] = "proxy"
    for number, name in wanted.items():
        if not _port_is_free(number):
            raise CLIError(f"port {number} for the {name} is taken; choose others (see --help)")
    settings.ensure_dirs()
    try:
        upgrade(settings.database_url)
    except Exception as exc:
        raise CLIError(f"migration failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    shutil.rmtree(settings.metrics_dir, ignore_errors=True)  # counters start from zero with the stack
    token = _admin_token(settings)

    manager = Manager(Printer(sys.stdout))
    for name, command in processes.items():
        manager.add_process(name, command, env=env, cwd=str(procfile.parent))
    urls = {"receiver": f"http://127.0.0.1:{port}", "operator": f"http://127.0.0.1:{operator_port}",
            "emulator": f"http://127.0.0.1:{emulator_port}"}
    stop = threading.Event()
    threading.Thread(target=_announce, args=(urls, token, stop), daemon=True).start()
    try:
        manager.loop()
    finally:
        stop.set()
    code = manager.returncode or 0
    if code in STOPPED_BY_SIGNAL:
        click.echo("every process stopped")
        code = 0
    sys.exit(code)


COMMANDS = (up,)
