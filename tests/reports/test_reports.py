"""Reports and views on a hand-checked data set (tests/report_fixtures.py), on each database."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import delete, insert, select, text, update

import report_fixtures
from report_fixtures import utterance
from webhook_service import reports
from webhook_service.db import is_postgres, session_scope
from webhook_service.models import Job, SessionStats, SessionStatsStale, Utterance


@pytest.fixture
def loaded(db_url: str) -> str:
    report_fixtures.load(db_url)
    return db_url


def rows(url: str, name: str, **filters) -> list[dict]:
    return reports.run_report(url, name, **filters).rows


def pick(rows_: list[dict], *names: str) -> list[tuple]:
    return [tuple(row[n] for n in names) for row in rows_]


# ------------------------------------------------------------------ each report

def test_daily_usage(loaded):
    result = rows(loaded, "daily_usage")
    assert result == [
        {"day": "2026-03-01", "sessions": 3, "completed_sessions": 2, "failed_sessions": 1,
         # (120 + 60 + 30) s; billed (120x2 + 60 + 30) s; Gladia billed only A's 240 s.
         "audio_hours": round(210 / 3600, 6), "sessions_without_duration": 0,
         "billed_hours": round(330 / 3600, 6), "gladia_billed_hours": round(240 / 3600, 6),
         # A's finals: 2.0 + 1.5 + 3.5 + 0.5 s; the partial is not counted.
         "speech_s": 7.5, "utterances": 4, "words": 10,
         # A: one failed callback; B: failed + Gladia error + rejected callback + failed reconciliation.
         "errors": 5},
        {"day": "2026-03-02", "sessions": 2, "completed_sessions": 1, "failed_sessions": 0,
         "audio_hours": None, "sessions_without_duration": 2, "billed_hours": None, "gladia_billed_hours": None,
         "speech_s": 1.25, "utterances": 1, "words": 2, "errors": 0},
    ]


def test_session_summary(loaded):
    by_id = {row["job_id"]: row for row in rows(loaded, "session_summary")}
    assert [row for row in by_id] == ["job-d", "job-c", "job-e", "job-b", "job-a"]  # newest first
    a = by_id["job-a"]
    assert a["batch"] == "calls" and a["state"] == "reconciled" and a["day"] == "2026-03-01"
    assert a["created_at"] == "2026-03-01T10:00:00+00:00"
    assert (a["audio_duration_s"], a["audio_channels"], a["billed_s"]) == (120.0, 2, 240.0)
    assert (a["queue_s"], a["stream_s"], a["close_to_final_s"], a["total_s"]) == (2.0, 120.5, 3.25, 130.0)
    assert (a["utterances"], a["words"], a["speech_s"]) == (4, 10, 7.5)
    # confidences 0.6 0.8 0.9 0.95: mean 0.8125; p10 at rank 0.3 -> 0.6 + 0.3 x 0.2
    assert (a["confidence_mean"], a["confidence_p10"], a["languages"]) == (0.8125, 0.66, "en,fr")
    assert (a["events"], a["callback_events"], a["websocket_events"], a["reconcile_events"]) == (5, 3, 1, 1)
    assert (a["callback_delay_median_s"], a["callback_delay_max_s"]) == (0.4, 1.0)
    assert (a["callbacks_received"], a["callback_duplicates"], a["callbacks_failed"]) == (3, 2, 1)
    # two runs: latest expected 12, missing 2 + 1, repaired 2 + 1 -> (12 - 3) / 12
    assert (a["reconciliation_runs"], a["reconciliation_outcome"], a["expected_messages"]) == (2, "reconciled", 12)
    assert (a["missing_found"], a["duplicates_found"], a["repaired"]) == (3, 1, 3)
    assert a["callback_completeness"] == 0.75 and a["errors"] == 1

    b = by_id["job-b"]
    assert (b["state"], b["last_error"], b["gladia_error_code"], b["errors"]) == (
        "failed", "stream: connection refused", 500, 4)
    assert (b["queue_s"], b["total_s"]) == (None, 30.0)
    # Something was received for B, but no utterance: 0, and the confidence is not reported.
    assert (b["utterances"], b["speech_s"], b["confidence_mean"], b["confidence_p10"]) == (0, 0.0, None, None)
    assert b["callback_completeness"] is None  # Gladia expected 0 messages

    c = by_id["job-c"]
    assert (c["billed_s"], c["close_to_final_s"], c["utterances"], c["languages"]) == (None, 1.5, 1, None)

    d = by_id["job-d"]  # nothing received at all: not reported, not zero
    assert (d["utterances"], d["words"], d["speech_s"], d["callbacks_received"]) == (None, None, None, None)
    assert d["reconciliation_runs"] == 0 and d["errors"] == 0


def test_values_are_plain_json_types(loaded):
    """No Decimal or datetime leaks out of either database (Flask would render them as strings)."""
    for name in reports.REPORTS:
        report = reports.get_report(name)
        for row in rows(loaded, name):
            for column in report.columns:
                value = row[column.name]
                expected = {"int": int, "float": float}.get(column.kind, str)
                assert value is None or type(value) is expected, (name, column.name, value)


def test_callback_health(loaded):
    assert rows(loaded, "callback_health") == [
        {"day": "2026-03-01", "sessions": 3, "callbacks_received": 4, "duplicates": 2, "rejected": 1,
         "failed": 1, "pending": 0, "unmatched": 0, "reconciled_sessions": 2, "expected_messages": 12,
         "missing_found": 3, "repaired": 3, "callback_completeness": 0.75},
        # C and D: no callbacks; the unmatched rejected callback was received that day.
        {"day": "2026-03-02", "sessions": 2, "callbacks_received": 1, "duplicates": 1, "rejected": 1,
         "failed": 0, "pending": 0, "unmatched": 1, "reconciled_sessions": 0, "expected_messages": None,
         "missing_found": None, "repaired": None, "callback_completeness": None},
    ]


def test_language_mix(loaded):
    # en 2.0 + 1.5 + 0.5, fr 3.5, unknown 1.25 (of 8.75 s)
    assert rows(loaded, "language_mix") == [
        {"language": "en", "sessions": 1, "utterances": 3, "words": 6, "speech_s": 4.0,
         "speech_share": round(4.0 / 8.75, 6)},
        {"language": "fr", "sessions": 1, "utterances": 1, "words": 4, "speech_s": 3.5, "speech_share": 0.4},
        {"language": None, "sessions": 1, "utterances": 1, "words": 2, "speech_s": 1.25,
         "speech_share": round(1.25 / 8.75, 6)},
    ]


def test_error_breakdown(loaded):
    assert pick(rows(loaded, "error_breakdown"), "source", "error", "occurrences", "sessions", "first_seen") == [
        ("callback_failed", "boom: bad payload", 1, 1, "2026-03-01T10:02:05+00:00"),
        ("callback_rejected", "bad token", 1, 0, "2026-03-02T08:00:00+00:00"),
        ("callback_rejected", "malformed body", 1, 1, "2026-03-01T15:00:10+00:00"),
        ("gladia", "Gladia error code 500", 1, 1, "2026-03-01T15:00:40+00:00"),
        ("reconciliation", "session not found", 1, 1, "2026-03-01T15:01:00+00:00"),
        ("session", "stream: connection refused", 1, 1, "2026-03-01T15:00:30+00:00"),
    ]


def test_latency(loaded):
    assert rows(loaded, "latency") == [
        # close -> final: A 3.25, E 5.25; median callback delay: A 0.4, E 0.8
        {"day": "2026-03-01", "sessions": 3, "final_results": 2, "close_to_final_p50_s": 4.25,
         "close_to_final_p90_s": 5.05, "close_to_final_p99_s": 5.23, "sessions_with_callbacks": 2,
         "callback_delay_p50_s": 0.6, "callback_delay_p90_s": 0.76, "callback_delay_p99_s": 0.796},
        {"day": "2026-03-02", "sessions": 2, "final_results": 1, "close_to_final_p50_s": 1.5,
         "close_to_final_p90_s": 1.5, "close_to_final_p99_s": 1.5, "sessions_with_callbacks": 0,
         "callback_delay_p50_s": None, "callback_delay_p90_s": None, "callback_delay_p99_s": None},
    ]


# --------------------------------------------------------------------- filters

def test_batch_filter_by_name_or_id(loaded):
    by_name = rows(loaded, "daily_usage", batch="calls")
    assert by_name == rows(loaded, "daily_usage", batch="batch-calls")
    assert pick(by_name, "day", "sessions", "errors") == [("2026-03-01", 3, 5)]
    # Callbacks that match no session belong to no batch.
    assert pick(rows(loaded, "callback_health", batch="calls"), "day", "unmatched") == [("2026-03-01", 0)]
    assert pick(rows(loaded, "language_mix", batch="other"), "language", "speech_share") == [(None, 1.0)]
    assert [r["source"] for r in rows(loaded, "error_breakdown", batch="other")] == []


def test_day_filters_are_inclusive_utc_days(loaded):
    assert pick(rows(loaded, "daily_usage", since="2026-03-02"), "day", "sessions") == [("2026-03-02", 2)]
    assert pick(rows(loaded, "daily_usage", until="2026-03-01"), "day", "sessions") == [("2026-03-01", 3)]
    assert rows(loaded, "daily_usage", since="2026-03-01", until="2026-03-01") == \
        rows(loaded, "daily_usage", until="2026-03-01")
    assert rows(loaded, "session_summary", since="2026-03-03") == []
    assert pick(rows(loaded, "error_breakdown", since="2026-03-02"), "error") == [("bad token",)]
    assert pick(rows(loaded, "callback_health", until="2026-03-01"), "day") == [("2026-03-01",)]


@pytest.mark.parametrize("kwargs, message", [
    ({"since": "2026-13-01"}, "invalid since"),
    ({"until": "yesterday"}, "invalid until"),
    ({"since": "2026-03-01T00:00"}, "invalid since"),
    ({"since": "2026-03-02", "until": "2026-03-01"}, "after until"),
    ({"batch": "no-such-batch"}, "no batch"),
])
def test_bad_filters_are_refused(loaded, kwargs, message):
    with pytest.raises(reports.InvalidFilter, match=message):
        reports.run_report(loaded, "daily_usage", **kwargs)


def test_unknown_report(db_url):
    with pytest.raises(reports.UnknownReport, match="daily_usage"):
        reports.run_report(db_url, "nope")


# ------------------------------------------------------- views and the cache

VIEW_OF = {
    "daily_usage": ("report_daily_usage", "day"),
    "callback_health": ("report_callback_health", "day"),
    "language_mix": ("report_language_mix", "speech_s DESC"),
    "error_breakdown": ("report_error_breakdown", "source, error"),
    "session_summary": ("report_session_summary", "created_at DESC"),
}


@pytest.mark.parametrize("name", sorted(VIEW_OF))
def test_views_equal_unfiltered_reports(loaded, name):
    report = reports.get_report(name)
    expected = rows(loaded, name)
    view, order = VIEW_OF[name]
    with session_scope(loaded) as s:
        raw = [dict(r) for r in s.execute(text(f"SELECT * FROM {view} ORDER BY {order}")).mappings()]
    from_view = report.normalize(raw)
    key = lambda row: json.dumps(row, sort_keys=True)  # noqa: E731
    assert sorted(from_view, key=key) == sorted(expected, key=key)


def test_cache_follows_inserts_updates_and_deletes(loaded):
    def a_row():
        return next(r for r in rows(loaded, "session_summary") if r["job_id"] == "job-a")

    assert a_row()["utterances"] == 4
    with session_scope(loaded) as s:
        assert s.execute(select(SessionStatsStale)).first() is None  # the report refreshed everything
        s.add(utterance("job-a", "g-a", "00_9", 30.0, 31.0, language="de", confidence=0.5, words=7))
    assert (a_row()["utterances"], a_row()["words"], a_row()["languages"]) == (5, 17, "de,en,fr")
    with session_scope(loaded) as s:  # the partial becomes final
        s.execute(update(Utterance).where(Utterance.utterance_id == "00_4").values(is_final=True))
    assert (a_row()["utterances"], a_row()["speech_s"]) == (6, 7.5 + 1.0 + 10.0)
    with session_scope(loaded) as s:
        s.execute(delete(Utterance).where(Utterance.job_id == "job-a"))
    row = a_row()
    assert (row["utterances"], row["speech_s"], row["confidence_mean"], row["languages"]) == (0, 0.0, None, None)


def test_postgresql_logs_a_session_once_per_transaction(loaded):
    """Migration 0009: a transaction's first write to a session logs it; its later writes to it add no row."""
    with session_scope(loaded) as s:
        if not is_postgres(s):
            pytest.skip("PostgreSQL: SQLite's triggers log every row")
    before = next(r for r in rows(loaded, "session_summary") if r["job_id"] == "job-c")["utterances"]

    def logged() -> list[str]:
        with session_scope(loaded) as s:
            return list(s.scalars(select(SessionStatsStale.job_id).order_by(SessionStatsStale.id)))

    assert logged() == []  # the report refreshed everything
    with session_scope(loaded) as s:
        # One statement of three rows (as the receiver's), then more statements; to B and back to A.
        s.execute(insert(Utterance).values([vars_of(utterance("job-a", "g-a", f"10_{i}", 40.0 + i, 40.5 + i))
                                            for i in range(3)]))
        s.add(utterance("job-a", "g-a", "10_3", 50.0, 50.5))
        s.flush()
        s.add(utterance("job-b", "g-b", "10_4", 50.0, 50.5))
        s.flush()
        s.add(utterance("job-a", "g-a", "10_5", 51.0, 51.5))
        s.flush()
    assert logged() == ["job-a", "job-b", "job-a"]
    with session_scope(loaded) as s:  # a new transaction logs the session again
        s.add(utterance("job-b", "g-b", "10_6", 51.0, 51.5))
    assert logged() == ["job-a", "job-b", "job-a", "job-b"]
    with session_scope(loaded) as s:  # a rolled-back savepoint takes its log row with it, and the mark
        savepoint = s.begin_nested()
        s.add(utterance("job-c", "g-c", "10_7", 1.0, 1.5))
        s.flush()
        savepoint.rollback()
        s.add(utterance("job-c", "g-c", "10_8", 1.0, 1.5))
        s.flush()
    assert logged().count("job-c") == 1
    assert next(r for r in rows(loaded, "session_summary") if r["job_id"] == "job-c")["utterances"] == before + 1
    assert logged() == []


