"""Makespan: how well a backlog of files keeps Gladia's session slots busy.

N files of D seconds on S slots (``MAX_CONCURRENT_SESSIONS``), at ``STREAM_SPEED``,
through the real processes: the emulator (vad engine, its own process), the
receiver (`webhook-service web`), worker processes and Celery beat, all with
the service's default timings (sweep every 30 s, slot retry 30 s) unless told.
The files are submitted with `webhook-service submit` (a process, as a user
would) once every worker is ready; the clock starts when that command starts.

Reports, as one JSON line:

* ``makespan_s``: from the submit command's start until every job is ``done``
  (its ``end_session`` stored);
* ``ideal_s``: N x D / S / speed, and ``efficiency`` = ideal / makespan;
* ``handoff_ms`` p50/p95/max: each freed slot to the next session's
  ``POST /v2/live`` (Gladia's ``created_at`` of the session): the slots freed
  (``stream_closed_at``, sorted) matched in order with the sessions created
  after the first S;
* ``first_wave_spread_s``: from the first session's creation to the S-th's (how long the first
  wave takes to start: every slot idle until its session is created);
* ``to_reconciled_s`` p50/p95: a session's end (``stream_closed_at``) until its job is ``reconciled``;
* ``reconcile_runs``: the workers' reconciliation runs by outcome (from their
  logs, one line a run), each a ``GET /v2/live/:id``; ``retry`` counts the
  runs that found the session completed too recently and looked again later.

    .venv/bin/python bench/bench_makespan.py --files 30 --seconds 10 --slots 10
    .venv/bin/python bench/bench_makespan.py --files 60 --seconds 60 --slots 30
    .venv/bin/python bench/bench_makespan.py --files 30 --seconds 10 --slots 10 --speed 4

``--emulator-nice N`` (a diagnostic) runs the emulator at a lower CPU
priority: on one machine it shares the cores with the service, where the real
Gladia would not, and this shows how much of the hand-off is its share.

``--database`` names an existing PostgreSQL database next to which a fresh one
is created (and dropped afterwards), or ``sqlite``; ``--redis URL`` uses that
Redis database (emptied before and after), ``--redis ''`` the filesystem broker.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT))

from stack_setup import prepare, tear_down  # noqa: E402
from test_e2e_chaos import ChaosConfig, ChaosRun, EmulatorProcess, release_redis  # noqa: E402

from webhook_service.audio import synth_speechlike  # noqa: E402


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each file")
    parser.add_argument("--slots", type=int, default=10, help="MAX_CONCURRENT_SESSIONS")
    parser.add_argument("--speed", type=float, default=1.0, help="STREAM_SPEED (1 = real time)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--worker-concurrency", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14", help="'' for the filesystem broker")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra setting for every process (repeatable)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here (default: a temporary folder)")
    parser.add_argument("--emulator-nice", type=int, default=0, metavar="N",
                        help="diagnostic: run the emulator at this niceness (1-19), so that the service's processes "
                             "come first on the shared cores, as when Gladia runs elsewhere")
    args = parser.parse_args()

    workdir, database_url, pg_name = prepare(args.workdir, args.database, "makespan")
    broker = args.redis or "filesystem://"
    release_redis(broker)

    audio = workdir / "audio"
    audio.mkdir(exist_ok=True)
    for i in range(args.files):
        synth_speechlike(audio / f"file_{i:04d}.wav", args.seconds, sample_rate=16000, channels=1)

    config = ChaosConfig(files=args.files, workers=args.workers, worker_concurrency=args.worker_concurrency,
                         web_workers=2, max_sessions=args.slots, stream_speed=args.speed, kill_workers=0,
                         restart_receiver=0, timeout_s=args.timeout, faults={})
    emulator = EmulatorProcess(workdir, engine="vad", max_sessions=args.slots, log_level="INFO")
    if args.emulator_nice:
        os.setpriority(os.PRIO_PROCESS, emulator.proc.pid, args.emulator_nice)
    run = ChaosRun(config, database_url=database_url, broker_url=broker, emulator=emulator, workdir=workdir)
    # The service's own timings, not the chaos run's short ones.
    for name in ("STALE_HEARTBEAT_S", "STALE_QUEUED_S", "SWEEP_INTERVAL_S", "RECONCILE_DELAY_S",
                 "RECONCILE_DEADLINE_S", "INBOX_RETRY_AFTER_S", "HEARTBEAT_INTERVAL_S"):
        run.env.pop(name, None)
    for item in args.env:
        name, _, value = item.partition("=")
        run.env[name] = value
    try:
        run.start()
        # Submit to a running service: every worker connected to the broker and ready.
        deadline = time.monotonic() + 120
        while not all(" ready." in run.tail(f"worker{i}", 400) for i in range(args.workers)):
            if time.monotonic() > deadline:
                print("the workers did not get ready", file=sys.stderr)
                return 1
            time.sleep(0.2)
        time.sleep(1.0)
        started_wall = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "webhook_service.cli", "submit", str(audio), "--batch", f"makespan-{os.getpid()}",
             "--json"], cwd=ROOT, env=run.env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        run.job_ids = [job["id"] for job in json.loads(done.stdout)["jobs"]]
        rows = wait(database_url, run.job_ids, ("done", "reconciled"), args.timeout, "done_at")
        if rows is None:
            print(f"timed out; states {dict(run.states())}", file=sys.stderr)
            return 1
        makespan = max(r["done_at"] for r in rows) - started_wall
        rows = wait(database_url, run.job_ids, ("reconciled",), args.timeout, "reconciled_at") or rows
    finally:
        tear_down(run, emulator, broker, args.database, pg_name)

    ideal = args.files * args.seconds / args.slots / (args.speed or 1.0)
    freed = sorted(r["stream_closed_at"] for r in rows)
    created = sorted(r["gladia_created_at"] or r["starting_at"] for r in rows)
    handoffs = [(created[args.slots + i] - freed[i]) * 1000 for i in range(max(0, len(rows) - args.slots))]
    to_reconciled = [r["reconciled_at"] - r["stream_closed_at"] for r in rows if r["reconciled_at"]]
    audio_s = args.seconds / (args.speed or 1.0)
    # Where the makespan beyond the ideal goes: each session's life beyond its audio (POST to the
    # stream's close), and each session's close until its end_session is stored (done).
    beyond_audio = [r["stream_closed_at"] - (r["gladia_created_at"] or r["starting_at"]) - audio_s for r in rows]
    close_to_done = [r["done_at"] - r["stream_closed_at"] for r in rows]
    report = {
        "files": args.files, "seconds": args.seconds, "slots": args.slots, "speed": args.speed,
        "workers": args.workers, "database": database_url.split(":")[0], "broker": broker.split(":")[0],
        "makespan_s": round(makespan, 2), "ideal_s": round(ideal, 2), "efficiency": round(ideal / makespan, 3),
        "handoff_ms": {"n": len(handoffs), "p50": _r(percentile(handoffs, 0.5)), "p95": _r(percentile(handoffs, 0.95)),
                       "max": _r(max(handoffs, default=None))},
        "first_post_after_submit_s": round(created[0] - started_wall, 2),
        "first_wave_spread_s": round(created[min(args.slots, len(created)) - 1] - created[0], 2),
        "session_beyond_audio_s": {"p50": _r(percentile(beyond_audio, 0.5)),
                                   "p95": _r(percentile(beyond_audio, 0.95))},
        "close_to_done_s": {"p50": _r(percentile(close_to_done, 0.5)), "p95": _r(percentile(close_to_done, 0.95))},
        "to_reconciled_s": {"p50": _r(percentile(to_reconciled, 0.5)), "p95": _r(percentile(to_reconciled, 0.95))},
        "states": dict(_states(rows)), "reconcile_runs": _reconcile_runs(run.logs, args.workers),
        "load_average": os.getloadavg()[0], "emulator_nice": args.emulator_nice,
    }
    print(json.dumps(report))
    return 0


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _reconcile_runs(logs: Path, workers: int) -> dict[str, int]:
    """Reconciliation runs by outcome: each logs ``reconciliation OUTCOME: expected=...``."""
    from collections import Counter

    runs: Counter = Counter()
    for i in range(workers):
        for line in (logs / f"worker{i}.log").read_text(errors="replace").splitlines():
            found = re.search(r" reconciliation (\w+): expected=", line)
            if found:
                runs[found.group(1)] += 1
    return dict(runs)


def _states(rows):
    from collections import Counter

    return Counter(r["state"] for r in rows)


def wait(database_url: str, job_ids: list[str], states: tuple[str, ...], timeout: float, stamp: str):
    """Every job's row (timestamps as epoch seconds) once all have ``stamp`` set, or None on timeout."""
    from sqlalchemy import select

    from webhook_service.db import session_scope
    from webhook_service.models import Job

    columns = ("state", "starting_at", "gladia_created_at", "stream_closed_at", "done_at", "reconciled_at")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(database_url) as session:
            jobs = session.scalars(select(Job).where(Job.id.in_(job_ids))).all()
            rows = [{c: _epoch(getattr(j, c)) if c != "state" else j.state for c in columns} for j in jobs]
        if all(r[stamp] is not None or r["state"] == "failed" for r in rows) and len(rows) == len(job_ids):
            return rows
        time.sleep(0.2)
    return None


def _epoch(value):
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


if __name__ == "__main__":
    sys.exit(main())
