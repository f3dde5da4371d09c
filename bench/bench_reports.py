"""Reporting benchmark: every report over 10,000 sessions and 1,000,000 utterances in PostgreSQL.

    .venv/bin/python bench/bench_reports.py [--pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
                                            [--sessions 10000] [--utterances 1000000] [--runs 15]
                                            [--keep | --reuse DATABASE]

Creates a private database next to the one named by ``--pg``, migrates it,
bulk-loads a month of synthetic traffic with COPY (sessions, final
utterances, the events and inbox rows that delivered them, results and
reconciliation runs), then times:

* the first refresh of the per-session statistics cache (every session stale);
* each report through ``reports.run_report`` (what the CLI, the API and the
  dashboard call: filter validation + cache refresh + query + formatting),
  unfiltered, for one day, and for one batch: median and p95 of ``--runs``;
* each view read directly with ``SELECT *`` (what an analyst's SQL costs);
* the refresh after new callbacks touched 20 sessions, and a report right after.

Prints a Markdown table for bench/README.md. The database is dropped at the
end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webhook_service import reports  # noqa: E402
from webhook_service.db import dispose_engines, get_engine  # noqa: E402
from webhook_service.migrate import upgrade  # noqa: E402

LANGUAGES = (("en", 0.6), ("fr", 0.2), ("de", 0.1), ("es", 0.08), (None, 0.02))
START = datetime(2026, 10, 1, tzinfo=timezone.utc)
DAYS = 30
BATCHES = 20


def _pick_language(rng: random.Random) -> str | None:
    x, acc = rng.random(), 0.0
    for language, weight in LANGUAGES:
        acc += weight
        if x < acc:
            return language
    return "en"


def load(dsn: str, sessions: int, utterances: int, seed: int = 7) -> dict[str, int]:
    """Bulk-load synthetic traffic with COPY, without the staleness triggers, then mark all stale."""
    rng = random.Random(seed)
    per_session = utterances // sessions
    counts = dict.fromkeys(("jobs", "utterances", "events", "inbox", "results", "runs"), 0)
    with psycopg.connect(dsn) as conn:
        conn.execute("SET session_replication_role = replica")  # skip triggers during the bulk load
        batch_ids = [str(uuid.uuid4()) for _ in range(BATCHES)]
        with conn.cursor().copy("COPY batches (id, name, session_config, created_at) FROM STDIN") as copy:
            for i, batch_id in enumerate(batch_ids):
                copy.write_row((batch_id, f"batch-{i:02d}", "{}", START))
        jobs = []
        with conn.cursor().copy(
            "COPY jobs (id, batch_id, source_path, audio_duration_s, audio_channels, session_config, custom_metadata,"
            " state, created_at, updated_at, queued_at, starting_at, streaming_at, stream_closed_at, processing_at,"
            " done_at, reconciled_at, failed_at, gladia_id, bytes_sent, bytes_acked, attempts, reconnects,"
            " last_error) FROM STDIN"
        ) as copy:
            for i in range(sessions):
                job_id, gladia_id = str(uuid.uuid4()), str(uuid.uuid4())
                created = START + timedelta(seconds=rng.uniform(0, DAYS * 86400))
                duration = rng.uniform(60, 900)
                channels = 2 if rng.random() < 0.2 else 1
                failed = rng.random() < 0.02
                streaming = created + timedelta(seconds=rng.uniform(0.5, 5))
                closed = streaming + timedelta(seconds=duration)
                done = closed + timedelta(seconds=rng.lognormvariate(1.0, 0.5))
                reconciled = done + timedelta(seconds=rng.uniform(5, 15))
                state = "failed" if failed else "reconciled"
                copy.write_row((
                    job_id, batch_ids[i % BATCHES], f"/audio/{i:05d}.wav", duration, channels, "{}", "{}", state,
                    created, reconciled, created, created, streaming, None if failed else closed,
                    None if failed else closed, None if failed else done, None if failed else reconciled,
                    streaming + timedelta(seconds=3) if failed else None, gladia_id, 0, 0, 1, 0,
                    "stream: connection reset by peer" if failed else None,
                ))
                jobs.append((job_id, gladia_id, created, streaming, duration, failed, closed, done))
        counts["jobs"] = len(jobs)

        with conn.cursor().copy(
            "COPY utterances (gladia_id, job_id, utterance_id, is_final, channel, start_s, end_s, text, language,"
            " confidence, words, word_count, source, created_at, received_at, updated_at) FROM STDIN"
        ) as ucopy:
            for job_id, gladia_id, _, streaming, duration, _, _, _ in jobs:
                step = duration / per_session
                for n in range(per_session):
                    start = n * step
                    end = start + step * rng.uniform(0.5, 0.95)
                    words = rng.randint(3, 25)
                    sent = streaming + timedelta(seconds=end + 0.3)
                    ucopy.write_row((gladia_id, job_id, f"00_{n:08d}", True, 0, round(start, 3), round(end, 3),
                                     " words" * words, _pick_language(rng), round(rng.betavariate(8, 1.5), 4),
                                     "[]", words, "callback", sent, sent, sent))
                    counts["utterances"] += 1
        with conn.cursor().copy(
            "COPY events (gladia_id, job_id, message_key, type, source, created_at, received_at, payload)"
            " FROM STDIN"
        ) as ecopy:
            for job_id, gladia_id, _, streaming, duration, _, _, _ in jobs:
                step = duration / per_session
                for n in range(per_session):
                    sent = streaming + timedelta(seconds=(n + 1) * step)
                    x = rng.random()
                    source = "callback" if x < 0.9 else "websocket" if x < 0.98 else "reconcile"
                    received = sent + timedelta(seconds=rng.lognormvariate(-2.5, 0.6))
                    ecopy.write_row((gladia_id, job_id, uuid.uuid4().hex + uuid.uuid4().hex, "transcript", source,
                                     sent, received, "{}"))
                    counts["events"] += 1
        with conn.cursor().copy(
            "COPY callback_inbox (dedupe_key, kind, received_at, headers, body, event, gladia_id, job_id, status,"
            " error, attempts, duplicates) FROM STDIN"
        ) as icopy:
            for job_id, gladia_id, _, streaming, duration, _, _, _ in jobs:
                for n in range(int(per_session * 0.9)):
                    received = streaming + timedelta(seconds=n * duration / per_session + 0.1)
                    x = rng.random()
                    status = "processed" if x < 0.998 else "failed"
                    icopy.write_row((uuid.uuid4().hex + uuid.uuid4().hex, "callback", received, "{}", b"{}",
                                     "live.transcript", gladia_id, job_id, status,
                                     "normalize: unexpected payload" if status == "failed" else None, 1,
                                     1 if rng.random() < 0.01 else 0))
                    counts["inbox"] += 1
            for n in range(200):  # callbacks with a bad token: no session
                icopy.write_row((uuid.uuid4().hex + uuid.uuid4().hex, "callback",
                                 START + timedelta(seconds=rng.uniform(0, DAYS * 86400)), "{}", b"{}", None, None,
                                 None, "rejected", "bad callback token", 0, 0))
                counts["inbox"] += 1
        with conn.cursor().copy(
            "COPY session_results (gladia_id, job_id, languages, audio_duration_s, billing_time_s,"
            " number_of_channels, post_final_received_at, gladia_status, updated_at) FROM STDIN"
        ) as rcopy:
            for job_id, gladia_id, _, _, duration, failed, closed, done in jobs:
                if failed:
                    continue
                rcopy.write_row((gladia_id, job_id, json.dumps(["en"]), duration, duration, 1, done, "done", done))
                counts["results"] += 1
        with conn.cursor().copy(
            "COPY reconciliation_runs (job_id, gladia_id, trigger, started_at, finished_at, outcome, reason,"
            " expected, received, missing, duplicates, mismatched, repaired) FROM STDIN"
        ) as rrcopy:
            for job_id, gladia_id, _, _, _, failed, _, done in jobs:
                at = done + timedelta(seconds=10)
                if failed:
                    rrcopy.write_row((job_id, gladia_id, "sweep", at, at, "failed", "session not found",
                                      0, 0, 0, 0, 0, 0))
                else:
                    missing = rng.choice((0, 0, 0, 0, 1, 2))
                    rrcopy.write_row((job_id, gladia_id, "end_session", at, at, "reconciled", None,
                                      per_session + 4, per_session + 4 - missing, missing, 0, 0, missing))
                counts["runs"] += 1
        conn.execute("SET session_replication_role = DEFAULT")
        conn.execute("INSERT INTO session_stats_stale (job_id) SELECT id FROM jobs")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return counts


def timed(fn, runs: int) -> tuple[float, float]:
    fn()  # warm-up: connection pool, plan cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--utterances", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    parser.add_argument("--reuse", metavar="DATABASE", help="Time an existing benchmark database (kept with "
                        "--keep) instead of loading a new one; it is kept.")
    args = parser.parse_args()

    base = make_url(args.pg)
    name = args.reuse or f"bench_reports_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    if not args.reuse:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    dsn = base.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    try:
        load_s = 0.0
        if args.reuse:
            with get_engine(url).connect() as conn:
                counts = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                          for table in ("jobs", "utterances", "events", "callback_inbox", "reconciliation_runs")}
            counts["inbox"], counts["runs"] = counts.pop("callback_inbox"), counts.pop("reconciliation_runs")
            with get_engine(url).begin() as conn:  # time a full refresh again
                conn.execute(text("INSERT INTO session_stats_stale (job_id) SELECT id FROM jobs"))
        else:
            upgrade(url)
            started = time.perf_counter()
            counts = load(dsn, args.sessions, args.utterances)
            load_s = time.perf_counter() - started
        print(f"loaded {counts} in {load_s:.0f} s", file=sys.stderr)

        started = time.perf_counter()
        refreshed = reports.refresh_session_stats(url)
        first_refresh_s = time.perf_counter() - started
        print(f"first refresh: {refreshed} sessions in {first_refresh_s:.1f} s", file=sys.stderr)

        with get_engine(url).connect() as conn:
            day = conn.execute(text("SELECT day FROM report_daily_usage ORDER BY day LIMIT 1 OFFSET 10")).scalar()
        results = []
        for report in reports.REPORTS:
            row = [report]
            for filters in ({}, {"since": day, "until": day}, {"batch": "batch-03"}):
                size = len(reports.run_report(url, report, **filters).rows)
                median, p95 = timed(lambda: reports.run_report(url, report, **filters), args.runs)
                row.append((median, p95, size))
            results.append(row)
            print(f"{report}: {row[1:]}", file=sys.stderr)

        # What an export of every session reads page by page: the first and the last page of 1,000.
        pages = []
        for offset in (0, 9_000):
            page = {"limit": 1_000, "offset": offset}
            size = len(reports.run_report(url, "session_summary", **page).rows)
            pages.append((offset, *timed(lambda: reports.run_report(url, "session_summary", **page), args.runs), size))

        views = []
        for view in ("report_daily_usage", "report_session_summary", "report_callback_health",
                     "report_language_mix", "report_error_breakdown"):
            def read(view=view):
                with get_engine(url).connect() as conn:
                    return conn.execute(text(f"SELECT * FROM {view}")).fetchall()
            views.append((view, *timed(read, args.runs), len(read())))

        # New callbacks for 20 sessions: the triggers mark them; the next report refreshes them.
        with get_engine(url).begin() as conn:
            conn.execute(text(
                "INSERT INTO utterances (gladia_id, job_id, utterance_id, is_final, channel, start_s, end_s, text,"
                " language, confidence, words, word_count, source, received_at, updated_at)"
                " SELECT gladia_id, id, :tag || n, true, 0, 1000 + n, 1001 + n, ' late', 'en', 0.9, '[]', 1,"
                " 'callback', now(), now() FROM jobs, generate_series(1, 5) AS n"
                " WHERE id IN (SELECT id FROM jobs ORDER BY id LIMIT 20)"), {"tag": f"late_{uuid.uuid4().hex[:8]}_"})
        started = time.perf_counter()
        rows = reports.run_report(url, "daily_usage").rows
        incremental_ms = (time.perf_counter() - started) * 1000
        assert rows

        print()
        print(f"Data: {counts['jobs']:,} sessions over {DAYS} days in {BATCHES} batches, "
              f"{counts['utterances']:,} final utterances, {counts['events']:,} events, "
              f"{counts['inbox']:,} inbox rows, {counts['runs']:,} reconciliation runs"
              + (f" (bulk load {load_s:.0f} s)." if load_s else "."))
        import os

        print(f"Load average during the run: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores).")
        print()
        print("| Report | all days: median / p95 (rows) | one day | one batch | target |")
        print("|---|---|---|---|---|")
        for report, *cells in results:
            worst = max(c[1] for c in cells)
            shown = " | ".join(f"{m:.0f} / {p:.0f} ms ({n:,})" for m, p, n in cells)
            print(f"| `{report}` | {shown} | {'met' if worst <= 200 else 'MISSED'} (≤ 200 ms) |")
        print()
        print("| `session_summary`, all days, one page | median | p95 | rows |")
        print("|---|---|---|---|")
        for offset, median, p95, size in pages:
            print(f"| `--limit 1000 --offset {offset}` | {median:.0f} ms | {p95:.0f} ms | {size:,} |")
        print()
        print("| View (`SELECT *`) | median | p95 | rows |")
        print("|---|---|---|---|")
        for view, median, p95, size in views:
            print(f"| `{view}` | {median:.0f} ms | {p95:.0f} ms | {size:,} |")
        print()
        print(f"First refresh of the statistics cache (all {refreshed:,} sessions stale): {first_refresh_s:.1f} s. "
              f"`daily_usage` right after new utterances for 20 sessions (refresh included): "
              f"{incremental_ms:.0f} ms.")
    finally:
        dispose_engines()
        if not (args.keep or args.reuse):
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
