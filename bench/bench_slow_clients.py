"""Callback delay while slow clients trickle bytes at the receiver, with and without the proxy.

    .venv/bin/python bench/bench_slow_clients.py --db sqlite --connections 0,12,50 --seconds 30
    .venv/bin/python bench/bench_slow_clients.py --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres

For each mode (``proxy``: ``webhook-service proxy`` (nginx) in front of ``webhook-service web``
(gunicorn, ``--workers`` processes, threads as ``gunicorn_conf``), as the Procfile runs them; ``direct``: gunicorn alone, as before)
and each number N of slow connections, one run:

1. a fresh database (a SQLite file, or a new PostgreSQL database next to the one named), one
   streaming job with its session id, the receiver started on it;
2. N connections trickle one byte a second at the callback route (half a request header, half a
   body announced by Content-Length), reconnecting whenever the server closes them;
3. after 3 s, a valid signed callback (a final transcript) every ``--every`` seconds for
   ``--seconds``, each given ``--timeout`` seconds to be answered;
4. the callback delay: time until the whole answer was read (p50, max), how many timed out, and
   sent = stored (every 200 answer's inbox row is in the database) or the run is void.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from bench_callbacks import make_database  # noqa: E402
from message_fixtures import callback_body, transcript  # noqa: E402
from receiver_stack import ReceiverStack, Tricklers, signing_key  # noqa: E402
from webhook_service import gunicorn_conf  # noqa: E402
from webhook_service.db import dispose_engines, session_scope  # noqa: E402
from webhook_service.migrate import upgrade  # noqa: E402
from webhook_service.models import InboxItem, Job  # noqa: E402
from webhook_service.tokens import callback_token  # noqa: E402


def streaming_job(url: str) -> tuple[str, str]:
    gladia_id = str(uuid.uuid4())
    with session_scope(url) as s:
        job = Job(source_path="/bench/slow.wav", gladia_id=gladia_id)
        job.advance("starting")
        job.advance("streaming")
        s.add(job)
        s.flush()
        return job.id, gladia_id


def probe(stack: ReceiverStack, path: str, gladia_id: str, n: int, timeout_s: float) -> tuple[int | None, float, int]:
    """One callback: (status or None on timeout, seconds, inbox id or 0)."""
    body = callback_body(transcript(f"00_{n:08d}", text=f" probe {n}", gid=gladia_id), gladia_id)
    started = time.monotonic()
    try:
        status, answer, delay = stack.post(path, body, timeout_s=timeout_s)
    except (socket.timeout, TimeoutError, OSError):
        return None, time.monotonic() - started, 0
    return status, delay, (answer or {}).get("inbox_id", 0) if status == 200 else 0


def one_run(db: str, mode: str, connections: int, args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-slow-"))
    url, drop = make_database(db, workdir)
    stack = None
    try:
        upgrade(url)
        job_id, gladia_id = streaming_job(url)
        stack = ReceiverStack(url, workdir, key=signing_key(), proxy=mode == "proxy", workers=args.workers).start()
        path = "/callbacks/gladia/" + callback_token(job_id, stack.key)
        tricklers = Tricklers(stack.port, path, count=connections, interval_s=1.0).start() if connections else None
        results = []
        try:
            time.sleep(3.0)
            started = time.monotonic()
            while time.monotonic() - started < args.seconds:
                results.append(probe(stack, path, gladia_id, len(results), args.timeout))
                time.sleep(max(0.0, args.every - results[-1][1]))
        finally:
            if tricklers:
                tricklers.stop()
        with session_scope(url) as s:
            stored = set(s.scalars(select(InboxItem.id).where(InboxItem.job_id == job_id)))
        answered = [r for r in results if r[0] == 200]
        delays = sorted(r[1] for r in answered)
        return {
            "mode": mode,
            "slow_connections": connections,
            "bytes_trickled": tricklers.bytes_sent if tricklers else 0,
            "callbacks": len(results),
            "answered_200": len(answered),
            "timed_out": sum(1 for r in results if r[0] is None),
            "p50_ms": round(1000 * statistics.median(delays), 1) if delays else None,
            "max_ms": round(1000 * delays[-1], 1) if delays else None,
            "ledger_ok": {r[2] for r in answered} <= stored and len(stored) == len(answered),
        }
    finally:
        if stack is not None:
            stack.stop()
        dispose_engines()
        drop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL (a new database is created next to it)")
    parser.add_argument("--connections", default="0,12,50", help="numbers of slow connections, one run each")
    parser.add_argument("--modes", default="proxy,direct", help="proxy, direct or both")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long callbacks are sent while they trickle")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between callbacks")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a callback is given to be answered")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn processes")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists() and "proxy" in args.modes:
        raise SystemExit("nginx not found: run `make system-deps`")
    runs = [one_run(args.db, mode, int(n), args) for mode in args.modes.split(",") for n in args.connections.split(",")]
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0 if all(r["ledger_ok"] for r in runs) else 1
    print(f"database {'sqlite' if args.db == 'sqlite' else 'postgresql'}   gunicorn --workers {args.workers} --threads {gunicorn_conf.threads}"
          f"   a callback every {args.every:g} s for {args.seconds:g} s, timeout {args.timeout:g} s")
    for r in runs:
        print(f"{r['mode']:7s} {r['slow_connections']:4d} slow connections   callbacks {r['callbacks']:3d}   "
              f"answered {r['answered_200']:3d}   timed out {r['timed_out']:3d}   "
              f"delay p50 {r['p50_ms']} ms   max {r['max_ms']} ms   "
              f"ledger {'OK' if r['ledger_ok'] else 'VOID'}")
    return 0 if all(r["ledger_ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