def vars_of(row: Utterance) -> dict:
    """An unsaved utterance's values, for a multi-row INSERT (which applies the column defaults to the rest)."""
    values = {column.key: getattr(row, column.key) for column in Utterance.__table__.columns}
    return {key: value for key, value in values.items() if value is not None}


def test_cache_of_a_deleted_job_disappears(loaded):
    rows(loaded, "session_summary")
    with session_scope(loaded) as s:
        s.execute(delete(Job).where(Job.id == "job-a"))
    assert reports.refresh_session_stats(loaded) >= 1
    with session_scope(loaded) as s:
        assert s.get(SessionStats, "job-a") is None
    assert "job-a" not in {r["job_id"] for r in rows(loaded, "session_summary")}


def test_refresh_in_small_chunks_gives_the_same_numbers(loaded):
    with session_scope(loaded) as s:
        assert reports.stale_count(s) == 4  # A, B, C, E have rows in the cached tables
    assert reports.refresh_session_stats(loaded, chunk=1) == 4
    chunked = rows(loaded, "session_summary")
    with session_scope(loaded) as s:
        s.execute(text("INSERT INTO session_stats_stale (job_id) SELECT id FROM jobs"))
    assert rows(loaded, "session_summary") == chunked


@pytest.mark.parametrize("values, fraction, expected", [
    ([], 0.5, None), ([3.0], 0.99, 3.0), ([1.0, 2.0], 0.5, 1.5), ([0.6, 0.8, 0.9, 0.95], 0.1, 0.66),
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0], 0.9, 10.0),
])
def test_percentile_cont(values, fraction, expected):
    result = reports.percentile_cont(values, fraction)
    assert result == pytest.approx(expected) if expected is not None else result is None


