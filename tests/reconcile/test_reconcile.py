"""Reconciliation against GET /v2/live/:id.

Gladia is played by a small HTTP server on a real socket that serves canned
session records (statuses, errors, a full ``done`` result): every branch of
the reconciler can then be driven deterministically, with the real REST
client, the real normalization code and the real database.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from click.testing import CliRunner
from flask import Flask, jsonify
from sqlalchemy import func, select

from conftest import LiveServer
from webhook_service.cli import cli
from webhook_service.db import session_scope
from webhook_service.ingest import message_key, normalize_message, store_inbox
from webhook_service.models import Event, InboxItem, Job, JobSession, ReconciliationRun, SessionResult, Utterance
from webhook_service.reconcile import (
    CALLBACK_DEFAULTS,
    callback_flags,
    is_expected,
    reconcile_job,
    retry_delay,
    synthetic_utterance_id,
)

GID = "6f1c2a52-6a43-4f5e-9a51-1b2c3d4e5f60"
T0 = datetime(2026, 3, 2, 10, 0, 0, tzinfo=timezone.utc)


# ------------------------------------------------------------- session builder


def _ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utterance(i: int, channel: int = 0) -> dict[str, Any]:
    start = round(0.5 + 2.0 * i, 3)
    words = [
        {"word": f" word{i}a", "start": start, "end": round(start + 0.4, 3), "confidence": 0.9},
        {"word": f" word{i}b", "start": round(start + 0.5, 3), "end": round(start + 1.0, 3), "confidence": 0.8},
    ]
    return {"start": start, "end": round(start + 1.0, 3), "confidence": 0.85, "channel": channel,
            "words": words, "text": f" word{i}a word{i}b", "language": "en"}


def build_session(gid: str = GID, utterances: int = 3) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every message of a plausible session (all types) and its GET /v2/live/:id body."""
    msgs: list[dict[str, Any]] = []
    clock = iter(range(10_000))

    def add(mtype: str, **fields: Any) -> dict[str, Any]:
        message = {"session_id": gid, "created_at": _ts(next(clock) * 0.01), "type": mtype, **fields}
        msgs.append(message)
        return message

    add("start_session")
    add("start_recording")
    utts = [_utterance(i) for i in range(utterances)]
    for i, utt in enumerate(utts):
        add("audio_chunk", acknowledged=True, error=None,
            data={"byte_range": [i * 3200, (i + 1) * 3200], "time_range": [i * 0.1, (i + 1) * 0.1]})
        add("speech_start", data={"time": utt["start"], "channel": 0})
        uid = f"00_{i:08d}"
        partial = dict(utt, text=utt["text"].rsplit(" ", 1)[0], words=utt["words"][:1])
        add("transcript", data={"id": uid, "is_final": False, "utterance": partial})
        add("transcript", data={"id": uid, "is_final": True, "utterance": utt})
        add("sentiment_analysis", error=None,
            data={"utterance_id": uid, "utterance": utt,
                  "results": [{"sentiment": "neutral", "emotion": "neutral", "text": utt["text"],
                               "start": utt["start"], "end": utt["end"], "channel": 0}]})
        add("speech_end", data={"time": utt["end"], "channel": 0})
    duration = 2.0 * utterances + 1.0
    full = " ".join(u["text"].strip() for u in utts)
    transcription = {"full_transcript": full, "languages": ["en"], "utterances": utts}
    metadata = {"audio_duration": duration, "number_of_distinct_channels": 1, "billing_time": duration,
                "transcription_time": 0.5}
    add("end_recording", data={"recording_duration": duration})
    add("post_transcript", data=transcription)
    add("post_final_transcript", data={"metadata": metadata, "transcription": transcription})
    add("end_session")
    body = {
        "id": gid, "request_id": f"G-{gid[:8]}", "version": 2, "status": "done",
        "created_at": _ts(0), "completed_at": _ts(60), "custom_metadata": {}, "error_code": None,
        "post_session_metadata": {}, "kind": "live", "file": None, "request_params": {},
        "result": {"metadata": metadata, "transcription": transcription,
                   "messages": [json.dumps(m) for m in msgs]},
    }
    return msgs, body


