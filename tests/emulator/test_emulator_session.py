"""A live session runs against the SessionHost protocol alone: no server, no socket, no HTTP."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from webhook_service.emulator.ports import SessionHost
from webhook_service.emulator.schema import validate_request
from webhook_service.emulator.session import LiveSession

pytestmark = pytest.mark.dbless


class RecordingHost:
    """The smallest host: no thread pool, callbacks recorded, background tasks kept."""

    executor = None
    engine = "vad"
    max_session_s = 3600.0

    def __init__(self, spool_dir: str):
        self.spool_dir = spool_dir
        self.callbacks: list[tuple[str, str, dict]] = []
        self.tasks: list[asyncio.Task] = []

    def ack_delay_s(self) -> float:
        return 0.0

    def send_callback(self, session_id: str, url: str, body: dict) -> None:
        self.callbacks.append((session_id, url, body))

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task


def test_a_session_needs_only_its_host(tmp_path):
    params, metadata, errors = validate_request({"callback": True, "callback_config": {
        "url": "http://127.0.0.1:9/cb", "receive_acknowledgments": True}, "custom_metadata": {"job_id": "j1"}})
    assert errors == []

    async def scenario() -> tuple[RecordingHost, LiveSession]:
        host = RecordingHost(str(tmp_path))
        checked: SessionHost = host  # what a type checker verifies: the fake satisfies the protocol
        session = LiveSession(checked, "key", params, metadata)
        session.receive_audio(np.zeros(16000, dtype="<i2").tobytes())  # one second of silence
        session.stop_recording()
        await asyncio.wait_for(session.done.wait(), 10)
        await asyncio.gather(*host.tasks)
        return host, session

    host, session = asyncio.run(scenario())
    events = [body["event"] for _, _, body in host.callbacks]
    assert events[0] == "live.start_session" and events[-1] == "live.end_session"
    assert "live.audio_chunk" in events and "live.stop_recording" in events
    assert {url for _, url, _ in host.callbacks} == {"http://127.0.0.1:9/cb"}
    assert session.status == "done" and session.to_json()["custom_metadata"] == {"job_id": "j1"}
    assert json.loads(session.messages[-1])["type"] == "end_session"


def _run(tmp_path, audio_seconds: float) -> LiveSession:
    params, metadata, _ = validate_request({})

    async def scenario() -> LiveSession:
        host = RecordingHost(str(tmp_path))
        session = LiveSession(host, "key", params, metadata)
        if audio_seconds:
            session.receive_audio(np.zeros(int(16000 * audio_seconds), dtype="<i2").tobytes())
        session.stop_recording()
        await asyncio.wait_for(session.done.wait(), 10)
        await asyncio.gather(*host.tasks)
        return session

    return asyncio.run(scenario())


def test_recognizers_are_made_with_the_first_audio_and_released_at_the_end(tmp_path, monkeypatch):
    import gc
    import weakref

    import webhook_service.emulator.session as module

    made: list[weakref.ref] = []
    real = module.create_recognizer

    def counting(engine, params):
        recognizer = real(engine, params)
        made.append(weakref.ref(recognizer))
        return recognizer

    monkeypatch.setattr(module, "create_recognizer", counting)
    silent = _run(tmp_path, 0)
    assert silent.status == "done" and made == []  # no audio: no recognizer (a sphinx decoder is ~100 MB)

    session = _run(tmp_path, 1.0)
    gc.collect()
    assert session.status == "done" and len(made) == 1
    assert made[0]() is None  # the finished session, still kept for GET, holds no recognizer