def test_percentile_cont_matches_postgresql(db_url):
    values = [0.13, 0.5, 0.51, 0.77, 0.9, 0.91, 0.99, 1.0, 0.2, 0.35, 0.42]
    with session_scope(db_url) as s:
        if not is_postgres(s):
            pytest.skip("percentile_cont exists only on PostgreSQL")
        for q in (0.1, 0.5, 0.9, 0.99):
            pg = s.execute(text("SELECT percentile_cont(:q) WITHIN GROUP (ORDER BY v) FROM unnest(CAST(:vs AS "
                                "double precision[])) AS v"), {"q": q, "vs": values}).scalar_one()
            assert reports.percentile_cont(sorted(values), q) == pytest.approx(pg, abs=1e-12)


# -------------------------------------------------------------------- the CLI

def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "webhook_service.cli", "report", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_cli_report_formats(loaded, tmp_path):
    as_json = _cli(loaded, "daily_usage", "--format", "json", "--batch", "calls")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["filters"] == {"since": None, "until": None, "batch": "calls"}
    assert body["rows"] == rows(loaded, "daily_usage", batch="calls")

    as_csv = _cli(loaded, "language_mix", "--format", "csv", "--since", "2026-03-01", "--until", "2026-03-02")
    assert as_csv.returncode == 0, as_csv.stderr
    lines = as_csv.stdout.splitlines()
    assert lines[0] == "language,sessions,utterances,words,speech_s,speech_share"
    assert lines[1:] == ["en,1,3,6,4.0,0.457143", "fr,1,1,4,3.5,0.4", ",1,1,2,1.25,0.142857"]

    table = _cli(loaded, "callback_health")
    assert table.returncode == 0, table.stderr
    assert "2026-03-01" in table.stdout and "0.75" in table.stdout and "Callback health" in table.stdout


