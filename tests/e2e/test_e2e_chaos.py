"""End-to-end reliability: real processes, injected faults, an exact ledger.

Audio files go through the real pipeline: `webhook-service submit`, Celery
workers (subprocesses) streaming to the Gladia emulator, the emulator's
callbacks to the receiver (gunicorn, a subprocess), Celery beat running the
sweeper, and reconciliation against GET /v2/live/:id. Meanwhile the emulator
drops, duplicates, delays and reorders callbacks, cuts WebSockets and fails
some GETs with 5xx; one worker is SIGKILLed while it streams and started
again, and the receiver is restarted once.

Afterwards the run is checked against ground truth:

* every job is ``reconciled``, each with exactly one Gladia session;
* the final utterances stored equal the emulator's GET result, session by
  session, and every message the callbacks should have delivered is stored
  (nothing lost), with no duplicate row;
* the emulator's callback ledger equals what the receiver stored plus what
  was dropped on purpose (nothing delivered is missing from the inbox,
  nothing dropped is in it, every duplicate delivery was counted).

:class:`ChaosRun` is also the engine of ``bench/bench_chaos.py`` (the long
run: hundreds of sessions, PostgreSQL, Redis, several workers).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[2]
AUDIO = ROOT / "tests" / "data"

from webhook_service.db import session_scope  # noqa: E402
from webhook_service.demo import free_port, signal_group, stop_process_groups  # noqa: E402
from webhook_service.ingest import message_key  # noqa: E402
from webhook_service.models import Event, InboxItem, Job, ReconciliationRun, Utterance  # noqa: E402
from webhook_service.reconcile import callback_flags, is_expected  # noqa: E402

TERMINAL = ("reconciled", "failed")


def isolated_redis_url(base: str) -> str:
    """The Redis of ``base`` with an empty database number of its own (runs never share queues)."""
    import redis

    head = base.rsplit("/", 1)[0] if base.count("/") >= 3 else base.rstrip("/")
    numbers = list(range(1, 15))
    random.shuffle(numbers)
    admin = redis.Redis.from_url(f"{head}/0")
    try:
        in_use = {int(c.get("db", 0)) for c in admin.client_list()}
    finally:
        admin.close()
    # An empty database first; else one that no client is connected to (left over by a run that
    # was killed before it could empty it), emptied for this run.
    for leftovers_too in (False, True):
        for number in numbers:
            if number in in_use:
                continue
            url = f"{head}/{number}"
            client = redis.Redis.from_url(url)
            try:
                if client.dbsize() == 0:
                    return url
                if leftovers_too:
                    client.flushdb()
                    return url
            finally:
                client.close()
    raise RuntimeError(f"every Redis database at {head} is in use")


class EmulatorProcess:
    """The emulator as a process of its own (`webhook-service emulator`), driven over its admin API.

    A process rather than the in-process fixture: the emulator gets a CPU of
    its own for hundreds of sessions, and no thread of the test process
    formats tracebacks while pytest compiles (CPython 3.11.7 shares the AST
    converter's recursion counter between threads, gh-106905).
    """

    def __init__(self, workdir: Path, *, engine: str = "vad", max_sessions: int = 30, callback_retries: int = 12,
                 callback_backoff_s: float = 0.25, log_level: str = "WARNING"):
        import uuid

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = f"chaos-{uuid.uuid4().hex[:12]}"
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        log = open(workdir / "logs" / "emulator.log", "ab")
        env = dict(os.environ, LOG_LEVEL=log_level, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webhook_service.cli", "emulator", "--port", str(self.port), "--engine", engine,
             "--api-key", self.api_key, "--max-sessions-per-key", str(max_sessions),
             "--callback-retries", str(callback_retries), "--callback-backoff", str(callback_backoff_s),
             "--spool-dir", str(workdir / "spool")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                self._admin("GET", "/_emulator/health")
                break
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the emulator did not start; see logs/emulator.log") from None
                time.sleep(0.1)

    def _admin(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def set_faults(self, **changes: Any) -> dict:
        return self._admin("POST", "/_emulator/faults", changes)

    def reset_faults(self) -> dict:
        return self._admin("DELETE", "/_emulator/faults")

    def ledger(self) -> dict:
        return self._admin("GET", "/_emulator/ledger", timeout=120)

    def wait_callbacks(self, timeout: float = 30.0) -> bool:
        return bool(self._admin("POST", f"/_emulator/callbacks/wait?timeout={timeout}", {}, timeout + 10)["idle"])

    def stop(self) -> None:
        stop_process_groups([self.proc], 10)


@dataclass
class ChaosConfig:
    files: int = 20
    workers: int = 2
    worker_concurrency: int = 40
    web_workers: int = 2
    max_sessions: int = 30
    stream_speed: float = 1.0
    # Each file is the bundled speech files concatenated this many times (longer sessions).
    repeat_audio: int = 1
    kill_workers: int = 1  # SIGKILLed mid-stream, then started again
    restart_receiver: int = 1
    timeout_s: float = 75.0
    seed: int = 20260302
    # Short, so the killed worker's streams are picked up within the test; long enough that a
    # loaded machine does not make live workers look dead (their heartbeat is every 0.5 s).
    stale_heartbeat_s: float = 5.0
    # A killed worker's prefetched tasks are lost with it on the filesystem broker: short here so
    # that the test sees them re-sent. Keep it above the queue wait of a backlog (bench: 120 s).
    stale_queued_s: float = 8.0
    faults: dict[str, Any] = field(default_factory=lambda: {
        "callback_drop_rate": 0.12,
        "callback_duplicate_rate": 0.06,
        "callback_reorder_rate": 0.10,
        "callback_delay_rate": 0.05,
        "callback_delay_s": 0.5,
        "ws_cut_rate": 0.02,
        "ws_cut_code": 1011,
        "rest_error_rate": 0.20,
        "rest_error_status": 503,
        "rest_fault_routes": ["GET /v2/live/{id}", "GET /v2/live"],
    })


class ChaosRun:
    """Starts the processes, injects the faults, waits, then checks the ledger."""

    def __init__(self, config: ChaosConfig, *, database_url: str, broker_url: str, emulator, workdir: Path):
        self.config = config
        self.database_url = database_url
        self.broker_url = broker_url
        self.emulator = emulator
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.web_port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.events: list[str] = []  # what the run did, for the report
        self.job_ids: list[str] = []
        self.restarting: set[str] = set()  # processes the run itself is stopping and starting again
        self.started = time.monotonic()
        self.env = self._env()

    # ------------------------------------------------------------- processes

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PROMETHEUS_"))}
        env.update(
            DATA_DIR=str(self.workdir / "data"),
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            GLADIA_API_URL=self.emulator.url,
            GLADIA_API_KEY=self.emulator.api_key,
            PUBLIC_BASE_URL=f"http://127.0.0.1:{self.web_port}",
            CALLBACK_SIGNING_KEY=secrets.token_urlsafe(48),  # a production-grade key: the DB may be PostgreSQL
            MAX_CONCURRENT_SESSIONS=str(self.config.max_sessions),
            STREAM_SPEED=str(self.config.stream_speed),
            HEARTBEAT_INTERVAL_S="0.5",
            STALE_HEARTBEAT_S=str(self.config.stale_heartbeat_s),
            STALE_QUEUED_S=str(self.config.stale_queued_s),
            SWEEP_INTERVAL_S="1",
            RECONCILE_DELAY_S="1",
            RECONCILE_DEADLINE_S="300",
            INBOX_RETRY_AFTER_S="2",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        return env

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "webhook_service.cli", *args], cwd=ROOT, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start_web(self) -> None:
        self._start("web", "web", "--port", str(self.web_port), "--workers", str(self.config.web_workers))
        self._wait_http(f"http://127.0.0.1:{self.web_port}/healthz", 60)

    def start_worker(self, index: int) -> subprocess.Popen:
        return self._start(f"worker{index}", "worker", "--concurrency", str(self.config.worker_concurrency),
                           "-n", f"chaos{index}-{os.getpid()}@%h")

    def start(self) -> None:
        (self.workdir / "data").mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "webhook_service.cli", "db", "upgrade"], cwd=ROOT, env=self.env,
                       check=True, capture_output=True, timeout=120)
        self.start_web()
        for index in range(self.config.workers):
            self.start_worker(index)
        self._start("beat", "beat")
        self.emulator.set_faults(seed=self.config.seed, **self.config.faults)

    def stop(self) -> None:
        stop_process_groups(list(self.procs.values()), 10)

    def _wait_http(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"{url} did not come up:\n{self.tail('web')}")

    def tail(self, name: str, lines: int = 40) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---------------------------------------------------------------- the run

    def audio_files(self) -> list[Path]:
        """``files`` distinct files made of the bundled speech recordings."""
        import wave

        sources = sorted(AUDIO.glob("*.wav"))
        folder = self.workdir / "audio"
        folder.mkdir(exist_ok=True)
        paths = []
        for i in range(self.config.files):
            path = folder / f"call_{i:04d}.wav"
            frames, params = b"", None
            for k in range(self.config.repeat_audio):
                with wave.open(str(sources[(i + k) % len(sources)])) as w:
                    params = params or w.getparams()
                    frames += w.readframes(w.getnframes())
            with wave.open(str(path), "wb") as out:
                out.setparams(params)
                out.writeframes(frames)
            paths.append(path)
        return paths

    def submit(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "webhook_service.cli", "submit", str(self.workdir / "audio"), "--batch",
             f"chaos-{os.getpid()}-{int(time.time())}", "--json"],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        self.job_ids = [job["id"] for job in json.loads(done.stdout)["jobs"]]
        assert len(self.job_ids) == self.config.files

    def states(self) -> Counter:
        with session_scope(self.database_url) as session:
            return Counter(dict(session.execute(
                select(Job.state, func.count()).where(Job.id.in_(self.job_ids)).group_by(Job.state)).all()))

    def _streaming_owner_pids(self) -> set[int]:
        with session_scope(self.database_url) as session:
            owners = session.scalars(select(Job.worker_id).where(
                Job.id.in_(self.job_ids), Job.state == "streaming", Job.worker_id.is_not(None),
                Job.bytes_acked > 0)).all()
        pids = set()
        for owner in owners:
            parts = owner.split(":")
            if len(parts) >= 2 and parts[1].isdigit():
                pids.add(int(parts[1]))
        return pids

    def kill_a_worker_mid_stream(self, timeout_s: float = 30) -> None:
        """SIGKILL a worker that is streaming (acknowledged audio on an open session), then restart it."""
        deadline = time.monotonic() + timeout_s
        workers = {p.pid: name for name, p in self.procs.items() if name.startswith("worker")}
        while time.monotonic() < deadline:
            victims = [pid for pid in self._streaming_owner_pids() if pid in workers]
            if victims:
                name = workers[victims[0]]
                self.restarting.add(name)
                signal_group(self.procs[name], signal.SIGKILL)
                self.procs[name].wait(10)
                self.events.append(f"{self.elapsed():.1f}s SIGKILL {name} while streaming")
                self.start_worker(int(name[len("worker"):]))
                self.restarting.discard(name)
                return
            time.sleep(0.05)
        raise AssertionError("no worker was seen streaming")

    def restart_receiver(self) -> None:
        proc = self.procs["web"]
        self.restarting.add("web")
        signal_group(proc, signal.SIGTERM)
        proc.wait(20)
        self.events.append(f"{self.elapsed():.1f}s receiver stopped")
        self.start_web()
        self.restarting.discard("web")
        self.events.append(f"{self.elapsed():.1f}s receiver restarted")

    def wait_settled(self) -> Counter:
        deadline = time.monotonic() + self.config.timeout_s
        states = self.states()
        while time.monotonic() < deadline:
            states = self.states()
            if sum(states[s] for s in TERMINAL) == len(self.job_ids):
                break
            for name, proc in list(self.procs.items()):
                assert proc.poll() is None or name in self.restarting, f"{name} exited:\n{self.tail(name)}"
            time.sleep(0.5)
        return states

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def run(self) -> dict[str, Any]:
        """The whole scenario; returns the verification report (raises on any violation)."""
        self.audio_files()
        self.start()
        self.started = time.monotonic()
        self.submit()
        for _ in range(self.config.kill_workers):
            self.kill_a_worker_mid_stream()
        for _ in range(self.config.restart_receiver):
            self.restart_receiver()
        states = self.wait_settled()
        self.events.append(f"{self.elapsed():.1f}s settled: {dict(states)}")
        assert states["reconciled"] == len(self.job_ids), (
            f"not every job reconciled: {dict(states)}\n{self.describe_unsettled()}")
        self.emulator.reset_faults()
        assert self.emulator.wait_callbacks(30), "the emulator still has callbacks to send"
        return verify(self.database_url, self.emulator, self.job_ids, self.events, self.elapsed())

    def describe_unsettled(self) -> str:
        with session_scope(self.database_url) as session:
            rows = session.execute(select(Job.id, Job.state, Job.gladia_id, Job.last_error, Job.worker_id,
                                          Job.heartbeat_at, Job.reconcile_after)
                                   .where(Job.id.in_(self.job_ids), Job.state.not_in(TERMINAL))).all()
        text = "\n".join(str(tuple(r)) for r in rows[:10])
        return text + "\n--- worker0\n" + self.tail("worker0", 30) + "\n--- beat\n" + self.tail("beat", 10)


# ------------------------------------------------------------------ verification


def verify(database_url: str, emulator, job_ids: list[str], events: list[str], elapsed: float) -> dict[str, Any]:
    """Check the stored results against the emulator's record; returns the figures."""
    from webhook_service.gladia.client import GladiaClient

    client = GladiaClient(emulator.url, emulator.api_key)
    with session_scope(database_url) as session:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(job_ids)))}
        gids = {j.gladia_id: j for j in jobs.values()}
        assert None not in gids, "a job has no Gladia session"

        # One Gladia session per job: group the emulator's sessions by the job id in their metadata.
        # A worker killed between POST /v2/live and its commit leaves a session that never got a
        # byte of audio (Gladia's list gives no socket URL to resume it with); the job must still
        # have exactly one session holding audio, the one it records.
        by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in client.iter_live(max_items=100_000):
            by_job[(item.get("custom_metadata") or {}).get("job_id")].append(item)
        wrong = {job_id: [(i["id"], bool(i.get("file"))) for i in by_job[job_id]] for job_id, job in jobs.items()
                 if [i["id"] for i in by_job[job_id] if i.get("file")] != [job.gladia_id]}
        assert not wrong, f"jobs without exactly one Gladia session holding audio: {wrong}"
        orphans = sum(len(by_job[job_id]) - 1 for job_id in jobs)

        lost = repaired_expected = by_socket = audio_s = finals = 0
        for gid, job in gids.items():
            body = client.get_live(gid)
            assert body["status"] == "done", (gid, body["status"])
            result = body["result"]
            audio_s += float(result["metadata"]["audio_duration"])
            # Every byte of the file reached the session (resumed streams neither lost nor repeated audio).
            assert job.bytes_acked == job.bytes_total, (gid, job.bytes_acked, job.bytes_total)
            assert abs(float(result["metadata"]["audio_duration"]) - float(job.audio_duration_s)) < 0.05, (
                gid, result["metadata"]["audio_duration"], job.audio_duration_s)
            reference = sorted((u["channel"], round(u["start"], 6), round(u["end"], 6), u["text"])
                               for u in result["transcription"]["utterances"])
            stored = sorted((u.channel, round(u.start_s, 6), round(u.end_s, 6), u.text) for u in session.scalars(
                select(Utterance).where(Utterance.gladia_id == gid, Utterance.is_final.is_(True))))
            assert stored == reference, f"session {gid}: stored finals differ from GET"
            finals += len(stored)

            messages = [json.loads(m) for m in result["messages"]]
            keys = Counter(message_key(m) for m in messages)
            flags = callback_flags(job.session_config)
            expected = {message_key(m) for m in messages if is_expected(m, flags)}
            event_keys = Counter(session.scalars(select(Event.message_key).where(Event.gladia_id == gid)))
            assert all(n == 1 for n in event_keys.values()), f"session {gid}: duplicate events"
            assert set(event_keys) <= set(keys), f"session {gid}: events that Gladia never sent"
            missing = expected - set(event_keys)
            lost += len(missing)
            repaired_expected += session.scalar(
                select(func.count()).select_from(Event).where(Event.gladia_id == gid, Event.source == "reconcile"))
            by_socket += session.scalar(
                select(func.count()).select_from(Event).where(Event.gladia_id == gid, Event.source == "websocket"))
        assert lost == 0, f"{lost} messages lost"
        utterance_ids = session.execute(
            select(Utterance.gladia_id, Utterance.utterance_id, func.count())
            .where(Utterance.gladia_id.in_(list(gids)))
            .group_by(Utterance.gladia_id, Utterance.utterance_id).having(func.count() > 1)).all()
        assert not utterance_ids, "duplicate utterance rows"

        # The ledger: delivered == stored in the inbox, dropped == not stored, nothing else.
        ledger = emulator.ledger()
        entries = [e for e in ledger["entries"] if e["session_id"] in gids]
        outcomes = Counter(e["outcome"] for e in entries)
        # "gone": refused with 410 because its job had settled (reconciliation, checked above, had its content).
        assert set(outcomes) <= {"delivered", "dropped", "gone"}, f"callbacks neither delivered nor dropped: {outcomes}"
        inbox = session.execute(select(InboxItem.body, InboxItem.duplicates, InboxItem.status)
                                .where(InboxItem.gladia_id.in_(list(gids)), InboxItem.kind == "callback")).all()
        assert all(row.status == "processed" for row in inbox), Counter(row.status for row in inbox)
        stored_keys = Counter()
        for row in inbox:
            envelope = json.loads(bytes(row.body))
            stored_keys[(envelope["id"], message_key(envelope["payload"]))] += 1
        delivered = Counter((e["session_id"], e["message_key"]) for e in entries if e["outcome"] == "delivered")
        dropped = {(e["session_id"], e["message_key"]) for e in entries if e["outcome"] == "dropped"}
        assert stored_keys == delivered, (
            f"inbox and ledger differ: {len(set(stored_keys) - set(delivered))} stored but not delivered, "
            f"{len(set(delivered) - set(stored_keys))} delivered but not stored")
        assert not dropped & set(stored_keys), "a callback dropped on purpose was stored"
        gone = {(e["session_id"], e["message_key"]) for e in entries if e["outcome"] == "gone"}
        assert not gone & set(stored_keys), "a callback refused as gone was stored"
        assert len(entries) == sum(stored_keys.values()) + len(dropped) + len(gone)
        duplicate_deliveries = sum(row.duplicates for row in inbox)
        assert duplicate_deliveries == sum(e["duplicated"] for e in entries), (
            duplicate_deliveries, sum(e["duplicated"] for e in entries))

        runs = session.execute(select(func.count(), func.coalesce(func.sum(ReconciliationRun.missing), 0),
                                      func.coalesce(func.sum(ReconciliationRun.repaired), 0))
                               .where(ReconciliationRun.gladia_id.in_(list(gids)))).one()
        return {
            "sessions": len(gids),
            "audio_hours": round(audio_s / 3600, 4),
            "elapsed_s": round(elapsed, 1),
            "callbacks": len(entries),
            "dropped": len(dropped),
            "duplicated": sum(e["duplicated"] for e in entries),
            "reordered": ledger_count(entries, "reorder"),
            "delayed": ledger_count(entries, "delay"),
            "final_utterances": finals,
            "empty_orphan_sessions": orphans,
            "reconnects": sum(j.reconnects for j in jobs.values()),
            "jobs_restarted": sum(1 for j in jobs.values() if (j.attempts or 0) > 1),
            "reconciliation_runs": runs[0],
            "missing_found": int(runs[1]),
            "repaired": int(runs[2]),
            "repaired_events": repaired_expected,
            "socket_events": by_socket,
            "lost": lost,
            "events": events,
        }


