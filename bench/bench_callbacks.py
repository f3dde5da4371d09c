"""Callback receiver throughput under gunicorn, as the Procfile runs it.

    .venv/bin/python bench/bench_callbacks.py --db sqlite
    .venv/bin/python bench/bench_callbacks.py --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres

What it does, in one run:

1. creates a fresh database (a SQLite file, or a new PostgreSQL database next
   to the one named) and applies the migrations;
2. creates ``--sessions`` jobs, each with its Gladia session id;
3. starts gunicorn as the Procfile's ``web`` line does (``webhook-service web``'s
   ``gunicorn_conf``: ``$WEB_CONCURRENCY`` processes, one per core by default, of
   ``gunicorn_conf.threads`` threads, multiprocess metrics, and gunicorn's access log
   only if that line asks for it (``--access-log``: an access-log line per request, as
   ``webhook-service web`` writes it without the proxy; ``--plain-gunicorn``: gunicorn's
   defaults and in-memory metrics) on the real app, plus one bare Flask route
   (``POST /_bench/bare`` answering 200) registered on the same app, so both
   are served by the same processes;
4. sends ``--requests`` POSTs to the bare route and ``--requests`` distinct
   callbacks (final transcripts with their words, shaped as Gladia's), from
   ``--connections`` keep-alive connections of a small asyncio HTTP client,
   in ``--rounds`` alternate slices (bare, callbacks, bare, ...) so that a
   burst of other work on the machine weighs on both alike;
5. checks the ledger: every callback answered 200 and sent = stored (inbox
   rows, events and utterances), or the run is void;
6. prints callbacks/s, p50/p99 latency, the server's CPU per request (from
   ``/proc``) and its ratio to the bare route's, overall and per round; on
   PostgreSQL also the WAL written per callback and its full-page images
   (``pg_stat_wal``: the whole server's, so on a quiet server), and the
   checkpoints that fell in the callbacks' phases.

The client runs on the same machine and takes CPU from the server: on a
2-core machine the figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from webhook_service.db import session_scope  # noqa: E402
from webhook_service.migrate import upgrade  # noqa: E402
from webhook_service.models import Event, InboxItem, Job, Utterance  # noqa: E402
from webhook_service.tokens import callback_token  # noqa: E402

SIGNING_KEY = secrets.token_urlsafe(48)  # PostgreSQL runs refuse a weak key
WORDS = "so the quarterly numbers look good and we will ship the new release next week".split()


# ----------------------------------------------------------------------- database


def make_database(db: str, workdir: Path) -> tuple[str, callable]:
    if db == "sqlite":
        url = f"sqlite:///{workdir / 'bench.sqlite3'}"
        return url, lambda: None
    base = make_url(db)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


def disable_stale_triggers(url: str) -> None:
    """Switch off the AFTER triggers that mark sessions stale for the reports (a diagnostic run only)."""
    if not url.startswith("postgresql"):
        raise SystemExit("--without-stale-triggers is for PostgreSQL")
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in ("events", "utterances", "callback_inbox"):
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER trg_{table}_stats_stale"))
    engine.dispose()


def create_jobs(url: str, count: int) -> list[tuple[str, str]]:
    out = []
    with session_scope(url) as s:
        for i in range(count):
            job = Job(source_path=f"/bench/{i}.wav", gladia_id=str(uuid.uuid4()))
            job.advance("starting")
            job.advance("streaming")
            s.add(job)
            s.flush()
            out.append((job.id, job.gladia_id))
    return out


def transcript_body(gladia_id: str, n: int) -> bytes:
    start = (n % 2500) * 4.0  # within Gladia's 3-hour session cap (the receiver refuses times beyond it)
    words = [{"word": f" {w}", "start": round(start + i * 0.25, 3), "end": round(start + i * 0.25 + 0.2, 3),
              "confidence": 0.93} for i, w in enumerate(WORDS)]
    payload = {
        "session_id": gladia_id,
        "created_at": "2026-03-01T12:00:%02d.%03dZ" % (n % 60, n % 1000),
        "type": "transcript",
        "data": {"id": f"00_{n:08d}", "is_final": True, "utterance": {
            "start": start, "end": words[-1]["end"], "confidence": 0.93, "channel": 0, "words": words,
            "text": "".join(w["word"] for w in words), "language": "en"}},
    }
    return json.dumps({"id": gladia_id, "event": "live.transcript", "payload": payload}).encode()


def post_environ(path: str, body: bytes) -> dict:
    """The WSGI environ of a JSON POST of ``body`` to ``path``, for the benchmarks that call the app in process."""
    return {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": True,
        "wsgi.run_once": False, "wsgi.version": (1, 0)}


def prefill(url: str, rows: int) -> float:
    """Put ``rows`` processed callbacks in the inbox and their events, as months of traffic would leave them.

    Sessions of 100 messages each, received over the last 180 days, each row
    with its own keys and the payload of a real transcript. The rows are made
    by PostgreSQL itself (``INSERT ... SELECT generate_series``: a client-side
    COPY of 10 million rows takes most of an hour on two cores), with the two
    tables' unique constraints and indexes dropped during the load and built
    again after it, as a bulk load does; the end state is the same tables and
    indexes a grown store has. Triggers and foreign-key checks are off while
    loading (``session_replication_role = replica``): the rows reference no
    job, and their own inbox rows. Returns the seconds it took.
    """
    import psycopg

    if not url.startswith("postgresql"):
        raise SystemExit("--prefill needs PostgreSQL")
    started = time.monotonic()
    body = json.loads(transcript_body("00000000-0000-4000-8000-000000000000", 1))
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    tables = ("callback_inbox", "events")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        uniques = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'u' AND conrelid::regclass::text = ANY(%s)", [list(tables)]).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE contype IN ('p', 'u'))", [list(tables)]).fetchall()
        for table, name, _ in uniques:
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        at = f"now() - interval '180 days' + (i * interval '180 days' / {rows})"
        session = "lpad(to_hex(i / 100), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i / 100), 12, '0')"
        conn.execute(
            "INSERT INTO callback_inbox (id, dedupe_key, kind, received_at, headers, body, event, gladia_id, status, "
            f"attempts, duplicates, processed_at) SELECT i + 1, encode(sha256(('inbox' || i)::bytea), 'hex'), "
            f"'callback', {at}, '{{}}', %s, 'live.transcript', {session}, 'processed', 1, 0, {at} "
            f"FROM generate_series(0, {rows - 1}) AS i", [json.dumps(body).encode()])
        conn.execute(
            "INSERT INTO events (id, gladia_id, message_key, type, source, created_at, received_at, inbox_id, payload) "
            f"SELECT i + 1, {session}, encode(sha256(('event' || i)::bytea), 'hex'), 'transcript', 'callback', "
            f"{at}, {at}, i + 1, %s::jsonb FROM generate_series(0, {rows - 1}) AS i", [json.dumps(body["payload"])])
        for table, name, definition in uniques:
            conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for _, definition in indexes:
            conn.execute(definition)
        for table in tables:
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {rows + 1000})")
            conn.execute(f"VACUUM ANALYZE {table}")
    return time.monotonic() - started


# ------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile_web_options() -> tuple[str, str, bool]:
    """(workers, threads, access log) the Procfile's ``web`` line runs: ``webhook-service web``'s own defaults
    unless it names them.

    ``--workers``: ``$WEB_CONCURRENCY``, else one per core; threads: ``gunicorn_conf.threads``; gunicorn's access
    log unless the line says ``--no-access-log`` (the proxy in front of it logs every request).
    """
    line = next(l for l in (ROOT / "Procfile").read_text().splitlines() if l.startswith("web:"))
    if "webhook-service web" not in line or re.search(r"--workers|--threads", line):
        raise SystemExit(f"the Procfile's web line sets its own options; read them here: {line}")
    from webhook_service import gunicorn_conf

    return (os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 1)), str(gunicorn_conf.threads),
            "--no-access-log" not in line)


def start_gunicorn(url: str, port: int, workdir: Path, workers: str, threads: str, *, access_log: bool,
                   plain: bool = False) -> subprocess.Popen:
    """The Procfile's `web` line, with the bench route added to the same app.

    As `webhook-service web` runs it: gunicorn's options from ``gunicorn_conf`` and prometheus-client in
    multiprocess mode (its samples in files, one folder per surface); ``access_log``: an access-log line per
    request (tokens redacted), as ``web --access-log`` writes it. ``plain``: gunicorn's defaults and in-memory
    metrics (how the first rounds measured).
    """
    env = dict(os.environ, DATABASE_URL=url, CALLBACK_SIGNING_KEY=SIGNING_KEY, DATA_DIR=str(workdir / "data"),
               CELERY_BROKER_URL="memory://", LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    config = []
    if not plain:
        metrics = workdir / "data" / "metrics" / "web-all"
        metrics.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        config = ["-c", "python:webhook_service.gunicorn_conf"] + (["--access-logfile", "-"] if access_log else [])
    cmd = [sys.executable, "-m", "gunicorn", *config, "--bind", f"127.0.0.1:{port}", "--workers", workers,
           "--threads", threads, "bench.bench_wsgi:app"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"gunicorn exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("gunicorn did not start")


# ------------------------------------------------------------------------- client


async def _send_all(port: int, requests: list[tuple[str, bytes]], connections: int) -> tuple[list[float], dict[int, int]]:
    queue = iter(requests)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for path, body in queue:
                head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()
                t0 = time.perf_counter()
                writer.write(head + body)
                status_line = await reader.readline()
                length, close = 0, False
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "connection" and value.strip().lower() == "close":
                        close = True
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                code = int(status_line.split()[1])
                statuses[code] = statuses.get(code, 0) + 1
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return latencies, statuses


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (Linux /proc), 0 for any that is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def _server_pids(proc: subprocess.Popen) -> list[int]:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return [proc.pid] + [int(p) for p in children.read_text().split()] if children.exists() else [proc.pid]


def _database_pids(url: str) -> list[int]:
    """The PostgreSQL backends serving the benchmark's database (same machine)."""
    if not url.startswith("postgresql"):
        return []
    engine = create_engine(url)
    with engine.connect() as conn:
        pids = list(conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )).scalars())
    engine.dispose()
    return pids


