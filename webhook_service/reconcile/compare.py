"""A done session's result against what is stored: store the reference, backfill, repair, settle.

Every repair goes through ingest: a missing message through the receiver's
own normalization (``ingest.normalize_message``, source ``reconcile``), a
missing or different final utterance through the receiver's own utterance
upsert (``ingest.repair_utterance``), so a repaired row is stored exactly as
if its callback had arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Iterable, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import is_postgres, session_scope
from ..gladia.keys import message_key
from ..gladia.messages import parse_timestamp
from ..gladia.session_config import without_callback_url
from ..gladia.validation import InvalidMessage
from ..ingest import normalize_message, repair_utterance
from ..jobs.redrive import auto_rerun_incomplete, drop_replaced_results
from ..models import Event, Job, SessionResult, Utterance, utcnow
from .expected import callback_flags, differs, is_expected, parse_messages, synthetic_utterance_id, utterance_key
from .records import JobView, ReconcileResult, count_duplicates, record_run


# How many messages are backfilled per transaction (keeps SQLite write locks short).
BACKFILL_BATCH = 100


def store_session_result(settings: Settings, view: JobView, body: dict[str, Any]) -> None:
    """Upsert the whole GET answer into session_results (the reference copy)."""
    result = body.get("result") if isinstance(body.get("result"), dict) else {}
    metadata = result.get("metadata") if isinstance(result.get("metadata"), dict) else {}
    transcription = result.get("transcription") if isinstance(result.get("transcription"), dict) else {}
    values: dict[str, Any] = {
        "job_id": view.id,
        "gladia_status": body.get("status"),
        "gladia_error_code": body.get("error_code") if isinstance(body.get("error_code"), int) else None,
        "gladia_completed_at": parse_timestamp(body.get("completed_at")),
        "gladia_response": without_callback_url(body),  # its callback URL holds a write credential
        "fetched_at": utcnow(),
    }
    if metadata:
        values.update(
            audio_duration_s=_num(metadata.get("audio_duration")),
            billing_time_s=_num(metadata.get("billing_time")),
            transcription_time_s=_num(metadata.get("transcription_time")),
            number_of_channels=metadata.get("number_of_distinct_channels")
            if isinstance(metadata.get("number_of_distinct_channels"), int) else None,
        )
    if transcription:
        if isinstance(transcription.get("full_transcript"), str):
            values["full_transcript"] = transcription["full_transcript"]
        if isinstance(transcription.get("languages"), list):
            values["languages"] = transcription["languages"]
    with session_scope(settings.database_url) as session:
        _upsert(session, SessionResult, {"gladia_id": view.gladia_id, **values}, ["gladia_id"], values)


def _upsert(session: Session, model: type, row: dict[str, Any], keys: list[str], update: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, on PostgreSQL and SQLite alike."""
    if is_postgres(session):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    update = {**update, "updated_at": utcnow()} if hasattr(model, "updated_at") else update
    statement = insert(model).values(**row)
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=update))