def ledger_count(entries: list[dict[str, Any]], flag: str) -> int:
    return sum(1 for e in entries if e.get(flag) and e["outcome"] != "dropped")


# ------------------------------------------------------------------------ test


def release_redis(url: str) -> None:
    """Empty the Redis database a run used, so that the next run can take it."""
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()


def _broker_url(tmp_path: Path) -> str:
    base = os.environ.get("TEST_REDIS_URL", "")
    return isolated_redis_url(base) if base else "filesystem://"


def run_scenario(config: ChaosConfig, db_url: str, tmp_path: Path) -> dict[str, Any]:
    """One chaos run with its own emulator process and broker; its verified report (printed)."""
    emulator = EmulatorProcess(tmp_path)
    run = ChaosRun(config, database_url=db_url, broker_url=_broker_url(tmp_path), emulator=emulator,
                   workdir=tmp_path)
    try:
        report = run.run()
    finally:
        run.stop()
        emulator.stop()
        release_redis(run.broker_url)
    print(json.dumps(report, indent=2))
    return report


@pytest.mark.slow
def test_no_result_is_lost_under_faults_crashes_and_restarts(db_url, tmp_path):
    report = run_scenario(ChaosConfig(), db_url, tmp_path)
    # The faults really happened, and reconciliation repaired what was dropped.
    assert report["dropped"] >= 1 and report["duplicated"] >= 1
    assert report["repaired_events"] >= 1 and report["lost"] == 0
    assert report["final_utterances"] >= report["sessions"]  # the comparison had something to compare
    assert report["jobs_restarted"] >= 1  # the killed worker's streams were picked up again
    assert any("SIGKILL" in e for e in report["events"]) and any("receiver restarted" in e for e in report["events"])


@pytest.mark.slow
def test_every_session_reconciles_when_every_callback_is_dropped(db_url, tmp_path):
    """No callback ever arrives: the socket (STORE_SOCKET_MESSAGES) and reconciliation still lose nothing."""
    config = ChaosConfig(files=10, restart_receiver=0, faults={**ChaosConfig().faults, "callback_drop_rate": 1.0})
    report = run_scenario(config, db_url, tmp_path)
    assert report["callbacks"] == report["dropped"] > 0  # not one callback reached the receiver
    assert report["sessions"] == config.files and report["lost"] == 0  # every session reconciled, 0 missing
    assert report["socket_events"] >= report["sessions"]  # the socket was a real-time source for each one
    assert report["repaired_events"] >= report["sessions"]  # reconciliation brought what the socket could not
    assert report["final_utterances"] >= report["sessions"] and report["jobs_restarted"] >= 1