def _wal(url: str) -> tuple[int, int, int]:
    """PostgreSQL's WAL written so far (bytes, full-page images) and its checkpoints, for the whole server.

    A page's first change after a checkpoint is logged whole, so a run that a checkpoint falls in counts
    full-page images that a run between two checkpoints does not.
    """
    if not url.startswith("postgresql"):
        return 0, 0, 0
    engine = create_engine(url)
    with engine.connect() as conn:
        written, fpi = conn.execute(text("SELECT wal_bytes, wal_fpi FROM pg_stat_wal")).one()
        if conn.dialect.server_version_info >= (17,):
            checkpoints = conn.execute(text("SELECT num_timed + num_requested FROM pg_stat_checkpointer")).scalar_one()
        else:
            checkpoints = conn.execute(text("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")).scalar_one()
    engine.dispose()
    return int(written), int(fpi), int(checkpoints)


def run_phase(port: int, requests: list[tuple[str, bytes]], connections: int,
              server: subprocess.Popen | None = None, url: str = "") -> dict:
    server_pids = _server_pids(server) if server else []
    db_pids = _database_pids(url) if url else []
    wal0 = _wal(url)
    cpu0 = (_cpu_seconds(server_pids), _cpu_seconds(db_pids))
    t0, client0 = time.perf_counter(), time.process_time()
    latencies, statuses = asyncio.run(_send_all(port, requests, connections))
    elapsed, client_cpu = time.perf_counter() - t0, time.process_time() - client0
    cpu1 = (_cpu_seconds(server_pids), _cpu_seconds(db_pids))
    wal1 = _wal(url)
    return {"server_cpu_s": cpu1[0] - cpu0[0], "database_cpu_s": cpu1[1] - cpu0[1], "client_cpu_s": client_cpu,
            "wal_bytes": wal1[0] - wal0[0], "wal_fpi": wal1[1] - wal0[1], "checkpoints": wal1[2] - wal0[2],
            "requests": len(requests), "elapsed_s": elapsed, "latencies": latencies, "statuses": statuses}


