"""`make demo`: the whole pipeline on the embedded defaults, from a fresh clone.

It runs what an operator runs, each as its own process, exactly as the
Procfile describes them: the local Gladia emulator (sphinx speech
recognition), the receiver (gunicorn), a Celery worker and Celery beat (the
sweeper), on a SQLite file and the filesystem broker in ``data/demo``. It
submits the bundled sample audio with ``webhook-service submit --wait``,
prints each session's transcript, what reconciliation found and repaired, and
the daily report, then stops every process it started.

The emulator drops a share of the callbacks on purpose (``--drop-callbacks``,
10 % by default) so that the run shows reconciliation repairing them. With
``CALLBACKS=off`` in the environment no receiver is started at all: results
come from the sessions' sockets and reconciliation, as on a machine that
Gladia cannot reach.

Processes are started in their own process groups: Ctrl-C reaches this
program only, which then stops each group (SIGTERM, then SIGKILL after a
grace period), so nothing is left running whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "data" / "demo"
SAMPLES = ROOT / "samples"
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".webm"}
STOP_GRACE_S = 10.0


class DemoError(RuntimeError):
    """Something the user must fix (a port taken, samples missing...)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


class Supervisor:
    """Starts the service's processes and guarantees they all stop."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir = log_dir
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: list = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        self._logs.append(log)
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = proc
        return proc

    def check(self) -> None:
        """Fail fast, with the end of its log, when a process died on its own."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise DemoError(f"the {name} process exited with status {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop_all(self) -> None:
        """SIGTERM every process group (reverse start order), then SIGKILL what is left."""
        stop_process_groups(list(reversed(list(self.procs.values()))), STOP_GRACE_S)
        for log in self._logs:
            log.close()


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group a child was started in (``start_new_session=True``)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process_groups(procs: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM each group in the given order, wait up to ``grace_s`` in all, then SIGKILL what is left.

    The final SIGKILL goes to every group, which also reaps children (prefork pool, gunicorn
    workers) that outlived their parent.
    """
    for proc in procs:
        signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        signal_group(proc, signal.SIGKILL)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process stuck in the kernel
            pass


def wait_http(url: str, supervisor: Supervisor, timeout_s: float, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        supervisor.check()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise DemoError(f"{url} did not answer within {timeout_s:.0f} s")


def sample_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES) if folder.is_dir() else []


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "webhook_service.cli", *args]


def print_results(database_url: str, batch: str) -> None:
    """Each session's transcript and its reconciliation, straight from the database."""
    from sqlalchemy import select

    from .db import session_scope
    from .models import Batch, Job, ReconciliationRun, SessionResult, Utterance

    with session_scope(database_url) as session:
        batch_id = session.scalar(select(Batch.id).where(Batch.name == batch))
        jobs = session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.source_path)).all()
        print()
        print("=" * 78)
        print(f"Transcripts ({len(jobs)} sessions)")
        print("=" * 78)
        for job in jobs:
            print(f"\n{Path(job.source_path).name}  [{job.state}]  session {job.gladia_id or '-'}")
            if job.last_error:
                print(f"  error: {job.last_error}")
            if not job.gladia_id:
                continue
            result = session.get(SessionResult, job.gladia_id)
            text = result.full_transcript if result and result.full_transcript is not None else None
            if text is None:
                finals = session.scalars(
                    select(Utterance.text).where(Utterance.gladia_id == job.gladia_id, Utterance.is_final.is_(True))
                    .order_by(Utterance.channel, Utterance.start_s)).all()
                text = " ".join(t.strip() for t in finals)
            print(f"  transcript: {text.strip() or '(no speech recognized)'}")
            run = session.scalars(
                select(ReconciliationRun).where(ReconciliationRun.gladia_id == job.gladia_id)
                .order_by(ReconciliationRun.started_at.desc(), ReconciliationRun.id.desc()).limit(1)
            ).first()
            if run is not None:
                print(f"  reconciliation: {run.outcome}; {run.expected} messages expected, "
                      f"{run.received} received by callback or socket, {run.missing} missing -> {run.repaired} "
                      f"repaired, {run.duplicates} duplicate deliveries ignored")
        print()


