"""Gladia clients that nobody here wrote, unmodified, against the emulator (sphinx engine).

Each is a pinned test dependency (requirements-dev.txt) used through its
public interface only: pipecat's ``GladiaSTTService`` in a pipecat pipeline,
LiveKit's ``livekit-plugins-gladia`` speech stream, and the official
``gladiaio-sdk`` (sync and async) resuming over sockets that the emulator
cuts on purpose. Each streams recorded speech and must end with, word for
word, the final transcripts that the sphinx engine itself makes of the same
samples (``speech_fixtures``): a client that loses, repeats or reorders audio,
or that the emulator refuses, fails here.

Not marked ``dbless``: ``make test`` runs them in both passes, as the
contract of the product's test peer.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import requests
from speech_fixtures import RATE, speech, sphinx_finals

pytestmark = pytest.mark.dbless  # the emulator and the clients only: run once, in the SQLite pass

CHUNK = RATE * 2 // 10  # 100 ms of 16-bit mono


def only_session(emu) -> dict:
    """GET /v2/live/:id of the emulator's one session."""
    headers = {"x-gladia-key": emu.api_key}
    [item] = requests.get(f"{emu.url}/v2/live", headers=headers, timeout=10).json()["items"]
    return emu.wait_session_done(item["id"], timeout=60)


@pytest.mark.filterwarnings("ignore:'audioop' is deprecated:DeprecationWarning")  # inside pipecat
def test_pipecat_gladia_stt_service_receives_the_engines_finals(emulator_factory):
    from pipecat.frames.frames import EndFrame, InputAudioRawFrame, TranscriptionFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.services.gladia.config import RealtimeProcessingConfig
    from pipecat.services.gladia.stt import GladiaSTTService
    from pipecat.workers.runner import WorkerRunner

    emu = emulator_factory(engine="sphinx")
    pcm = speech("hello", "report")
    expected = sphinx_finals(pcm)
    audio = pcm.tobytes()

    class Finals(FrameProcessor):
        """The end of the pipeline: keeps the text of every TranscriptionFrame (pipecat's finals)."""

        def __init__(self) -> None:
            super().__init__()
            self.texts: list[str] = []
            self.all_in = asyncio.Event()

        async def process_frame(self, frame, direction) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, TranscriptionFrame):
                self.texts.append(frame.text)
                if len(self.texts) >= len(expected):
                    self.all_in.set()
            await self.push_frame(frame, direction)

    async def run() -> list[str]:
        # words_accurate_timestamps: a field of pipecat's own configuration that Gladia's OpenAPI omits.
        stt = GladiaSTTService(api_key=emu.api_key, url=f"{emu.url}/v2/live", sample_rate=RATE,
                               settings=GladiaSTTService.Settings(
                                   realtime_processing=RealtimeProcessingConfig(words_accurate_timestamps=True)))
        finals = Finals()
        worker = PipelineWorker(Pipeline([stt, finals]), params=PipelineParams(audio_in_sample_rate=RATE),
                                cancel_on_idle_timeout=False)
        started = asyncio.Event()

        @worker.event_handler("on_pipeline_started")
        async def _started(_worker, _frame) -> None:
            started.set()

        async def feed() -> None:
            await asyncio.wait_for(started.wait(), 30)
            for i in range(0, len(audio), CHUNK):
                await worker.queue_frame(InputAudioRawFrame(audio=audio[i:i + CHUNK], sample_rate=RATE,
                                                            num_channels=1))
            try:  # pipecat does not wait for transcripts after its EndFrame: wait for them first
                await asyncio.wait_for(finals.all_in.wait(), 60)
            finally:
                await worker.queue_frame(EndFrame())

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await asyncio.wait_for(asyncio.gather(runner.run(), feed()), 120)
        return finals.texts

    texts = asyncio.run(run())
    assert len(expected) == 2 and [t.strip() for t in texts] == expected
    job = only_session(emu)
    assert job["request_params"]["realtime_processing"]["words_accurate_timestamps"] is True
    assert "pipecat" in job["custom_metadata"]
    assert job["result"]["transcription"]["full_transcript"] == " ".join(expected)