def summarize(phases: list[dict]) -> dict:
    """The phases of one kind of request as one: CPU per request, throughput, latency percentiles."""
    n = sum(p["requests"] for p in phases)
    elapsed = sum(p["elapsed_s"] for p in phases)
    latencies = sorted(x for p in phases for x in p["latencies"])
    statuses: dict[int, int] = {}
    for p in phases:
        for code, count in p["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    return {
        "server_cpu_ms_per_request": 1000 * sum(p["server_cpu_s"] for p in phases) / n,
        "database_cpu_ms_per_request": 1000 * sum(p["database_cpu_s"] for p in phases) / n,
        "client_cpu_ms_per_request": 1000 * sum(p["client_cpu_s"] for p in phases) / n,
        # PostgreSQL: the WAL the server wrote during the phases (the whole server's: run it on a quiet one).
        "wal_bytes_per_request": sum(p["wal_bytes"] for p in phases) / n,
        "wal_fpi_per_request": sum(p["wal_fpi"] for p in phases) / n,
        "checkpoints": sum(p["checkpoints"] for p in phases),
        "requests": n,
        "rps": n / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "statuses": statuses,
        "elapsed_s": elapsed,
    }


def run_alternately(port: int, bare: list[tuple[str, bytes]], callbacks: list[tuple[str, bytes]], connections: int,
                    rounds: int, server: subprocess.Popen, url: str) -> tuple[dict, dict, list[float]]:
    """The bare route and the callbacks in ``rounds`` alternate slices, so both see the same moments of the machine.

    Returns both summaries and, per round, the ratio of the server CPU per callback to that per bare request.
    """
    bare_phases, callback_phases, ratios = [], [], []
    for i in range(rounds):
        b = run_phase(port, bare[i::rounds], connections, server, url)
        c = run_phase(port, callbacks[i::rounds], connections, server, url)
        bare_phases.append(b)
        callback_phases.append(c)
        if b["server_cpu_s"] > 0:
            ratios.append((c["server_cpu_s"] / c["requests"]) / (b["server_cpu_s"] / b["requests"]))
    return summarize(bare_phases), summarize(callback_phases), ratios