@pytest.mark.parametrize("args, message", [
    (("nope",), "unknown report 'nope'"),
    (("daily_usage", "--since", "03/01/2026"), "invalid since"),
    (("daily_usage", "--batch", "ghost"), "no batch"),
])
def test_cli_report_bad_input(loaded, args, message):
    result = _cli(loaded, *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_lists_reports(db_url):
    result = _cli(db_url)
    assert result.returncode == 0
    for name in reports.REPORTS:
        assert name in result.stdout


# ------------------------------------------------------------------- the API

def test_api_report(loaded, client):
    response = client.get("/api/reports/daily_usage?since=2026-03-01&until=2026-03-01&batch=calls")
    assert response.status_code == 200
    body = response.get_json()
    assert body["report"] == "daily_usage"
    assert body["filters"] == {"since": "2026-03-01", "until": "2026-03-01", "batch": "calls"}
    assert body["rows"] == rows(loaded, "daily_usage", batch="calls")
    assert [c["name"] for c in body["columns"]][:2] == ["day", "sessions"]


def test_api_lists_reports(client):
    response = client.get("/api/reports")
    assert response.status_code == 200
    assert [r["name"] for r in response.get_json()["reports"]] == list(reports.REPORTS)


@pytest.mark.parametrize("path, status, fragment", [
    ("/api/reports/nope", 404, "unknown report"),
    ("/api/reports/latency?since=tomorrow", 400, "invalid since"),
    ("/api/reports/latency?since=2026-03-02&until=2026-03-01", 400, "after until"),
    ("/api/reports/latency?batch=ghost", 400, "no batch"),
    ("/api/reports/latency?sinse=2026-03-01", 400, "unknown parameter"),
])
def test_api_report_errors(loaded, client, path, status, fragment):
    response = client.get(path)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["status"] == status and fragment in error["message"]


@pytest.mark.dbless
def test_migration_downgrade_drops_views_and_cache(tmp_path):
    from alembic import command
    from sqlalchemy import create_engine, inspect

    from webhook_service.migrate import alembic_config

    url = f"sqlite:///{tmp_path}/roundtrip.sqlite3"
    config = alembic_config(url)
    command.upgrade(config, "head")
    engine = create_engine(url)
    assert "report_daily_usage" in inspect(engine).get_view_names()
    command.downgrade(config, "0001")
    inspector = inspect(engine)
    assert inspector.get_view_names() == [] and "session_stats" not in inspector.get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'")).scalar() == 0
    command.upgrade(config, "head")
    assert len(inspect(create_engine(url)).get_view_names()) == 8


def test_documented_queries_run(loaded):
    """Every SQL example of docs/reporting.md runs on this database."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "reporting.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", doc, re.S)
    assert len(blocks) >= 8
    reports.refresh_session_stats(loaded)
    with session_scope(loaded) as s:
        postgres = is_postgres(s)
    ran = 0
    for block in blocks:
        if "percentile_cont" in block and not postgres:
            continue
        for statement in filter(str.strip, block.split(";")):
            with session_scope(loaded) as s:
                s.execute(text(statement)).fetchall()
            ran += 1
    assert ran >= 9


def test_refresh_neither_waits_for_nor_loses_an_uncommitted_writer(loaded):
    """A writer's transaction still open during a refresh: no wait, and its rows count once committed."""
    from webhook_service.db import get_engine

    with session_scope(loaded) as s:
        if not is_postgres(s):
            pytest.skip("SQLite has one writer at a time: a refresh cannot overlap a write")
    rows(loaded, "daily_usage")  # cache up to date
    with session_scope(loaded) as s:  # a committed change: job-a is logged stale
        s.execute(update(Utterance).where(Utterance.utterance_id == "00_1").values(text=" Thanks for calling!"))
    writer = get_engine(loaded).connect()
    try:
        transaction = writer.begin()
        writer.execute(text(
            "INSERT INTO utterances (gladia_id, job_id, utterance_id, is_final, channel, start_s, end_s, text,"
            " confidence, words, word_count, source, received_at, updated_at)"
            " VALUES ('g-a', 'job-a', 'late', true, 0, 50, 52, ' late', 0.5, '[]', 4, 'callback', now(), now())"))
        import threading

        refresher = threading.Thread(target=reports.refresh_session_stats, args=(loaded,), daemon=True)
        refresher.start()
        refresher.join(timeout=30)
        assert not refresher.is_alive(), "the refresh waits for the writer's transaction"
        assert next(r for r in rows(loaded, "session_summary") if r["job_id"] == "job-a")["utterances"] == 4
        transaction.commit()
    finally:
        writer.close()
    assert next(r for r in rows(loaded, "session_summary") if r["job_id"] == "job-a")["utterances"] == 5


# ------------------------------------------------------------------- paging

@pytest.mark.parametrize("name", sorted(reports.REPORTS))
def test_pages_of_a_report_add_up_to_the_whole(loaded, name):
    whole = rows(loaded, name)
    pages, offset = [], 0
    while True:
        result = reports.run_report(loaded, name, limit=1, offset=offset)
        page = result.as_json()["page"]
        pages.extend(result.rows)
        if page["next_offset"] is None:
            break
        assert page == {"limit": 1, "offset": offset, "next_offset": offset + 1}
        offset = page["next_offset"]
    assert pages == whole and len(whole) >= 1


@pytest.mark.parametrize("kwargs, message", [
    ({"limit": "0"}, "invalid limit"),
    ({"limit": "ten"}, "invalid limit"),
    ({"limit": str(reports.MAX_PAGE + 1)}, "invalid limit"),
    ({"limit": "5", "offset": "-1"}, "invalid offset"),
    ({"offset": "5"}, "offset needs a limit"),
])
def test_bad_paging_is_refused(loaded, kwargs, message):
    with pytest.raises(reports.InvalidFilter, match=message):
        reports.run_report(loaded, "session_summary", **kwargs)


def test_api_and_cli_page_a_report(loaded, client):
    whole = rows(loaded, "session_summary")
    response = client.get("/api/reports/session_summary?limit=2&offset=1")
    assert response.status_code == 200
    body = response.get_json()
    assert body["rows"] == whole[1:3]
    assert body["page"]["limit"] == 2 and body["page"]["offset"] == 1
    bad = client.get("/api/reports/session_summary?limit=0")
    assert bad.status_code == 400 and "invalid limit" in bad.get_json()["error"]["message"]

    result = _cli(loaded, "session_summary", "--limit", "1", "--offset", "2", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == whole[2:3]
    refused = _cli(loaded, "session_summary", "--offset", "2")
    assert refused.returncode == 2 and "offset needs a limit" in refused.stderr


def test_billed_counts_only_audio_that_reached_gladia_and_close_to_final_is_never_negative(db_url):
    from datetime import datetime, timedelta, timezone

    from webhook_service.models import Batch, SessionResult

    day = datetime(2026, 4, 1, 10, tzinfo=timezone.utc)
    with session_scope(db_url) as session:
        batch = Batch(name="billing")
        session.add(batch)
        session.flush()
        common = dict(batch_id=batch.id, created_at=day, audio_duration_s=60.0, audio_channels=2, bytes_total=4000)
        session.add_all([
            # Refused at submit (or cancelled while queued): no session, nothing reached Gladia.
            Job(id="j-never", source_path="/a/never.wav", state="failed", **common),
            # Gladia ended the session after a quarter of the audio.
            Job(id="j-part", source_path="/a/part.wav", state="failed", gladia_id="g-part", bytes_acked=1000,
                **common),
            # Whole; its final result was received before the worker recorded the close.
            Job(id="j-whole", source_path="/a/whole.wav", state="reconciled", gladia_id="g-whole", bytes_acked=4000,
                stream_closed_at=day + timedelta(seconds=30), **common),
        ])
        session.add(SessionResult(gladia_id="g-whole", job_id="j-whole", post_final_received_at=day + timedelta(seconds=29)))
    result = _cli(db_url, "session_summary", "--format", "json", "--batch", "billing")
    assert result.returncode == 0, result.stderr
    by_job = {row["job_id"]: row for row in json.loads(result.stdout)["rows"]}
    assert {job: row["billed_s"] for job, row in by_job.items()} == {"j-never": 0.0, "j-part": 30.0, "j-whole": 120.0}
    assert by_job["j-whole"]["close_to_final_s"] == 0.0
    [usage] = rows(db_url, "daily_usage", batch="billing")
    assert usage["billed_hours"] == round(150.0 / 3600, 6) and usage["audio_hours"] == round(180.0 / 3600, 6)