def print_report(env: dict[str, str], database_url: str) -> None:
    """The daily report through the `report` command when it exists, else the reports module."""
    print("=" * 78)
    print("Daily report")
    print("=" * 78, flush=True)
    for name in ("daily_usage", "daily-usage"):
        done = subprocess.run(cli_argv("report", name), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and done.stdout.strip():
            print(done.stdout.rstrip())
            return
    try:
        from . import reports

        rows = reports.run_report(database_url, "daily_usage")
        rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
        for row in rows:
            print("  " + ", ".join(f"{k}={v}" for k, v in dict(row).items()))
        return
    except Exception as exc:  # the reporting module is optional for the demo
        say(f"daily report unavailable ({type(exc).__name__}: {exc}); counting jobs instead")
    from sqlalchemy import func, select

    from .db import session_scope
    from .models import Job

    with session_scope(database_url) as session:
        for state, count in session.execute(select(Job.state, func.count()).group_by(Job.state)):
            print(f"  {state}: {count}")


def _interrupt(_signum, _frame) -> None:
    """SIGTERM (a CI runner, `kill`) stops the demo the way Ctrl-C does."""
    raise KeyboardInterrupt


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m webhook_service.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="Demo data folder (wiped first).")
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="Audio files to submit.")
    parser.add_argument("--engine", choices=("sphinx", "vad"), default="sphinx")
    parser.add_argument("--drop-callbacks", type=float, default=0.10,
                        help="Share of callbacks the emulator drops on purpose (0 to 1).")
    parser.add_argument("--emulator-port", type=int, default=0, help="Default: a free port.")
    parser.add_argument("--web-port", type=int, default=0, help="Default: a free port.")
    parser.add_argument("--timeout", type=float, default=150.0, help="Give up waiting after this many seconds.")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class DemoSetup:
    """Where the demo runs: its samples, its private data folder and database, its ports and environment."""

    files: list[Path]
    data_dir: Path
    log_dir: Path
    database_url: str
    emulator_port: int
    web_port: int
    env: dict[str, str]
    callbacks: bool  # CALLBACKS: off means no receiver (socket and reconciliation only)


def checked_samples(args: argparse.Namespace) -> list[Path]:
    """The audio files to submit, once the arguments are known to be usable."""
    files = sample_files(args.samples)
    if not files:
        raise DemoError(f"no audio files in {args.samples}")
    if not 0.0 <= args.drop_callbacks <= 1.0:
        raise DemoError("--drop-callbacks must be between 0 and 1")
    for name, port in (("emulator", args.emulator_port), ("web", args.web_port)):
        if port and not port_is_free(port):
            raise DemoError(f"port {port} for the {name} is taken; pass another --{name}-port or 0 for a free one")
    return files


def prepare(args: argparse.Namespace) -> DemoSetup:
    """Check the arguments, pick the ports and wipe the data folder."""
    files = checked_samples(args)
    emulator_port = args.emulator_port or free_port()
    web_port = args.web_port or free_port()
    data_dir = args.dir.resolve()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True)
    database_url = f"sqlite:///{data_dir / 'webhook_service.sqlite3'}"
    env = demo_env(data_dir, database_url, emulator_port, web_port)
    try:
        callbacks = Settings.from_env(environ=env).callbacks
    except ConfigError as exc:
        raise DemoError(str(exc)) from None
    return DemoSetup(files, data_dir, log_dir, database_url, emulator_port, web_port, env, callbacks)