# ------------------------------------------------------------------------ profile


def start_profiler(server: subprocess.Popen, out: Path) -> subprocess.Popen:
    """py-spy on every gunicorn process (``--idle`` off: CPU samples only), until :func:`stop_profiler`."""
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(server.pid),
                            "--subprocesses", "--rate", "250", "--format", "raw", "--output", str(out),
                            "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach
    return spy


def stop_profiler(spy: subprocess.Popen) -> None:
    spy.send_signal(signal.SIGINT)
    spy.wait(60)


def print_profile(path: Path, top: int = 25) -> None:
    """Share of the CPU samples in which each function is on the stack (inclusive), highest first."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f.split(" (", 1)[0] + " (" + f.split(" (", 1)[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")[1:]]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
    print(f"profile: {total} samples; inclusive %, own %, function (file)")
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f} {100 * own.get(frame, 0) / total:5.1f}  {frame}")


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL (a new database is created next to it)")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", help="gunicorn threads per worker (default: the Procfile's)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternate slices of the bare route and the callbacks, so both meet the same load")
    parser.add_argument("--without-stale-triggers", action="store_true",
                        help="PostgreSQL: disable the reporting triggers of migration 0002 (to measure their cost)")
    parser.add_argument("--plain-gunicorn", action="store_true",
                        help="gunicorn without the service's gunicorn_conf (no access log) and in-memory metrics")
    parser.add_argument("--access-log", action="store_true",
                        help="gunicorn's access log on, as `webhook-service web` writes it without the proxy "
                             "(the Procfile's receiver runs with --no-access-log)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--prefill", type=int, default=0, metavar="N",
                        help="PostgreSQL: N rows already in the inbox and N in events before the run")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="sample the gunicorn processes with py-spy during the callback phase; "
                             "write the collapsed stacks to FILE and print the top functions (CPU time inclusive)")
    args = parser.parse_args()
    workers, threads, access_log = procfile_web_options()
    access_log = access_log or args.access_log
    threads = args.threads or threads

    workdir = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))
    url, drop = make_database(args.db, workdir)
    proc = None
    try:
        upgrade(url)
        if args.without_stale_triggers:
            disable_stale_triggers(url)
        jobs = create_jobs(url, args.sessions)
        prefill_s = prefill(url, args.prefill) if args.prefill else 0.0
        port = free_port()
        proc = start_gunicorn(url, port, workdir, workers, threads, access_log=access_log, plain=args.plain_gunicorn)

        paths = {job_id: "/callbacks/gladia/" + callback_token(job_id, SIGNING_KEY) for job_id, _ in jobs}
        callbacks = [(paths[jobs[i % len(jobs)][0]], transcript_body(jobs[i % len(jobs)][1], i))
                     for i in range(args.requests + 500)]
        warm, measured = callbacks[:500], callbacks[500:]
        bare = [("/_bench/bare", body) for _, body in measured]

        run_phase(port, warm, args.connections)  # warm-up: pools, imports, caches (stored, and counted below)
        run_phase(port, bare[:500], args.connections)
        if args.profile:  # one slice of each, the profiler on the callbacks' only
            bare_result = summarize([run_phase(port, bare, args.connections, proc, url)])
            spy = start_profiler(proc, args.profile)
            cb_result = summarize([run_phase(port, measured, args.connections, proc, url)])
            stop_profiler(spy)
            print_profile(args.profile)
            ratios = [cb_result["server_cpu_ms_per_request"] / bare_result["server_cpu_ms_per_request"]]
        else:
            bare_result, cb_result, ratios = run_alternately(port, bare, measured, args.connections, args.rounds,
                                                             proc, url)

        with session_scope(url) as s:
            stored = {
                "inbox": s.scalar(select(func.count()).select_from(InboxItem)),
                "processed": s.scalar(select(func.count()).select_from(InboxItem).where(InboxItem.status == "processed")),
                "events": s.scalar(select(func.count()).select_from(Event)),
                "utterances": s.scalar(select(func.count()).select_from(Utterance)),
            }
        sent = len(callbacks)
        stored = {name: count - (args.prefill if name in ("inbox", "processed", "events") else 0)
                  for name, count in stored.items()}  # what this run sent, beside the prefilled rows
        ok = cb_result["statuses"] == {200: len(measured)} and all(v == sent for v in stored.values())
        result = {
            "load_average_1m": round(os.getloadavg()[0], 2),
            "database": "sqlite" if args.db == "sqlite" else "postgresql",
            "server": f"gunicorn --workers {workers} --threads {threads}"
                      + (" (plain)" if args.plain_gunicorn else " -c python:webhook_service.gunicorn_conf")
                      + (" --access-logfile -" if access_log and not args.plain_gunicorn else ""),
            "stale_triggers": not args.without_stale_triggers,
            "connections": args.connections,
            "callbacks": cb_result,
            "bare_route": bare_result,
            "ratio": cb_result["rps"] / bare_result["rps"],
            "rounds": len(ratios),
            "cpu_ratio": cb_result["server_cpu_ms_per_request"] / bare_result["server_cpu_ms_per_request"],
            "cpu_ratio_per_round": [round(r, 2) for r in ratios],
            "sent": sent,
            "stored": stored,
            "ledger_ok": ok,
            "prefilled_rows": args.prefill,
            "prefill_s": round(prefill_s, 1),
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"database      {result['database']}   server {result['server']}   connections {args.connections}"
                  + ("   (reporting triggers disabled)" if args.without_stale_triggers else ""))
            for name, r in (("bare route", bare_result), ("callbacks", cb_result)):
                print(f"{name:13s} {r['rps']:8.0f} req/s   p50 {r['p50_ms']:6.1f} ms   p99 {r['p99_ms']:6.1f} ms   "
                      f"CPU/request: server {r['server_cpu_ms_per_request']:.2f} ms, "
                      f"database {r['database_cpu_ms_per_request']:.2f} ms, client {r['client_cpu_ms_per_request']:.2f} ms   "
                      f"statuses {r['statuses']}")
            if result["database"] == "postgresql":
                print(f"WAL           {cb_result['wal_bytes_per_request'] / 1024:.1f} KiB per callback, "
                      f"{cb_result['wal_fpi_per_request']:.2f} full-page images per callback, "
                      f"{cb_result['checkpoints']} checkpoint(s) during the callbacks (the whole server's WAL)")
            print(f"ratio         throughput {result['ratio']:.2f}; server CPU per callback / per bare request "
                  f"{result['cpu_ratio']:.2f}x (per round: {', '.join(f'{r:.2f}' for r in ratios)})   "
                  f"(load average at the end {result['load_average_1m']})")
            if args.prefill:
                print(f"prefilled     {args.prefill} inbox rows and {args.prefill} events ({prefill_s:.0f} s)")
            print(f"ledger        sent {sent}  stored {stored}  -> {'OK' if ok else 'VOID: sent != stored'}")
        return 0 if ok else 1
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        from webhook_service.db import dispose_engines

        dispose_engines()
        drop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
