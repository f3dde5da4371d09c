"""PostgreSQL's CPU per callback, and what each part of the schema costs of it.

    .venv/bin/python bench/bench_receiver_sql.py --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/bench_receiver_sql.py --db ... --variants as-is,no-stale-triggers,no-foreign-keys

For each variant, in turn and ``--repeat`` times (alternating, so that a burst
of other work on the machine weighs on every variant alike): a fresh database
with the migrations applied (``schema-0006``: only up to 0006, the schema
before 0007's index changes), the variant's change made to it (see
``VARIANTS``: diagnostics that take something out of the schema, to price
it; none of them is a setting of the service), then the callbacks of
``bench_callbacks.py`` sent to the real app in this process from
``--threads`` threads (the concurrency of the served receiver: the backends
then contend for the same job rows as they do behind gunicorn), and the CPU
time of the database's backends (``/proc``) divided by the callbacks. Every
callback must be answered 200 and stored (inbox, events, utterances), or the
run is void. The Python side is not measured here (``bench_receiver_cpu.py``
is for that); the figure is what the database does per callback. Each run
also prints the size of the three tables' indexes per callback (what every
callback adds to them on disk) and the rows the reporting triggers logged per
callback (``session_stats_stale``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(1, str(BENCH))

import bench_callbacks as bc  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from webhook_service.models import Event, InboxItem, Utterance  # noqa: E402


def _migration(name: str):
    """A module of migrations/versions (not a package), for a variant that undoes one of them."""
    path = BENCH.parent / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What each variant takes out of the fresh schema (PostgreSQL statements, run after the migrations).
VARIANTS: dict[str, list[str]] = {
    "as-is": [],
    "schema-0006": [],  # the schema before migration 0007 (its indexes), for a before/after in one run
    "no-stale-triggers": [f"ALTER TABLE {t} DISABLE TRIGGER USER" for t in ("callback_inbox", "events", "utterances")],
    "no-foreign-keys": [
        "ALTER TABLE callback_inbox DROP CONSTRAINT fk_callback_inbox_job_id_jobs",
        "ALTER TABLE events DROP CONSTRAINT fk_events_job_id_jobs",
        "ALTER TABLE events DROP CONSTRAINT fk_events_inbox_id_callback_inbox",
        "ALTER TABLE utterances DROP CONSTRAINT fk_utterances_job_id_jobs",
    ],
    "no-secondary-indexes": [
        f"DROP INDEX IF EXISTS {name}" for name in (
            "ix_callback_inbox_body_kept", "ix_callback_inbox_gladia_id_event", "ix_callback_inbox_job_id",
            "ix_callback_inbox_received_at", "ix_callback_inbox_status_received_at", "ix_events_gladia_id_type",
            "ix_events_job_id", "ix_events_received_at", "ix_utterances_job_id")],
    # Before migration 0009: the reporting triggers log a row for every row written, not once per transaction.
    "stale-every-row": [_migration("0009_stale_log_once_per_transaction").EVERY_ROW],
    # Not durable (a commit returns before its WAL is on disk): only to price the WAL flush of each commit.
    "async-commit": ["ALTER DATABASE {database} SET synchronous_commit = off"],
}


def run_variant(variant: str, args, workdir: Path) -> dict:
    url, drop = bc.make_database(args.db, workdir)
    try:
        bc.upgrade(url, "0006" if variant == "schema-0006" else "head")
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for statement in VARIANTS[variant]:
                conn.execute(text(statement.format(database=f'"{engine.url.database}"')))
        engine.dispose()
        jobs = bc.create_jobs(url, args.sessions)
        os.environ.update(DATABASE_URL=url, CALLBACK_SIGNING_KEY=bc.SIGNING_KEY, DATA_DIR=str(workdir / "data"),
                          CELERY_BROKER_URL="memory://", LOG_LEVEL="WARNING", DB_POOL_SIZE=str(args.threads),
                          DB_MAX_OVERFLOW="0")  # every backend stays open, so that its CPU is counted
        app = _App()
        from webhook_service.tokens import callback_token

        paths = {job_id: "/callbacks/gladia/" + callback_token(job_id, bc.SIGNING_KEY) for job_id, _ in jobs}
        total = args.warmup + args.requests
        bodies = [(paths[jobs[i % len(jobs)][0]], bc.transcript_body(jobs[i % len(jobs)][1], i)) for i in range(total)]
        statuses: dict[str, int] = {}
        lock = threading.Lock()

        def call(path: str, body: bytes) -> None:
            def start_response(status, headers, exc_info=None):
                with lock:
                    statuses[status[:3]] = statuses.get(status[:3], 0) + 1

            b"".join(app(bc.post_environ(path, body), start_response))

        def send(chunk: list[tuple[str, bytes]]) -> None:
            threads = [threading.Thread(target=lambda part=chunk[k::args.threads]: [call(*r) for r in part])
                       for k in range(args.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        send(bodies[:args.warmup])  # pools, prepared statements, caches
        pids = bc._database_pids(url)
        cpu0, t0 = bc._cpu_seconds(pids), time.perf_counter()
        send(bodies[args.warmup:])
        elapsed, cpu = time.perf_counter() - t0, bc._cpu_seconds(pids) - cpu0
        app.dispose()
        engine = create_engine(url)
        with engine.connect() as conn:
            stored = {name: conn.execute(select(func.count()).select_from(model)).scalar_one()
                      for name, model in (("inbox", InboxItem), ("events", Event), ("utterances", Utterance))}
            marks = conn.execute(text("SELECT count(*) FROM session_stats_stale")).scalar_one()
            index_bytes = conn.execute(text(
                "SELECT sum(pg_relation_size(indexrelid)) FROM pg_index "
                "WHERE indrelid IN ('callback_inbox'::regclass, 'events'::regclass, 'utterances'::regclass)")).scalar_one()
        engine.dispose()
        ok = statuses == {"200": total} and set(stored.values()) == {total}
        return {"variant": variant, "database_ms": cpu / args.requests * 1000, "callbacks_per_s": args.requests / elapsed,
                "backends": len(pids), "ok": ok, "stale_marks_per_callback": marks / total,
                "index_bytes_per_callback": index_bytes / total, "stored": stored, "statuses": statuses}
    finally:
        drop()


class _App:
    """The real WSGI app on this run's database, and a way to let its connections go."""

    def __init__(self):
        from webhook_service import db
        from webhook_service.web import create_app

        db.dispose_engines()
        self._app = create_app()

    def __call__(self, environ, start_response):
        return self._app(environ, start_response)

    def dispose(self) -> None:
        from webhook_service import db

        db.dispose_engines()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL URL (a new database is created next to it per run)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8, help="concurrent callbacks (gunicorn: 2 x 4 threads)")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not args.db.startswith("postgresql"):
        raise SystemExit("bench_receiver_sql.py measures PostgreSQL: give --db a PostgreSQL URL")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s): {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-receiver-sql-"))
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.repeat):
        for variant in variants:
            r = run_variant(variant, args, workdir)
            results[variant].append(r)
            print(f"{variant:22} PostgreSQL CPU {r['database_ms']:.3f} ms per callback   {r['callbacks_per_s']:6.0f}/s   "
                  f"indexes {r['index_bytes_per_callback']:.0f} B/callback   stale log {r['stale_marks_per_callback']:.1f} rows/callback   "
                  f"{'OK' if r['ok'] else 'VOID ' + str((r['statuses'], r['stored']))}   (load {os.getloadavg()[0]:.1f})",
                  flush=True)
    print("\nmedian PostgreSQL CPU per callback:")
    base = statistics.median(r["database_ms"] for r in results[variants[0]])
    for variant in variants:
        m = statistics.median(r["database_ms"] for r in results[variant])
        print(f"  {variant:22} {m:.3f} ms   ({m - base:+.3f} ms against {variants[0]})")
    return 0 if all(r["ok"] for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
