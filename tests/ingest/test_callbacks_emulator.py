"""The receiver fed by the emulator's real callbacks over real sockets.

A session is driven by hand (no worker): POST /v2/live with the receiver's
callback URL, stream a WAV over the WebSocket, close with 1000, wait for the
emulator to finish delivering, then compare the database with GET /v2/live/:id.
"""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import requests
import websockets
from sqlalchemy import func, select

from webhook_service.db import session_scope
from webhook_service.ingest import process_inbox_item
from webhook_service.models import AddonResult, Event, InboxItem, Job, SessionResult, Utterance
from webhook_service.tokens import callback_token

DATA = Path(__file__).parent.parent / "data"
CHUNK_MS = 100


def start_session(emulator, callback_url: str, **extra) -> dict:
    body = {
        "encoding": "wav/pcm", "bit_depth": 16, "sample_rate": 16000, "channels": 1,
        "language_config": {"languages": ["en"]},
        "callback": True,
        "callback_config": {"url": callback_url, "receive_partial_transcripts": True,
                            "receive_acknowledgments": True, "receive_speech_events": True,
                            "receive_lifecycle_events": True},
        **extra,
    }
    r = requests.post(f"{emulator.url}/v2/live", json=body, headers={"x-gladia-key": emulator.api_key}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def stream_session(emulator, live_app, settings, wav: Path, **extra) -> tuple[str, str, dict]:
    """A job streamed as the worker does it, against the emulator with callbacks to the live receiver.

    The session id and socket URL are recorded right after POST /v2/live, as the worker does; callbacks
    that beat that record are stored raw and normalized once it exists. Returns (job id, session id, the session's GET result)
    once the session is done and every callback was delivered, dropped or given up.
    """
    with session_scope(settings.database_url) as s:
        job = Job(source_path=str(wav))
        job.advance("starting")
        s.add(job)
    url = live_app.url + "/callbacks/gladia/" + callback_token(job.id, settings.callback_signing_key)
    created = start_session(emulator, url, **extra)
    with session_scope(settings.database_url) as s:
        row = s.get(Job, job.id)
        row.gladia_id, row.ws_url = created["id"], created["url"]
    asyncio.run(stream_wav(created["url"], wav))
    reference = emulator.wait_session_done(created["id"], timeout=60)
    assert emulator.wait_callbacks(timeout=60)
    redrive_waiting_callbacks(settings)
    return job.id, created["id"], reference


def redrive_waiting_callbacks(settings) -> None:
    """What the sweeper does: normalize the callbacks that arrived before the session id was recorded."""
    with session_scope(settings.database_url) as s:
        waiting = list(s.scalars(select(InboxItem.id).where(InboxItem.status == "pending")))
    for inbox_id in waiting:
        assert process_inbox_item(settings, inbox_id) == "processed"


async def stream_wav(ws_url: str, path: Path) -> None:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (16000, 2, 1)
        pcm = w.readframes(w.getnframes())
    step = 16000 * 2 * CHUNK_MS // 1000
    async with websockets.connect(ws_url, max_size=None) as ws:
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i:i + step])
        # Read until every byte is acknowledged, then close with 1000 (the worker's default close mode).
        acked = 0
        while acked < len(pcm):
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if msg.get("type") == "audio_chunk" and msg.get("acknowledged"):
                acked = msg["data"]["byte_range"][1]
        await ws.close(code=1000)


def test_emulator_session_callbacks_end_up_in_sql(emulator, live_app, settings):
    job_id, gid, reference = stream_session(
        emulator, live_app, settings, DATA / "hello.wav",
        realtime_processing={"named_entity_recognition": True, "sentiment_analysis": True})

    ledger = emulator.ledger(gid)
    assert ledger["totals"]["delivered"] == ledger["totals"]["messages"] > 0
    sent_keys = {e["message_key"] for e in ledger["entries"]}
    with session_scope(settings.database_url) as s:
        j = s.get(Job, job_id)
        assert j.gladia_id == gid
        assert j.state == "done" and j.reconcile_after is not None
        # Every delivered message is one event, keyed exactly as the emulator keyed it.
        stored_keys = set(s.scalars(select(Event.message_key).where(Event.gladia_id == gid)))
        assert stored_keys == sent_keys
        assert s.scalar(select(func.count()).select_from(InboxItem).where(InboxItem.status != "processed")) == 0
        finals = s.scalars(select(Utterance).where(Utterance.gladia_id == gid, Utterance.is_final.is_(True))
                           .order_by(Utterance.start_s)).all()
        partials = s.scalar(select(func.count()).select_from(Utterance).where(Utterance.is_final.is_(False)))
        result = s.get(SessionResult, gid)
        addon_kinds = set(s.scalars(select(AddonResult.kind).where(AddonResult.gladia_id == gid)))

    expected = reference["result"]["transcription"]["utterances"]
    assert expected, "the emulator recognised no speech in hello.wav"
    assert [(u.text, u.start_s, u.end_s, u.channel, u.language, u.words) for u in finals] == [
        (u["text"], u["start"], u["end"], u["channel"], u["language"], u["words"]) for u in expected
    ]
    assert partials == 0  # every partial was replaced by its final
    assert result is not None and result.full_transcript == reference["result"]["transcription"]["full_transcript"]
    assert {"named_entity_recognition", "sentiment_analysis"} <= addon_kinds

    # The reference's own message list holds the same messages (same keys) as the callbacks.
    from webhook_service.ingest import message_key

    reference_keys = {message_key(json.loads(m)) for m in reference["result"]["messages"]}
    assert sent_keys <= reference_keys


def test_emulator_duplicates_and_reordering_change_nothing(emulator, live_app, settings):
    emulator.set_faults(seed=7, callback_duplicate_rate=0.5, callback_reorder_rate=0.3)
    job_id, gid, reference = stream_session(emulator, live_app, settings, DATA / "lights.wav")
    ledger = emulator.ledger(gid)
    assert ledger["totals"]["duplicated"] > 0  # the fault really happened
    with session_scope(settings.database_url) as s:
        events = s.scalar(select(func.count()).select_from(Event).where(Event.gladia_id == gid))
        duplicates = s.scalar(select(func.sum(InboxItem.duplicates)).where(InboxItem.gladia_id == gid))
        finals = s.scalars(select(Utterance.text).where(Utterance.gladia_id == gid, Utterance.is_final.is_(True))
                           .order_by(Utterance.start_s)).all()
        assert s.get(Job, job_id).state == "done"
    assert events == ledger["totals"]["messages"]
    assert duplicates == ledger["totals"]["duplicated"]
    assert finals == [u["text"] for u in reference["result"]["transcription"]["utterances"]]
