"""Real speech through the emulator's sphinx engine, and the official Gladia SDK as a client.

The recordings and the engine's own reading of them: ``speech_fixtures``.
"""

from __future__ import annotations

import functools
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from speech_fixtures import DATA, samples, sphinx_finals
from websockets.sync.client import connect

pytestmark = pytest.mark.dbless

# Measured again once the engine kept the utterance open at the end of the audio: 4 errors in 31 words
# (0.129, all in "london") on these four files with pocketsphinx 5.1.1 and its en-us model. The bound is
# the measurement: the engine is deterministic, so any loss of a word fails the test.
WER_BOUND = 4 / 31


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """Levenshtein distance over words, and the reference length."""
    ref, hyp = reference.lower().split(), hypothesis.lower().split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


def stream(emu, body: dict, data: bytes, chunk: int = 3200) -> tuple[str, list[dict]]:
    """One session: stream ``data``, stop, collect every message until the close."""
    headers = {"x-gladia-key": emu.api_key}
    session = requests.post(f"{emu.url}/v2/live", json=body, headers=headers, timeout=10).json()
    messages = []
    with connect(session["url"], compression=None, max_size=None) as ws:
        for i in range(0, len(data), chunk):
            ws.send(data[i:i + chunk])
        ws.send(json.dumps({"type": "stop_recording"}))
        for raw in ws:
            messages.append(json.loads(raw))
    return session["id"], messages


def test_sphinx_word_error_rate_on_speech_files(emulator_factory):
    emu = emulator_factory(engine="sphinx")
    names = sorted(p.stem for p in DATA.glob("*.wav"))
    assert len(names) == 4

    def run(name: str) -> tuple[str, str]:
        sid, _ = stream(emu, {}, (DATA / f"{name}.wav").read_bytes())  # WAV header and all
        job = emu.wait_session_done(sid, timeout=60)
        return name, job["result"]["transcription"]["full_transcript"]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, names))
    errors = total = 0
    for name, hypothesis in results:
        e, n = word_errors((DATA / f"{name}.txt").read_text(), hypothesis)
        errors, total = errors + e, total + n
    assert errors / total <= WER_BOUND, results


def test_sphinx_utterances_have_absolute_times_and_events(emulator_factory):
    emu = emulator_factory(engine="sphinx")
    first, second = samples("hello"), samples("report")
    gap = np.zeros(16000, dtype=np.int16)
    audio = np.concatenate([first, gap, second])
    offset = (len(first) + len(gap)) / 16000
    sid, messages = stream(emu, {"messages_config": {"receive_partial_transcripts": True}}, audio.tobytes())
    finals = [m["data"] for m in messages if m["type"] == "transcript" and m["data"]["is_final"]]
    assert [f["id"] for f in finals] == ["00_00000000", "00_00000001"]
    assert "hello world" in finals[0]["utterance"]["text"]
    assert "report" in finals[1]["utterance"]["text"]
    assert finals[1]["utterance"]["start"] >= offset  # absolute, not relative to the utterance
    assert finals[0]["utterance"]["end"] <= offset
    for f in finals:
        words = f["utterance"]["words"]
        assert all(0 <= w["confidence"] <= 1 and w["start"] < w["end"] for w in words)
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    partial_ids = {m["data"]["id"] for m in messages if m["type"] == "transcript" and not m["data"]["is_final"]}
    assert partial_ids and partial_ids <= {f["id"] for f in finals}
    speech = [(m["type"], m["data"]["time"]) for m in messages if m["type"] in ("speech_start", "speech_end")]
    assert [kind for kind, _ in speech] == ["speech_start", "speech_end"] * 2
    assert speech[2][1] >= offset - 0.35  # the endpointer's window may start a little early