def demo_env(data_dir: Path, database_url: str, emulator_port: int, web_port: int) -> dict[str, str]:
    """This environment, pointed at the demo's database, broker, emulator and receiver."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(
        DATA_DIR=str(data_dir),
        DATABASE_URL=database_url,
        CELERY_BROKER_URL="filesystem://",
        GLADIA_API_URL=f"http://127.0.0.1:{emulator_port}",
        GLADIA_API_KEY="local-dev-key",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{web_port}",
        # Short delays so that a demo settles in seconds, not minutes.
        RECONCILE_DELAY_S="2",
        SWEEP_INTERVAL_S="2",
        STALE_HEARTBEAT_S="20",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


class Demo:
    """One run of the demo: each step in order, and whatever was started stopped at the end."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.monotonic()
        self.supervisor: Optional[Supervisor] = None
        self.submit: Optional[subprocess.Popen] = None

    def run(self) -> int:
        """Every step; 0 when every sample reached `reconciled`."""
        setup = prepare(self.args)
        say(f"{len(setup.files)} sample files from {self.args.samples}; data and logs in {setup.data_dir}")
        say("applying migrations")
        subprocess.run(cli_argv("db", "upgrade"), cwd=ROOT, env=setup.env, check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, timeout=120)
        supervisor = self.start_services(setup)
        batch = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        ok = self.submit_and_wait(setup, supervisor, batch)
        print_results(setup.database_url, batch)
        print_report(setup.env, setup.database_url)
        say(f"{'finished' if ok else 'finished with failures'} in {time.monotonic() - self.started:.0f} s; "
            f"stopping every process")
        return 0 if ok else 1

    def start_services(self, setup: DemoSetup) -> Supervisor:
        """The emulator, the receiver, a worker and beat, each in its own process group; wait until they answer."""
        args = self.args
        self.supervisor = supervisor = Supervisor(setup.log_dir, setup.env)
        dropping = f"dropping {args.drop_callbacks:.0%} of callbacks" if setup.callbacks else "no callbacks"
        say(f"starting the Gladia emulator ({args.engine} engine, {dropping}) on port {setup.emulator_port}")
        supervisor.start("emulator", cli_argv(
            "emulator", "--port", str(setup.emulator_port), "--engine", args.engine,
            "--drop-callbacks", str(args.drop_callbacks), "--seed", "7"))
        if setup.callbacks:
            say(f"starting the receiver (gunicorn) on port {setup.web_port}, a Celery worker and Celery beat")
            supervisor.start("web", cli_argv("web", "--port", str(setup.web_port), "--workers", "2"))
        else:
            say("CALLBACKS=off: no receiver (nothing needs to reach this machine); results come from each "
                "session's socket and reconciliation. Starting a Celery worker and Celery beat")
        supervisor.start("worker", cli_argv("worker"))
        supervisor.start("beat", cli_argv("beat"))
        wait_http(f"http://127.0.0.1:{setup.emulator_port}/v2/live", supervisor, 60, ok=(200, 401))
        if setup.callbacks:
            wait_http(f"http://127.0.0.1:{setup.web_port}/healthz", supervisor, 60)
        return supervisor

    def submit_and_wait(self, setup: DemoSetup, supervisor: Supervisor, batch: str) -> bool:
        """`webhook-service submit --wait --until reconciled` (its progress on this terminal); True when it succeeded."""
        say(f"submitting batch {batch}; waiting until every session is reconciled")
        remaining = max(30.0, self.args.timeout - (time.monotonic() - self.started))
        self.submit = subprocess.Popen(
            cli_argv("submit", *map(str, setup.files), "--batch", batch, "--wait", "--until", "reconciled",
                     "--timeout", f"{remaining:.0f}"),
            cwd=ROOT, env=setup.env, stdin=subprocess.DEVNULL)
        while self.submit.poll() is None:
            supervisor.check()
            time.sleep(0.5)
        return self.submit.returncode == 0

    def stop(self) -> None:
        """Stop the submission if it still runs, then every service process."""
        if self.submit is not None and self.submit.poll() is None:
            self.submit.terminate()
            self.submit.wait(10)
        if self.supervisor is not None:
            self.supervisor.stop_all()
            say(f"all processes stopped; logs in {self.supervisor.log_dir}")


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    demo = Demo(args)
    try:
        return demo.run()
    except KeyboardInterrupt:
        print()
        say("interrupted; stopping every process")
        return 130
    except DemoError as exc:
        say(f"error: {exc}")
        return 2
    except subprocess.CalledProcessError as exc:
        say(f"error: {' '.join(exc.cmd[2:])} exited with status {exc.returncode}")
        return 2
    finally:
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
