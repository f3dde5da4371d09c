"""The long reliability run: hundreds of sessions under faults, crashes and restarts.

The same scenario as ``tests/e2e/test_e2e_chaos.py`` (the same code: its
``ChaosRun``), scaled up: PostgreSQL and Redis, several worker processes,
several worker SIGKILLs and receiver restarts, and the exact ledger check at
the end. Prints one JSON line with the figures for bench/README.md.

    .venv/bin/python bench/bench_chaos.py --sessions 300 --workers 3 \\
        --database postgresql+psycopg://postgres@127.0.0.1:5432/test --redis redis://127.0.0.1:6379/15

``--database`` names an existing PostgreSQL database next to which a fresh one
is created (and dropped afterwards); ``sqlite`` uses a file in the work folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT))

from stack_setup import prepare, tear_down  # noqa: E402
from test_e2e_chaos import (  # noqa: E402
    ChaosConfig,
    ChaosRun,
    EmulatorProcess,
    isolated_redis_url,
    verify,
)



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    # Threads well above the live sessions, so short tasks (sweep, reconcile, resumptions) never
    # wait for a stream to end; each process's pool stays within PostgreSQL's 100 connections.
    parser.add_argument("--worker-concurrency", type=int, default=40)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--max-sessions", type=int, default=30, help="MAX_CONCURRENT_SESSIONS")
    parser.add_argument("--repeat-audio", type=int, default=8,
                        help="Each file is this many bundled recordings end to end (~2.4 s each).")
    parser.add_argument("--speed", type=float, default=4.0, help="STREAM_SPEED (1 = real time).")
    parser.add_argument("--kills", type=int, default=3, help="Worker SIGKILLs (each followed by a restart).")
    parser.add_argument("--receiver-restarts", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--stale-heartbeat", type=float, default=8.0, help="STALE_HEARTBEAT_S")
    parser.add_argument("--stale-queued", type=float, default=120.0, help="STALE_QUEUED_S")
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="'' for the filesystem broker")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep logs here (default: a temporary folder).")
    args = parser.parse_args()

    workdir, database_url, pg_name = prepare(args.workdir, args.database, "chaos")
    broker = isolated_redis_url(args.redis) if args.redis else "filesystem://"

    config = ChaosConfig(files=args.sessions, workers=args.workers, worker_concurrency=args.worker_concurrency,
                         web_workers=args.web_workers, max_sessions=args.max_sessions,
                         stream_speed=args.speed, repeat_audio=args.repeat_audio, kill_workers=0,
                         restart_receiver=0, timeout_s=args.timeout, seed=args.seed,
                         stale_heartbeat_s=args.stale_heartbeat, stale_queued_s=args.stale_queued)
    # INFO: the emulator logs why each session's recording ended, which explains any `incomplete` job.
    emulator = EmulatorProcess(workdir, engine="vad", max_sessions=args.max_sessions + 10, log_level="INFO")
    run = ChaosRun(config, database_url=database_url, broker_url=broker, emulator=emulator, workdir=workdir)
    report: dict = {}
    try:
        # Crashes and restarts spread over the run, from a side thread.
        chaos = threading.Thread(target=_inject, args=(run, args.kills, args.receiver_restarts), daemon=True)
        run.audio_files()
        run.start()
        run.started = time.monotonic()
        run.submit()
        chaos.start()
        states = run.wait_settled()
        chaos.join(60)
        run.events.append(f"{run.elapsed():.1f}s settled: {dict(states)}")
        if states["reconciled"] != len(run.job_ids):
            # The run fails its check; still print what happened, for the results table.
            emulator.reset_faults()
            emulator.wait_callbacks(60)
            print(json.dumps(summarize(database_url, emulator, run, states)))
            print(f"not every job reconciled: {dict(states)}", file=sys.stderr)
            return 1
        emulator.reset_faults()
        emulator.wait_callbacks(60)
        report = verify(database_url, emulator, run.job_ids, run.events, run.elapsed())
        report.update(broker=broker.split("://")[0], database=database_url.split(":")[0], workers=args.workers,
                      speed=args.speed, seed=args.seed, faults=config.faults)
        print(json.dumps(report))
        return 0
    finally:
        tear_down(run, emulator, broker, args.database, pg_name)


def summarize(database_url: str, emulator: EmulatorProcess, run: ChaosRun, states) -> dict:
    """Figures of a run whose check failed: states, failure reasons, faults, repairs."""
    from collections import Counter

    from sqlalchemy import func, select

    from webhook_service.db import session_scope
    from webhook_service.models import Job, ReconciliationRun

    with session_scope(database_url) as session:
        jobs = session.scalars(select(Job).where(Job.id.in_(run.job_ids))).all()
        reasons = Counter((j.last_error or "").split(" with ")[0][:80] for j in jobs if j.state != "reconciled")
        runs = session.execute(select(func.count(), func.coalesce(func.sum(ReconciliationRun.missing), 0),
                                      func.coalesce(func.sum(ReconciliationRun.repaired), 0))
                               .where(ReconciliationRun.job_id.in_(run.job_ids))).one()
        audio_s = sum(j.audio_duration_s or 0 for j in jobs)
        unsent = sum((j.bytes_total or 0) - (j.bytes_acked or 0) for j in jobs if j.state != "reconciled")
        total = sum(j.bytes_total or 0 for j in jobs)
    entries = emulator.ledger()["entries"]
    return {"sessions": len(jobs), "states": dict(states), "failure_reasons": dict(reasons),
            "audio_hours": round(audio_s / 3600, 4), "audio_bytes_not_transcribed": unsent,
            "audio_share_not_transcribed": round(unsent / total, 5) if total else None,
            "callbacks": len(entries), "dropped": sum(e["outcome"] == "dropped" for e in entries),
            "duplicated": sum(bool(e["duplicated"]) for e in entries),
            "reconciliation_runs": runs[0], "missing_found": int(runs[1]), "repaired": int(runs[2]),
            "events": run.events, "elapsed_s": round(run.elapsed(), 1)}


def _inject(run: ChaosRun, kills: int, restarts: int) -> None:
    """Alternate worker SIGKILLs (mid-stream) and receiver restarts, a few seconds apart."""
    actions: list[str] = []
    for i in range(max(kills, restarts)):
        actions += (["kill"] if i < kills else []) + (["restart"] if i < restarts else [])
    for action in actions:
        time.sleep(5)
        try:
            if action == "kill":
                run.kill_a_worker_mid_stream(timeout_s=60)
            else:
                run.restart_receiver()
        except AssertionError as exc:  # nothing streaming any more: the run is ending
            run.events.append(f"{run.elapsed():.1f}s {action} skipped: {exc}")


if __name__ == "__main__":
    sys.exit(main())