def test_sphinx_transcribes_each_channel(emulator_factory):
    emu = emulator_factory(engine="sphinx")
    left, right = samples("hello"), samples("lights")
    length = max(len(left), len(right))
    stereo = np.zeros((length, 2), dtype=np.int16)
    stereo[:len(left), 0] = left
    stereo[:len(right), 1] = right
    sid, messages = stream(emu, {"channels": 2}, stereo.reshape(-1).tobytes(), chunk=6400)
    finals = [m["data"] for m in messages if m["type"] == "transcript" and m["data"]["is_final"]]
    by_channel = {f["utterance"]["channel"]: f for f in finals}
    assert set(by_channel) == {0, 1}
    assert by_channel[0]["id"].startswith("00_") and by_channel[1]["id"].startswith("01_")
    assert "hello" in by_channel[0]["utterance"]["text"]
    assert "lights" in by_channel[1]["utterance"]["text"]


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")  # inside the SDK
def test_official_sdk_streams_a_file_and_reads_the_result(emulator_factory):
    from gladiaio_sdk import GladiaClient

    emu = emulator_factory(engine="sphinx")
    client = GladiaClient(api_key=emu.api_key, api_url=emu.url).live_v2()
    session = client.start_session({"encoding": "wav/pcm", "bit_depth": 16, "sample_rate": 16000, "channels": 1,
                                    "custom_metadata": {"job_id": "sdk-contract"},
                                    "messages_config": {"receive_final_transcripts": True,
                                                        "receive_lifecycle_events": True}})
    received, ended, errors = [], threading.Event(), []
    session.on("message", lambda message: received.append(message))
    session.on("error", lambda err: errors.append(err))
    session.on("ended", lambda info: (received.append(info), ended.set()))
    assert session.wait_until_ready(10)
    pcm = samples("hello").tobytes()
    for i in range(0, len(pcm), 3200):  # 100 ms chunks, as fast as the client sends them
        session.send_audio(pcm[i:i + 3200])
    session.stop_recording()
    assert ended.wait(30)
    assert not errors, errors
    types = [getattr(m, "type", None) for m in received]
    assert "transcript" in types and "end_session" in types and "post_final_transcript" in types
    transcript = next(m for m in received if getattr(m, "type", None) == "transcript")
    assert transcript.data.is_final and "hello" in transcript.data.utterance.text
    assert received[-1].code == 1000  # the "ended" event: the server closed normally

    job = client.get(session.session_id)
    assert job.status == "done" and job.custom_metadata == {"job_id": "sdk-contract"}
    assert "hello world" in job.result.transcription.full_transcript
    assert job.result.metadata.audio_duration == pytest.approx(len(pcm) / 32000, abs=0.01)
    assert len(job.result.messages) >= len(received) - 1
    listed = client.list({"custom_metadata": {"job_id": "sdk-contract"}})
    assert [item.id for item in listed.items] == [session.session_id]
    assert client.get_file(session.session_id)[44:] == pcm


@functools.lru_cache(maxsize=None)
def offline_text(seconds: float) -> str:
    """The sphinx engine's own final transcript of :func:`clip_ending_in_speech` (once per length)."""
    return " ".join(sphinx_finals(clip_ending_in_speech(seconds)))


def clip_ending_in_speech(seconds: float) -> np.ndarray:
    """"can you send me the report by friday", cut at ``seconds`` (its speech runs from 0.3 s to 2.6 s)."""
    return samples("report")[:int(round(seconds * 16000))]


# 1.92 s and 2.1 s are whole numbers of the endpointer's 30 ms frames; 1.95 s and 2.1 s + 7 samples are not.
TAIL_LENGTHS = (1.92, 1.95, 2.1, 2.1 + 7 / 16000)


@pytest.mark.parametrize("chunk_ms", [20, 100, 250])
def test_the_utterance_open_when_the_audio_ends_gets_its_final_whatever_the_tail(emulator_factory, chunk_ms):
    emu = emulator_factory(engine="sphinx")

    def run(seconds: float) -> tuple[float, str, list[dict], dict]:
        pcm = clip_ending_in_speech(seconds)
        assert np.abs(pcm[-800:].astype(float)).mean() > 300  # the clip ends in speech
        sid, messages = stream(emu, {}, pcm.tobytes(), chunk=chunk_ms * 32)
        return seconds, offline_text(seconds), messages, emu.wait_session_done(sid, timeout=60)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, TAIL_LENGTHS))
    for seconds, expected, messages, job in results:
        finals = [m["data"]["utterance"] for m in messages if m["type"] == "transcript" and m["data"]["is_final"]]
        events = [(m["type"], m["data"]["time"]) for m in messages if m["type"] in ("speech_start", "speech_end")]
        assert len(finals) == 1 and [kind for kind, _ in events] == ["speech_start", "speech_end"], (seconds, events)
        assert finals[0]["text"].startswith(" can you send me"), (seconds, finals[0]["text"])
        assert finals[0]["end"] <= events[-1][1] <= seconds + 0.001  # speech_end: where the audio stopped
        assert events[-1][1] >= seconds - 0.1, (seconds, events)
        full = job["result"]["transcription"]["full_transcript"]
        assert full == finals[0]["text"].strip() == expected, (seconds, full, expected)


def test_sphinx_flushes_resampled_audio_at_the_end_of_the_stream():
    from webhook_service.emulator.engines import RecognizerParams, SphinxRecognizer

    recognizer = SphinxRecognizer(RecognizerParams(sample_rate=8000))
    pcm = samples("hello")[::2]  # crude 8 kHz: exercises the resampler and its flushed tail
    events = recognizer.feed(pcm[:-3]) + recognizer.flush()
    kinds = [e.kind for e in events]
    assert kinds[0] == "speech_start" and kinds[-1] == "speech_end" and "final" in kinds
