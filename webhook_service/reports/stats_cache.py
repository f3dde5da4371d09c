"""The per-session statistics cache (``session_stats``) that the report views read.

Triggers log every session whose utterances, events, callbacks or
reconciliation runs changed (``session_stats_stale``);
:func:`refresh_session_stats` recomputes exactly those sessions, and every
report calls it first.

Why the aggregation happens in Python: percentiles must be equal on SQLite
(which has no ``percentile_cont``) and PostgreSQL, and float sums must not
depend on a database's summation order. Sorting and ``math.fsum`` over one
session's rows at a time give the same numbers everywhere.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import case, delete, func, insert, select, text
from sqlalchemy.orm import Session

from ..db import session_scope
from ..models import (
    Event,
    InboxItem,
    Job,
    ReconciliationRun,
    SessionLanguageStats,
    SessionStats,
    SessionStatsStale,
    Utterance,
    utcnow,
)
from .percentiles import LOW_CONFIDENCE_PERCENTILE, percentile_cont
from .rows import FLOAT_DIGITS

REFRESH_CHUNK = 500
# Any constant: the PostgreSQL advisory lock that serializes refreshers.
REFRESH_LOCK_KEY = 0x5E55_1057
REFRESH_SCAN = 20 * REFRESH_CHUNK

Stats = dict[str, dict[str, Any]]  # job id -> its session_stats row


def refresh_session_stats(database_url: str, chunk: int = REFRESH_CHUNK) -> int:
    """Recompute the statistics of every session logged stale; return how many sessions.

    Each round is one transaction: take up to ``chunk`` sessions from the log,
    delete *all* their log rows, then read their rows and rewrite their
    statistics. Every log row deleted belongs to a change committed before the
    deletion, hence visible to the reads that follow it; a change committed
    later leaves its own log row for the next refresh. Refreshers are
    serialized (an advisory lock on PostgreSQL; SQLite's write lock), so two
    of them never rewrite one session at once.
    """
    done = 0
    with session_scope(database_url) as session:
        # Changes logged after this point wait for the next refresh: under a
        # steady stream of callbacks the loop still ends.
        last = session.execute(select(func.max(SessionStatsStale.id))).scalar()
    if last is None:
        return 0
    while True:
        refreshed = _refresh_round(database_url, last, chunk)
        if not refreshed:
            return done
        done += refreshed


def _refresh_round(database_url: str, last: int, chunk: int) -> int:
    """One transaction: up to ``chunk`` sessions logged up to ``last``, unlogged and recomputed."""
    with session_scope(database_url) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REFRESH_LOCK_KEY})
        logged = session.scalars(
            select(SessionStatsStale.job_id).where(SessionStatsStale.id <= last)
            .order_by(SessionStatsStale.id).limit(REFRESH_SCAN)
        ).all()
        ids = sorted(set(logged))[:chunk]
        if not ids:
            return 0
        session.execute(delete(SessionStatsStale).where(SessionStatsStale.job_id.in_(ids)))
        _recompute(session, ids)
    return len(ids)


def stale_count(session: Session) -> int:
    """Sessions waiting for a refresh."""
    return int(session.execute(select(func.count(func.distinct(SessionStatsStale.job_id)))).scalar_one())


def _recompute(session: Session, ids: Iterable[str]) -> None:
    """Rewrite the statistics of ``ids``: delete them, read each large table once for all, insert.

    Sessions whose content was erased (``jobs.content_deleted_at``) are left as they are.
    """
    # A session whose content was erased keeps its figures as they were (the reports still count it).
    frozen = set(session.scalars(select(Job.id).where(Job.id.in_(list(ids)), Job.content_deleted_at.is_not(None))))
    ids = [job_id for job_id in ids if job_id not in frozen]
    if not ids:
        return
    session.execute(delete(SessionLanguageStats).where(SessionLanguageStats.job_id.in_(ids)))
    session.execute(delete(SessionStats).where(SessionStats.job_id.in_(ids)))
    existing = set(session.scalars(select(Job.id).where(Job.id.in_(ids))))
    if not existing:
        return
    now = utcnow()
    stats: Stats = {job_id: _empty_stats(job_id, now) for job_id in existing}
    scope = list(existing)
    per_language = _add_utterance_stats(session, scope, stats)
    event_jobs = _add_event_counts(session, scope, stats)
    _add_callback_delays(session, scope, stats)
    inbox_jobs = _add_inbox_stats(session, scope, stats)
    reconciled_jobs = _add_reconciliation_stats(session, scope, stats)
    # A session with no row in any of these tables has nothing reported: no
    # statistics row, so the views show NULL rather than 0.
    seen = {job_id for job_id, _ in per_language} | event_jobs | inbox_jobs | reconciled_jobs
    _insert_stats(session, stats, seen, per_language)


def _empty_stats(job_id: str, now: datetime) -> dict[str, Any]:
    return {"job_id": job_id, "computed_at": now, "events": 0, "callback_events": 0,
            "websocket_events": 0, "reconcile_events": 0, "callbacks_received": 0,
            "callback_duplicates": 0, "callbacks_failed": 0, "callbacks_rejected": 0,
            "callbacks_pending": 0, "callback_delay_median_s": None, "callback_delay_max_s": None,
            "reconciliation_runs": 0, "failed_runs": 0, "reconciliation_outcome": None,
            "expected_messages": None, "missing_found": None, "duplicates_found": None, "repaired": None}


@dataclass
class _LanguageTally:
    """Final utterances of one session in one language ("" when none was reported)."""

    utterances: int = 0
    words: int = 0
    spans: list[float] = field(default_factory=list)


def _tally_utterances(session: Session, scope: list[str]) -> tuple[dict[tuple[str, str], _LanguageTally],
                                                                   dict[str, list[float]]]:
    """Final utterances per session and language, and each session's confidences."""
    per_language: dict[tuple[str, str], _LanguageTally] = {}
    confidences: dict[str, list[float]] = defaultdict(list)
    rows = session.execute(
        select(Utterance.job_id, Utterance.language, Utterance.word_count, Utterance.start_s, Utterance.end_s,
               Utterance.confidence)
        .where(Utterance.is_final.is_(True), Utterance.job_id.in_(scope))
    )
    for job_id, language, word_count, start_s, end_s, confidence in rows:
        tally = per_language.setdefault((job_id, language or ""), _LanguageTally())
        tally.utterances += 1
        tally.words += word_count or 0
        tally.spans.append(float(end_s) - float(start_s))
        if confidence is not None:
            confidences[job_id].append(float(confidence))
    return per_language, confidences


def _add_utterance_stats(session: Session, scope: list[str], stats: Stats) -> dict[tuple[str, str], _LanguageTally]:
    """Utterances, words, speech, confidence and languages of each session; the per-language tallies.

    ``math.fsum`` is exact, so summing a session's spans language by language
    gives the same speech time as summing them in row order.
    """
    per_language, confidences = _tally_utterances(session, scope)
    by_job: dict[str, list[tuple[str, _LanguageTally]]] = defaultdict(list)
    for (job_id, language), tally in per_language.items():
        by_job[job_id].append((language, tally))
    for job_id in scope:
        tallies = by_job.get(job_id, [])
        values = sorted(confidences.get(job_id, ()))
        stats[job_id].update(
            utterances=sum(tally.utterances for _, tally in tallies),
            words=sum(tally.words for _, tally in tallies),
            speech_s=round(math.fsum(span for _, tally in tallies for span in tally.spans), FLOAT_DIGITS),
            confidence_mean=(math.fsum(values) / len(values)) if values else None,
            confidence_p10=percentile_cont(values, LOW_CONFIDENCE_PERCENTILE),
            languages=",".join(sorted(language for language, _ in tallies if language))[:200] or None,
        )
    return per_language


def _add_event_counts(session: Session, scope: list[str], stats: Stats) -> set[str]:
    """Which path delivered each message first; returns the sessions with events."""
    event_jobs: set[str] = set()
    for job_id, source, count in session.execute(
        select(Event.job_id, Event.source, func.count()).where(Event.job_id.in_(scope))
        .group_by(Event.job_id, Event.source)
    ):
        event_jobs.add(job_id)
        stats[job_id]["events"] += int(count)
        if source in ("callback", "websocket", "reconcile"):
            stats[job_id][f"{source}_events"] += int(count)
    return event_jobs


def _add_callback_delays(session: Session, scope: list[str], stats: Stats) -> None:
    """Median and maximum of Gladia's created_at -> our received_at, over callback messages."""
    delays: dict[str, list[float]] = defaultdict(list)
    for job_id, created_at, received_at in session.execute(
        select(Event.job_id, Event.created_at, Event.received_at)
        .where(Event.job_id.in_(scope), Event.source == "callback", Event.created_at.is_not(None))
    ):
        delays[job_id].append(round((received_at - created_at).total_seconds(), 3))
    for job_id, values in delays.items():
        values.sort()
        stats[job_id]["callback_delay_median_s"] = percentile_cont(values, 0.5)
        stats[job_id]["callback_delay_max_s"] = values[-1]


def _add_inbox_stats(session: Session, scope: list[str], stats: Stats) -> set[str]:
    """Requests, redeliveries and their processing status; returns the sessions with requests."""
    inbox_jobs: set[str] = set()
    for job_id, received, duplicates, failed, rejected, pending in session.execute(
        select(InboxItem.job_id, func.count(), func.coalesce(func.sum(InboxItem.duplicates), 0),
               func.sum(case((InboxItem.status == "failed", 1), else_=0)),
               func.sum(case((InboxItem.status == "rejected", 1), else_=0)),
               func.sum(case((InboxItem.status == "pending", 1), else_=0)))
        .where(InboxItem.job_id.in_(scope)).group_by(InboxItem.job_id)
    ):
        inbox_jobs.add(job_id)
        stats[job_id].update(callbacks_received=int(received), callback_duplicates=int(duplicates),
                             callbacks_failed=int(failed), callbacks_rejected=int(rejected),
                             callbacks_pending=int(pending))
    return inbox_jobs


def _add_reconciliation_stats(session: Session, scope: list[str], stats: Stats) -> set[str]:
    """The latest run says what Gladia holds; what runs found missing, duplicated and repaired adds
    up over runs. Returns the sessions with runs."""
    runs: dict[str, list[tuple]] = defaultdict(list)
    for job_id, started_at, run_id, outcome, expected, missing, duplicates, repaired in session.execute(
        select(ReconciliationRun.job_id, ReconciliationRun.started_at, ReconciliationRun.id,
               ReconciliationRun.outcome, ReconciliationRun.expected, ReconciliationRun.missing,
               ReconciliationRun.duplicates, ReconciliationRun.repaired)
        .where(ReconciliationRun.job_id.in_(scope))
    ):
        runs[job_id].append((started_at, run_id, outcome, expected, missing, duplicates, repaired))
    for job_id, items in runs.items():
        latest = max(items, key=lambda item: (item[0], item[1]))
        stats[job_id].update(
            reconciliation_runs=len(items),
            failed_runs=sum(1 for item in items if item[2] == "failed"),
            reconciliation_outcome=latest[2],
            expected_messages=latest[3],
            missing_found=sum(item[4] or 0 for item in items),
            duplicates_found=sum(item[5] or 0 for item in items),
            repaired=sum(item[6] or 0 for item in items),
        )
    return set(runs)


def _insert_stats(session: Session, stats: Stats, seen: set[str],
                  per_language: dict[tuple[str, str], _LanguageTally]) -> None:
    if seen:
        session.execute(insert(SessionStats), [stats[job_id] for job_id in sorted(seen)])
    language_rows = [
        {"job_id": job_id, "language": language, "utterances": tally.utterances, "words": tally.words,
         "speech_s": round(math.fsum(tally.spans), FLOAT_DIGITS)}
        for (job_id, language), tally in per_language.items()
    ]
    if language_rows:
        session.execute(insert(SessionLanguageStats), language_rows)