def callback_subset(messages: list[dict[str, Any]], config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    flags = callback_flags({"callback_config": config or {}})
    return [m for m in messages if is_expected(m, flags)]


# ------------------------------------------------------------------ stub Gladia


class StubGladia:
    """Serves GET /v2/live/:id from a script of (status code, body) answers per session."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[tuple[int, Any]]] = {}
        self.requests: list[str] = []
        app = Flask("stub_gladia")

        @app.get("/v2/live/<gid>")
        def get_live(gid: str):
            self.requests.append(gid)
            script = self.scripts.get(gid) or [(404, {"statusCode": 404, "message": "not found"})]
            status, body = script.pop(0) if len(script) > 1 else script[0]
            return jsonify(body), status

        self.server = LiveServer(app)

    def answer(self, gid: str, *answers: tuple[int, Any]) -> None:
        self.scripts[gid] = list(answers)


@pytest.fixture
def stub() -> Iterator[StubGladia]:
    stub = StubGladia()
    stub.server.start()
    yield stub
    stub.server.stop()


@pytest.fixture
def rsettings(settings, stub):
    return replace(settings, gladia_api_url=stub.server.url, reconcile_delay_s=2.0, reconcile_deadline_s=600.0)


def make_job(url: str, gid: str | None = GID, *, state: str = "stream_closed",
             callback_config: dict[str, Any] | None = None, closed_at: datetime | None = None) -> str:
    with session_scope(url) as session:
        job = Job(source_path="/audio/call.wav", gladia_id=gid, state=state,
                  session_config={"callback": True, "callback_config": callback_config or {}},
                  stream_closed_at=closed_at or (datetime.now(timezone.utc) if state != "queued" else None),
                  reconcile_after=datetime.now(timezone.utc))
        session.add(job)
        session.flush()
        return job.id


def deliver(url: str, job_id: str, messages: list[dict[str, Any]], gid: str = GID) -> None:
    """Store messages as the receiver does for callbacks that arrived (an end_session makes the job due at once)."""
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        for message in messages:
            normalize_message(session, message, source="callback", job=job, gladia_id=gid, reconcile_delay_s=0.0)


def stored_finals(url: str, gid: str = GID) -> list[tuple[str, int, float, float]]:
    with session_scope(url) as session:
        rows = session.scalars(select(Utterance).where(Utterance.gladia_id == gid, Utterance.is_final.is_(True))
                               .order_by(Utterance.start_s)).all()
        return [(r.text, r.channel, r.start_s, r.end_s) for r in rows]


def reference_finals(body: dict[str, Any]) -> list[tuple[str, int, float, float]]:
    return [(u["text"], u["channel"], u["start"], u["end"]) for u in body["result"]["transcription"]["utterances"]]


def counts(url: str) -> dict[str, int]:
    with session_scope(url) as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Event, Utterance, SessionResult)}


# ------------------------------------------------------------------------- units

pure = pytest.mark.dbless


@pure
def test_callback_flags_take_the_documented_defaults():
    assert callback_flags({}) == CALLBACK_DEFAULTS
    flags = callback_flags({"callback_config": {"receive_partial_transcripts": True, "receive_lifecycle_events": False,
                                                "url": "http://x", "receive_errors": "yes"}})
    assert flags["receive_partial_transcripts"] is True
    assert flags["receive_lifecycle_events"] is False
    assert flags["receive_errors"] is False  # not a boolean: the default stands


@pure
def test_expected_messages_follow_the_callback_config():
    messages, _ = build_session(utterances=1)
    kinds = [m["type"] + ("/final" if (m.get("data") or {}).get("is_final") else "") for m in callback_subset(messages)]
    # Defaults: no acks, no speech events, no partials; lifecycle, finals, add-ons, post-processing yes.
    assert "audio_chunk" not in kinds and "speech_start" not in kinds and "transcript" not in kinds
    assert kinds.count("transcript/final") == 1
    assert {"start_session", "end_session", "sentiment_analysis", "post_final_transcript"} <= set(kinds)
    everything = callback_subset(messages, {"receive_partial_transcripts": True, "receive_speech_events": True,
                                            "receive_acknowledgments": True})
    assert len(everything) == len(messages)
    assert is_expected({"type": "some_future_type"}, CALLBACK_DEFAULTS)


@pure
def test_retry_delay_grows_and_is_capped(settings=None):
    from webhook_service.config import Settings

    s = Settings.from_env(environ={}, reconcile_delay_s=5.0)
    delays = [retry_delay(s, n) for n in range(12)]
    assert delays[:3] == [5.0, 10.0, 20.0]
    assert delays == sorted(delays) and max(delays) == 300.0


@pure
def test_synthetic_utterance_id_is_stable():
    utt = {"channel": 1, "start": 12.3456, "end": 13.0, "text": "x"}
    assert synthetic_utterance_id(utt) == synthetic_utterance_id(dict(utt)) == "reconcile_01_0000012346"


# ------------------------------------------------------------------ integration


def test_backfills_missing_callbacks_and_settles_the_job(rsettings, stub):
    messages, body = build_session(utterances=3)
    stub.answer(GID, (200, body))
    job_id = make_job(rsettings.database_url)
    wanted = callback_subset(messages)
    lost = [m for m in wanted if m["type"] == "end_session" or
            (m["type"] == "transcript" and m["data"]["id"] == "00_00000001")]
    deliver(rsettings.database_url, job_id, [m for m in wanted if m not in lost])
    assert len(stored_finals(rsettings.database_url)) == 2

    result = reconcile_job(rsettings, job_id, trigger="end_session")

    assert result.outcome == "reconciled", result.reason
    assert (result.expected, result.received, result.missing) == (len(wanted), len(wanted) - 2, 2)
    assert result.repaired == 2 and result.mismatched == 0
    assert stored_finals(rsettings.database_url) == reference_finals(body)
    with session_scope(rsettings.database_url) as session:
        job = session.get(Job, job_id)
        assert job.state == "reconciled" and job.reconcile_after is None
        assert job.done_at is not None and job.reconciled_at is not None
        backfilled = session.scalars(select(Event.type).where(Event.source == "reconcile")).all()
        assert sorted(backfilled) == ["end_session", "transcript"]
        keys = set(session.scalars(select(Event.message_key)))
        assert {message_key(m) for m in wanted} <= keys
        run = session.scalars(select(ReconciliationRun)).one()
        assert run.trigger == "end_session" and run.outcome == "reconciled" and run.finished_at is not None
        assert run.details["missing_by_type"] == {"transcript": 1, "end_session": 1}
        sr = session.get(SessionResult, GID)
        assert sr.gladia_status == "done" and sr.gladia_response["id"] == GID
        assert sr.full_transcript == body["result"]["transcription"]["full_transcript"]
        assert sr.languages == ["en"] and sr.audio_duration_s == 7.0 and sr.billing_time_s == 7.0
        assert sr.gladia_completed_at is not None and sr.fetched_at is not None


def test_running_it_twice_changes_nothing(rsettings, stub):
    messages, body = build_session(utterances=4)
    stub.answer(GID, (200, body))
    job_id = make_job(rsettings.database_url)
    deliver(rsettings.database_url, job_id, callback_subset(messages)[::2])  # half the callbacks lost

    first = reconcile_job(rsettings, job_id)
    before = counts(rsettings.database_url)
    finals = stored_finals(rsettings.database_url)
    second = reconcile_job(rsettings, job_id)

    assert first.missing > 0 and first.repaired >= first.missing
    assert (second.outcome, second.missing, second.repaired, second.mismatched) == ("reconciled", 0, 0, 0)
    assert second.received == second.expected == first.expected
    assert counts(rsettings.database_url) == before
    assert stored_finals(rsettings.database_url) == finals == reference_finals(body)
    with session_scope(rsettings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 2


def test_only_what_the_callback_config_asked_for_is_expected(rsettings, stub):
    messages, body = build_session(utterances=2)
    stub.answer(GID, (200, body))
    job_id = make_job(rsettings.database_url)
    result = reconcile_job(rsettings, job_id)
    assert result.expected == len(callback_subset(messages)) < len(messages)
    with session_scope(rsettings.database_url) as session:
        types = set(session.scalars(select(Event.type)))
        partials = session.scalar(select(func.count()).select_from(Utterance).where(Utterance.is_final.is_(False)))
    assert "audio_chunk" not in types and "speech_start" not in types and partials == 0

    # A session that asked for acks and speech events expects them too.
    other = "0b7e3d36-7f0e-4b53-8f1c-2d9e6a4b5c71"
    messages2, body2 = build_session(other, utterances=2)
    stub.answer(other, (200, body2))
    config = {"receive_acknowledgments": True, "receive_speech_events": True}
    job2 = make_job(rsettings.database_url, other, callback_config=config)
    result2 = reconcile_job(rsettings, job2)
    assert result2.expected == len(callback_subset(messages2, config)) == result.expected + 3 * 2
    assert result2.missing == result2.expected


def test_a_mismatched_utterance_is_repaired(rsettings, stub):
    messages, body = build_session(utterances=3)
    stub.answer(GID, (200, body))
    job_id = make_job(rsettings.database_url)
    deliver(rsettings.database_url, job_id, callback_subset(messages))
    with session_scope(rsettings.database_url) as session:
        row = session.scalars(select(Utterance).where(Utterance.utterance_id == "00_00000002")).one()
        row.text, row.end_s = " garbled", row.end_s + 0.5

    result = reconcile_job(rsettings, job_id)

    assert (result.missing, result.mismatched, result.repaired) == (0, 1, 1)
    assert stored_finals(rsettings.database_url) == reference_finals(body)
    with session_scope(rsettings.database_url) as session:
        row = session.scalars(select(Utterance).where(Utterance.utterance_id == "00_00000002")).one()
        assert row.source == "reconcile" and row.word_count == 2
    assert reconcile_job(rsettings, job_id).mismatched == 0


def test_an_utterance_without_its_transcript_message_is_still_stored(rsettings, stub):
    messages, body = build_session(utterances=2)
    extra = _utterance(5, channel=1)
    body = copy.deepcopy(body)  # the messages keep the transcription as it was
    body["result"]["transcription"]["utterances"].append(extra)
    stub.answer(GID, (200, body))
    job_id = make_job(rsettings.database_url)
    deliver(rsettings.database_url, job_id, callback_subset(messages))

    first = reconcile_job(rsettings, job_id)
    second = reconcile_job(rsettings, job_id)

    assert first.repaired == 1 and first.details["utterances"]["missing"] == 1
    assert second.repaired == 0
    assert sorted(stored_finals(rsettings.database_url)) == sorted(reference_finals(body))
    with session_scope(rsettings.database_url) as session:
        ids = set(session.scalars(select(Utterance.utterance_id)))
    assert synthetic_utterance_id(extra) in ids


def test_a_session_still_processing_is_retried_later_with_a_growing_delay(rsettings, stub):
    _messages, body = build_session()
    processing = dict(copy.deepcopy(body), status="processing", result=None, completed_at=None)
    stub.answer(GID, (200, processing))
    job_id = make_job(rsettings.database_url)
    now = datetime.now(timezone.utc)

    first = reconcile_job(rsettings, job_id, now=now)
    second = reconcile_job(rsettings, job_id, now=now)

    assert first.outcome == second.outcome == "retry"
    assert first.next_attempt_at == now + timedelta(seconds=2.0)
    assert second.next_attempt_at == now + timedelta(seconds=4.0)
    with session_scope(rsettings.database_url) as session:
        job = session.get(Job, job_id)
        assert job.state == "stream_closed"
        assert abs((job.reconcile_after - second.next_attempt_at).total_seconds()) < 0.01
        sr = session.get(SessionResult, GID)
        assert sr.gladia_status == "processing"

    stub.answer(GID, (200, body))
    third = reconcile_job(rsettings, job_id)
    assert third.outcome == "reconciled"


def test_a_session_just_completed_is_compared_once_callbacks_in_flight_had_time_to_land(rsettings, stub):
    _messages, body = build_session(utterances=1)
    completed = datetime.now(timezone.utc).replace(microsecond=0)
    stub.answer(GID, (200, dict(body, completed_at=completed.isoformat().replace("+00:00", "Z"))))
    job_id = make_job(rsettings.database_url)

    waiting = reconcile_job(rsettings, job_id, now=completed + timedelta(seconds=1))

    settled_at = completed + timedelta(seconds=rsettings.reconcile_delay_s)
    assert waiting.outcome == "retry" and waiting.run_id is None and waiting.next_attempt_at == settled_at
    with session_scope(rsettings.database_url) as session:
        assert session.get(Job, job_id).reconcile_after == settled_at
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 0
    assert reconcile_job(rsettings, job_id, now=settled_at).outcome == "reconciled"


def _partly_streamed_job(url: str, **fields: Any) -> str:
    with session_scope(url) as session:
        job = Job(source_path="/audio/a.wav", gladia_id=GID, state="done", session_config={},
                  bytes_total=64_000, bytes_acked=3_200, done_at=datetime.now(timezone.utc), **fields)
        session.add(job)
        session.flush()
        return job.id


def test_a_done_session_waits_while_a_worker_is_still_on_the_job(rsettings, stub):
    _messages, body = build_session(utterances=1)
    stub.answer(GID, (200, body))
    job_id = _partly_streamed_job(rsettings.database_url, worker_id="host:1:run",
                                  heartbeat_at=datetime.now(timezone.utc))

    result = reconcile_job(rsettings, job_id)

    assert result.outcome == "retry" and "not fully streamed" in result.reason
    with session_scope(rsettings.database_url) as session:
        job = session.get(Job, job_id)
        assert job.state == "done" and job.reconcile_after == result.next_attempt_at
        assert session.scalar(select(func.count()).select_from(Event)) == 0  # nothing attached yet

    with session_scope(rsettings.database_url) as session:  # the worker finishes the stream
        job = session.get(Job, job_id)
        job.bytes_acked, job.stream_closed_at, job.worker_id = 64_000, datetime.now(timezone.utc), None
    assert reconcile_job(rsettings, job_id).outcome == "reconciled"


def test_a_session_gladia_ended_before_all_the_audio_keeps_what_exists_and_runs_the_job_again_once(rsettings, stub):
    messages, body = build_session(utterances=2)
    stub.answer(GID, (200, body))
    job_id = _partly_streamed_job(rsettings.database_url)  # no worker on it any more

    result = reconcile_job(rsettings, job_id)

    assert result.outcome == "failed" and result.reason.startswith("incomplete")
    assert "3200 of 64000 bytes" in result.reason and result.repaired == result.expected > 0
    assert result.details["rerun"]
    assert stored_finals(rsettings.database_url) == reference_finals(body)  # the partial results are kept
    with session_scope(rsettings.database_url) as session:
        job = session.get(Job, job_id)
        # Run again once, on its own, with a fresh session; the ended one is in the job's history.
        assert job.state == "queued" and job.gladia_id is None and job.retries == 1 and job.attempts == 0
        [previous] = session.scalars(select(JobSession).where(JobSession.job_id == job_id)).all()
        assert (previous.gladia_id, previous.replaced_by, previous.run) == (GID, "auto", 1)
        assert "incomplete" in previous.last_error and previous.bytes_acked == 3_200
        # Kept, but no longer counted as the job's until the new session settles.
        assert session.scalar(select(func.count()).select_from(Utterance).where(Utterance.job_id == job_id)) == 0

    # The second session ends early too: the job fails for good (one automatic run, not a loop).
    second = "7a2d3b63-7b54-4f6f-8b62-2c3d4e5f6a71"
    _messages, body2 = build_session(gid=second, utterances=1)
    stub.answer(second, (200, body2))
    with session_scope(rsettings.database_url) as session:
        job = session.get(Job, job_id)
        job.gladia_id, job.state, job.bytes_acked, job.done_at = second, "done", 3_200, datetime.now(timezone.utc)
    again = reconcile_job(rsettings, job_id)
    assert again.outcome == "failed" and "rerun" not in again.details
    with session_scope(rsettings.database_url) as session:
        job = session.get(Job, job_id)
        assert job.state == "failed" and "incomplete" in job.last_error and job.retries == 1
    assert stored_finals(rsettings.database_url) == reference_finals(body)  # still kept: nothing replaced them


def test_past_the_deadline_a_session_still_processing_fails(rsettings, stub):
    _messages, body = build_session()
    stub.answer(GID, (200, dict(body, status="processing", result=None)))
    closed = datetime.now(timezone.utc) - timedelta(seconds=rsettings.reconcile_deadline_s + 5)
    job_id = make_job(rsettings.database_url, closed_at=closed)

    result = reconcile_job(rsettings, job_id)

    assert result.outcome == "failed" and result.reason.startswith("deadline")
    with session_scope(rsettings.database_url) as session:
        job = session.get(Job, job_id)
        assert job.state == "failed" and "deadline" in job.last_error and job.reconcile_after is None


@pytest.mark.parametrize(
    "answer, reason",
    [
        ((404, {"statusCode": 404, "message": "not found"}), "not_found"),
        ((200, {"id": GID, "status": "error", "error_code": 500, "result": None}), "gladia_error"),
    ],
)
def test_a_missing_or_errored_session_fails_the_job(rsettings, stub, answer, reason):
    stub.answer(GID, answer)
    job_id = make_job(rsettings.database_url)
    result = reconcile_job(rsettings, job_id)
    assert result.outcome == "failed" and result.reason.startswith(reason)
    with session_scope(rsettings.database_url) as session:
        job = session.get(Job, job_id)
        assert job.state == "failed" and reason in job.last_error and job.reconcile_after is None
        assert session.scalars(select(ReconciliationRun.outcome)).all() == ["failed"]


def test_transient_errors_are_retried_within_the_run_then_later(rsettings, stub):
    _messages, body = build_session(utterances=1)
    busy = (503, {"statusCode": 503, "message": "busy"})
    stub.answer(GID, busy, (429, {"statusCode": 429, "message": "slow down"}), (200, body))
    job_id = make_job(rsettings.database_url)
    assert reconcile_job(rsettings, job_id).outcome == "reconciled"
    assert stub.requests.count(GID) == 3

    other = "0b7e3d36-7f0e-4b53-8f1c-2d9e6a4b5c71"
    stub.answer(other, busy)
    job2 = make_job(rsettings.database_url, other)
    result = reconcile_job(rsettings, job2)
    assert result.outcome == "retry" and "503" in result.reason
    with session_scope(rsettings.database_url) as session:
        assert session.get(Job, job2).reconcile_after == result.next_attempt_at


def test_inbox_duplicates_of_the_session_are_reported(rsettings, stub):
    messages, body = build_session(utterances=1)
    stub.answer(GID, (200, body))
    job_id = make_job(rsettings.database_url)
    now = datetime.now(timezone.utc)
    with session_scope(rsettings.database_url) as session:
        for message in callback_subset(messages)[:2]:
            envelope = {"id": GID, "event": "live." + message["type"], "payload": message}
            for _ in range(3):  # each delivered three times
                store_inbox(session, kind="callback", raw=json.dumps(envelope).encode(), body=envelope,
                            headers={}, event=envelope["event"], gladia_id=GID, job_id=job_id, received_at=now)
    result = reconcile_job(rsettings, job_id)
    assert result.duplicates == 4
    with session_scope(rsettings.database_url) as session:
        assert session.scalar(select(func.sum(InboxItem.duplicates))) == 4


def test_a_job_without_a_session_is_skipped(rsettings, stub):
    job_id = make_job(rsettings.database_url, None, state="queued")
    result = reconcile_job(rsettings, job_id)
    assert result.outcome == "skipped" and stub.requests == []
    with session_scope(rsettings.database_url) as session:
        assert session.get(Job, job_id).reconcile_after is None
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 0


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(rsettings) -> dict[str, str]:
    return {"DATABASE_URL": rsettings.database_url, "DATA_DIR": rsettings.data_dir,
            "GLADIA_API_URL": rsettings.gladia_api_url, "CELERY_BROKER_URL": "memory://",
            "LOG_LEVEL": "WARNING"}


def test_cli_reconciles_one_session_by_gladia_id(rsettings, stub, cli_env):
    messages, body = build_session(utterances=2)
    stub.answer(GID, (200, body))
    make_job(rsettings.database_url)
    result = CliRunner().invoke(cli, ["reconcile", GID], env=cli_env)
    assert result.exit_code == 0, result.output
    assert f"{GID}: reconciled" in result.output and f"missing={len(callback_subset(messages))}" in result.output

    again = CliRunner().invoke(cli, ["reconcile", GID, "--json"], env=cli_env)
    assert again.exit_code == 0
    [run] = json.loads(again.output)
    assert (run["outcome"], run["missing"], run["repaired"]) == ("reconciled", 0, 0)


def test_cli_pending_reconciles_every_unsettled_job(rsettings, stub, cli_env):
    gids = [GID, "0b7e3d36-7f0e-4b53-8f1c-2d9e6a4b5c71", "9a8b7c6d-0000-4000-8000-000000000003"]
    for gid in gids[:2]:
        stub.answer(gid, (200, build_session(gid, utterances=1)[1]))
        make_job(rsettings.database_url, gid)
    stub.answer(gids[2], (404, {"statusCode": 404, "message": "gone"}))
    make_job(rsettings.database_url, gids[2], state="done")
    make_job(rsettings.database_url, None, state="queued")

    result = CliRunner().invoke(cli, ["reconcile", "--pending"], env=cli_env)

    assert result.exit_code == 1  # one session failed
    assert result.output.count(": reconciled") == 2 and f"{gids[2]}: failed" in result.output
    again = CliRunner().invoke(cli, ["reconcile", "--pending"], env=cli_env)
    assert again.exit_code == 0 and "nothing to reconcile" in again.output


@pytest.mark.parametrize("args", [["reconcile"], ["reconcile", "x", "--pending"], ["reconcile", "no-such-session"]])
def test_cli_bad_input_exits_2_and_writes_nothing(rsettings, cli_env, args):
    result = CliRunner().invoke(cli, args, env=cli_env)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    with session_scope(rsettings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 0


def test_a_stream_closed_because_its_session_ended_early_is_still_incomplete(rsettings, stub):
    # A run that found the session ended under it closes the job (stream_closed) with audio unsent;
    # that close alone must not let reconciliation call the job reconciled.
    _messages, body = build_session(utterances=1)
    stub.answer(GID, (200, body))
    job_id = _partly_streamed_job(rsettings.database_url, stream_closed_at=datetime.now(timezone.utc))

    result = reconcile_job(rsettings, job_id)

    assert result.outcome == "failed" and "3200 of 64000 bytes" in result.reason
    with session_scope(rsettings.database_url) as session:
        job = session.get(Job, job_id)
        assert job.state == "queued" and job.reconciled_at is None and job.retries == 1  # runs again, once