def test_livekit_gladia_plugin_stream_receives_the_engines_finals(emulator_factory):
    import aiohttp
    from livekit import rtc
    from livekit.agents import stt as agents_stt
    from livekit.plugins import gladia

    emu = emulator_factory(engine="sphinx")
    pcm = speech("lights", "hello")
    expected = sphinx_finals(pcm)
    audio = pcm.tobytes()

    async def run() -> list[str]:
        async with aiohttp.ClientSession() as http:
            # The plugin as it is: region eu-west as a query parameter, and realtime_processing.
            # words_accurate_timestamps in every session's body (refused with --strict-schema).
            stt = gladia.STT(api_key=emu.api_key, base_url=f"{emu.url}/v2/live", http_session=http)
            stream = stt.stream()
            for i in range(0, len(audio), CHUNK):
                piece = audio[i:i + CHUNK]
                stream.push_frame(rtc.AudioFrame(data=piece, sample_rate=RATE, num_channels=1,
                                                 samples_per_channel=len(piece) // 2))
            texts: list[str] = []

            async def read() -> None:
                async for event in stream:
                    if event.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT:
                        texts.append(event.alternatives[0].text)
                        if len(texts) == len(expected):
                            return

            try:
                await asyncio.wait_for(read(), 60)
            finally:
                stream.end_input()
                await stream.aclose()
            return texts

    texts = asyncio.run(run())
    assert len(expected) == 2 and texts == expected
    job = only_session(emu)
    assert job["request_params"]["realtime_processing"]["words_accurate_timestamps"] is False
    assert job["request_params"]["messages_config"]["receive_partial_transcripts"] is True
    assert "livekit" in job["custom_metadata"]


OPTIONS = {"encoding": "wav/pcm", "bit_depth": 16, "sample_rate": RATE, "channels": 1,
           "messages_config": {"receive_final_transcripts": True}}
CUT_AFTER_CHUNKS = 10  # every connection is cut when its 11th chunk arrives (dropped unacknowledged)
# Chunks are sent as a live source would, 100 ms of audio every PACE_S (5x real time): the SDK resends
# what is unacknowledged in one frame when it reconnects, and goes on with new chunks, cut again.
PACE_S = 0.02


def assert_in_order(finals: list[str], expected: list[str]) -> None:
    """The finals the socket delivered are the engine's, in order. A final produced while the socket was
    cut is not sent again on the next connection (the session's result has it): some may be missing, all
    of them when each lands while a socket is cut (seen on a loaded machine). That finals reach a client
    over the socket is checked without cuts by the pipecat and LiveKit tests above."""
    remaining = iter(expected)
    assert all(text.strip() in remaining for text in finals), (finals, expected)


def between_sockets_ok(call, *args) -> None:
    """``call(*args)`` (a session's ``send_audio`` or ``stop_recording``), as a client must make it with gladiaio-sdk 2.2.

    When a cut socket has closed and its replacement is not yet connecting, the SDK's socket still says
    OPEN without a socket and raises ``RuntimeError("readyState is open but ws is not initialized")``.
    The session has already kept the chunk (or the stop) by then, and sends it on the next connection,
    so the client goes on; any other error still fails the test.
    """
    try:
        call(*args)
    except RuntimeError as exc:
        if "ws is not initialized" not in str(exc):
            raise


def listen(session, on_ended) -> tuple[list[str], list[int]]:
    """The text of each final the SDK session emits, and each connection attempt (the first and every resume)."""
    finals: list[str] = []
    connections: list[int] = []

    def message(m) -> None:
        if getattr(m, "type", None) == "transcript" and m.data.is_final:
            finals.append(m.data.utterance.text)

    session.on("message", message)
    session.on("connecting", lambda info: connections.append(info.attempt))
    session.on("ended", lambda info: on_ended())
    return finals, connections


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")  # inside the SDK
def test_official_sdk_resumes_over_cut_sockets_to_the_full_transcript(emulator_factory):
    from gladiaio_sdk import GladiaClient

    emu = emulator_factory(engine="sphinx", faults={"ws_cut_after_chunks": CUT_AFTER_CHUNKS})
    pcm = speech("hello", "report")
    expected = sphinx_finals(pcm)
    audio = pcm.tobytes()
    client = GladiaClient(api_key=emu.api_key, api_url=emu.url).live_v2()
    session = client.start_session(OPTIONS)
    ended = threading.Event()
    finals, connections = listen(session, ended.set)
    assert session.wait_until_ready(30)
    for i in range(0, len(audio), CHUNK):
        between_sockets_ok(session.send_audio, audio[i:i + CHUNK])
        time.sleep(PACE_S)
    between_sockets_ok(session.stop_recording)
    assert ended.wait(90)

    assert len(connections) >= 3  # cut, and resumed, several times
    assert emu.received_audio(session.session_id) == audio  # no byte lost or repeated across the cuts
    job = client.get(session.session_id)
    assert job.result.transcription.full_transcript == " ".join(expected)
    assert_in_order(finals, expected)


def test_official_async_sdk_resumes_over_cut_sockets_to_the_full_transcript(emulator_factory):
    from gladiaio_sdk import GladiaClient

    emu = emulator_factory(engine="sphinx", faults={"ws_cut_after_chunks": CUT_AFTER_CHUNKS})
    pcm = speech("report", "lights")
    expected = sphinx_finals(pcm)
    audio = pcm.tobytes()

    async def run() -> tuple[str, list[str], list[int], str]:
        client = GladiaClient(api_key=emu.api_key, api_url=emu.url).live_v2_async()
        session = client.start_session(OPTIONS)
        ended = asyncio.Event()
        finals, connections = listen(session, ended.set)
        for i in range(0, len(audio), CHUNK):
            between_sockets_ok(session.send_audio, audio[i:i + CHUNK])
            await asyncio.sleep(PACE_S)
        between_sockets_ok(session.stop_recording)
        await asyncio.wait_for(ended.wait(), 90)
        job = await client.get(session.session_id)
        return session.session_id, finals, connections, job.result.transcription.full_transcript

    session_id, finals, connections, full = asyncio.run(run())
    assert len(connections) >= 3  # cut, and resumed, several times
    assert emu.received_audio(session_id) == audio
    assert full == " ".join(expected)
    assert_in_order(finals, expected)