def _num(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare_and_repair(settings: Settings, view: JobView, trigger: str, started: datetime,
                        body: dict[str, Any]) -> ReconcileResult:
    """Backfill the missing messages, repair the final utterances, settle the job and record the run."""
    gladia_id = view.gladia_id
    assert gladia_id
    result = _object(body.get("result"))
    messages, undecodable = parse_messages(result.get("messages") or [])
    flags = callback_flags(_callback_config(view, body))
    expected = _expected_messages(messages, flags)
    missing = _missing_messages(settings, gladia_id, expected)
    backfill = _backfill(settings, view, missing)
    with session_scope(settings.database_url) as session:
        job = session.get(Job, view.id)
        utterances = _repair_utterances(session, view, messages, result)
        replaced = job is not None and job.gladia_id != gladia_id
        # Gladia ended the session before it had all the audio, and no worker is on it: a done
        # session takes no more audio, so the results stored are all there will be. Keep them,
        # but never call the job reconciled.
        incomplete = (f"incomplete: Gladia ended the session with {view.stream_progress}"
                      if not view.stream_finished else None)
        rerun = False
        if job is not None and not replaced:
            _settle(job, parse_timestamp(body.get("completed_at")), incomplete)
            if job.state == "reconciled":
                drop_replaced_results(session, job)  # the partial results of sessions this one replaced
            elif incomplete:
                rerun = auto_rerun_incomplete(session, job, settings)
        details = {
            "status": body.get("status"),
            "messages": len(messages),
            "undecodable_messages": undecodable,
            "not_asked_by_callback_config": len(messages) - sum(1 for m in messages if is_expected(m, flags)),
            "missing_by_type": _count_by_type(msg for _key, msg in missing),
            "backfilled": backfill.repaired,
            "invalid_messages": backfill.invalid[:20],
            "utterances": utterances.as_details(),
        }
        if replaced:
            # The worker gave the job another session meanwhile: this one settles nothing.
            details["replaced_by"] = job.gladia_id
        if rerun:
            details["rerun"] = "the job runs again once with a new session"
        outcome = ReconcileResult(
            view.id, gladia_id, "retry" if replaced else "failed" if incomplete else "reconciled",
            reason="the job was given another session meanwhile" if replaced else incomplete,
            expected=len(expected), received=len(expected) - len(missing), missing=len(missing),
            duplicates=count_duplicates(session, gladia_id), mismatched=utterances.mismatched,
            repaired=backfill.repaired + utterances.repaired, details=details,
        )
        outcome.run_id = record_run(session, outcome, trigger, started)
    return outcome


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _callback_config(view: JobView, body: dict[str, Any]) -> dict[str, Any]:
    """The session's configuration as far as callbacks go: the job's, else what Gladia says it applied."""
    if "callback_config" in view.session_config:
        return view.session_config
    # Older jobs may lack it; what Gladia applied is the next best record.
    return {"callback_config": (body.get("request_params") or {}).get("callback_config")}


def _expected_messages(messages: list[dict[str, Any]], flags: dict[str, bool]) -> dict[str, dict[str, Any]]:
    """The messages the session's callback_config asked for, by message key (first copy wins)."""
    expected: dict[str, dict[str, Any]] = {}
    for message in messages:
        if is_expected(message, flags):
            expected.setdefault(message_key(message), message)
    return expected


def _missing_messages(settings: Settings, gladia_id: str,
                      expected: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The expected messages with no ``events`` row, as (message key, message)."""
    with session_scope(settings.database_url) as session:
        stored = set(session.scalars(select(Event.message_key).where(Event.gladia_id == gladia_id)))
    return [(key, msg) for key, msg in expected.items() if key not in stored]


def _count_by_type(messages: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for msg in messages:
        kind = str(msg.get("type"))
        counts[kind] = counts.get(kind, 0) + 1
    return counts


@dataclass
class _Backfill:
    repaired: int = 0
    invalid: list[str] = field(default_factory=list)


def _backfill(settings: Settings, view: JobView, missing: list[tuple[str, dict[str, Any]]]) -> _Backfill:
    """Store each missing message through the receiver's normalization (source ``reconcile``), in batches."""
    done = _Backfill()
    for offset in range(0, len(missing), BACKFILL_BATCH):
        with session_scope(settings.database_url) as session:
            job = session.get(Job, view.id)
            for key, msg in missing[offset: offset + BACKFILL_BATCH]:
                try:
                    # A reconciliation's own messages schedule no reconciliation (the handlers' _lifecycle).
                    if normalize_message(session, msg, source="reconcile", job=job, gladia_id=view.gladia_id,
                                         reconcile_delay_s=settings.reconcile_delay_s):
                        done.repaired += 1
                except InvalidMessage as exc:
                    # Validation runs before any write: the transaction is intact.
                    done.invalid.append(f"{key[:12]}: {exc}")
    return done


@dataclass
class _UtteranceCheck:
    expected: int
    missing: int = 0
    mismatched: int = 0
    repaired: int = 0
    extra: list[str] = field(default_factory=list)

    def as_details(self) -> dict[str, Any]:
        return {"expected": self.expected, "missing": self.missing, "mismatched": self.mismatched,
                "repaired": self.repaired, "extra": self.extra[:50], "extra_count": len(self.extra)}


def _final_ids_by_key(messages: list[dict[str, Any]]) -> dict[tuple[int, float, float], str]:
    """The final transcript messages give each reference utterance its id (matched on channel, start, end)."""
    ids_by_key: dict[tuple[int, float, float], str] = {}
    for message in messages:
        data = _object(message.get("data"))
        if message.get("type") == "transcript" and data.get("is_final") and isinstance(data.get("utterance"), dict):
            ids_by_key.setdefault(utterance_key(data["utterance"]), str(data.get("id")))
    return ids_by_key


def _repair_utterances(session: Session, view: JobView, messages: list[dict[str, Any]],
                       result: dict[str, Any]) -> _UtteranceCheck:
    """Compare the stored final utterances with ``result.transcription.utterances``; repair through ingest."""
    gladia_id = view.gladia_id
    assert gladia_id
    reference = [u for u in (_object(result.get("transcription")).get("utterances") or []) if isinstance(u, dict)]
    ids_by_key = _final_ids_by_key(messages)
    rows: dict[str, Any] = {row.utterance_id: row for row in session.execute(
        select(Utterance.utterance_id, Utterance.job_id, Utterance.is_final, Utterance.text, Utterance.channel,
               Utterance.start_s, Utterance.end_s, Utterance.language, Utterance.created_at)
        .where(Utterance.gladia_id == gladia_id))}
    check = _UtteranceCheck(expected=len(reference))
    reference_ids: set[str] = set()
    for ref in reference:
        uid = ids_by_key.get(utterance_key(ref)) or synthetic_utterance_id(ref)
        reference_ids.add(uid)
        row = rows.get(uid)
        if row is None or not row.is_final:
            check.missing += 1
        elif differs(row, ref):
            check.mismatched += 1
        else:
            continue
        rows[uid] = SimpleNamespace(**repair_utterance(session, ref, gladia_id=gladia_id, utterance_id=uid,
                                                       job_id=view.id, stored=row))
        check.repaired += 1
    check.extra = sorted(uid for uid, row in rows.items() if row.is_final and uid not in reference_ids)
    return check


def _settle(job: Job, done_at: Optional[datetime], incomplete: Optional[str]) -> None:
    """The session is done: the job is reconciled, or failed when Gladia ended it with audio unsent."""
    job.advance("done", when=done_at)
    if incomplete:
        if job.advance("failed"):
            job.last_error = f"reconciliation: {incomplete}"
    else:
        job.advance("reconciled")
    job.reconcile_after = None
