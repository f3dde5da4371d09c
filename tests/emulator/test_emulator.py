"""Protocol conformance of the Gladia emulator (vad engine), over real HTTP and WebSocket.

Each check names the rule of the wire-format reference it holds the emulator to.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests
from click.testing import CliRunner
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from webhook_service.emulator.audio import encode_pcm16
from webhook_service.gladia.session_schema import GLADIA_CALLBACK_DEFAULTS as CALLBACK_CONFIG_DEFAULTS
from webhook_service.gladia.session_schema import GLADIA_MESSAGES_DEFAULTS as MESSAGES_CONFIG_DEFAULTS

pytestmark = pytest.mark.dbless

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ERROR_KEYS = {"timestamp", "path", "request_id", "statusCode", "message"}


# ------------------------------------------------------------------ helpers

class Api:
    def __init__(self, emu):
        self.emu = emu
        self.headers = {"x-gladia-key": emu.api_key}

    def post(self, body=None, **kwargs) -> requests.Response:
        return requests.post(f"{self.emu.url}/v2/live", json={} if body is None else body,
                             headers=kwargs.pop("headers", self.headers), timeout=10, **kwargs)

    def start(self, body=None) -> dict:
        resp = self.post(body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def get(self, sid: str) -> requests.Response:
        return requests.get(f"{self.emu.url}/v2/live/{sid}", headers=self.headers, timeout=10)

    def result(self, sid: str) -> dict:
        self.emu.wait_session_done(sid)
        resp = self.get(sid)
        assert resp.status_code == 200
        return resp.json()


def tone(seconds: float, windows=((0.2, 0.9),), rate: int = 16000, freq: float = 440.0) -> np.ndarray:
    """A sine tone, loud inside ``windows`` (start, end) and silent elsewhere."""
    t = np.arange(int(seconds * rate)) / rate
    on = np.zeros_like(t, dtype=bool)
    for start, end in windows:
        on |= (t >= start) & (t < end)
    return (np.sin(2 * np.pi * freq * t) * 9000 * on).astype(np.int16)


def chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def drain(ws, timeout: float = 15.0) -> tuple[list[dict], int | None]:
    """Every message until the server closes; returns them and the close code."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            messages.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
        except ConnectionClosed as exc:
            return messages, exc.rcvd.code if exc.rcvd else None
        except TimeoutError:
            raise AssertionError(f"server did not close within {timeout}s; got {[m['type'] for m in messages]}")


def ws_connect(url: str):
    return connect(url, compression=None, max_size=None, open_timeout=5, close_timeout=5)


def check_envelope(message: dict, sid: str) -> None:
    assert message["session_id"] == sid
    assert ISO_MS.match(message["created_at"]), message["created_at"]


def check_utterance(u: dict) -> None:
    assert set(u) == {"start", "end", "confidence", "channel", "words", "text", "language"}
    assert u["start"] <= u["end"] and isinstance(u["channel"], int) and u["words"]
    assert u["text"] == "".join(w["word"] for w in u["words"]) and u["text"].startswith(" ")
    for w in u["words"]:
        assert set(w) == {"word", "start", "end", "confidence"} and w["start"] <= w["end"]


class Receiver:
    """A callback endpoint on a real port; ``fail`` decides a status per request (default 200)."""

    def __init__(self, fail=None):
        self.bodies: list[dict] = []
        self.requests = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests += 1
                    status = fail(outer.requests, body) if fail else 200
                    if status == 200:
                        outer.bodies.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(fail=None):
        r = Receiver(fail)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


# ------------------------------------------------------------------- POST

def test_post_returns_201_with_id_created_at_and_ws_url(emulator):
    api = Api(emulator)
    body = api.start()
    assert set(body) == {"id", "created_at", "url"}
    assert ISO_MS.match(body["created_at"])
    host = emulator.url.removeprefix("http://")
    assert re.match(rf"^ws://{re.escape(host)}/v2/live\?token=[0-9a-f-]{{36}}$", body["url"])
    assert body["url"].split("token=")[1] != body["id"]  # the token is not the id
    assert api.post(params={"region": "eu-west"}).status_code == 201


@pytest.mark.parametrize("headers, message", [({}, "no gladia key provided"),
                                              ({"x-gladia-key": "wrong"}, "gladia key not found")])
def test_post_without_valid_key_is_401_with_the_error_body(emulator, headers, message):
    resp = Api(emulator).post(headers=headers)
    assert resp.status_code == 401
    body = resp.json()
    assert ERROR_KEYS <= set(body) and body["statusCode"] == 401 and body["message"] == message
    assert body["path"] == "/v2/live" and "validation_errors" not in body


@pytest.mark.parametrize("body, field", [
    ({"region": "eu-west"}, "region"),  # must be a query parameter (field report #1)
    ({"encoding": "mp3"}, "encoding"),
    ({"bit_depth": 12}, "bit_depth"),
    ({"sample_rate": 22050}, "sample_rate"),
    ({"channels": 9}, "channels"),
    ({"channels": 1.5}, "channels"),
    ({"model": "solaria-2"}, "model"),
    ({"endpointing": 0.001}, "endpointing"),
    ({"maximum_duration_without_endpointing": 61}, "maximum_duration_without_endpointing"),
    ({"language_config": {"languages": ["xx"]}}, "language_config.languages.0"),
    ({"pre_processing": {"speech_threshold": 2}}, "pre_processing.speech_threshold"),
    ({"realtime_processing": {"translation": True}}, "realtime_processing.translation_config"),
    ({"realtime_processing": {"translation": True, "translation_config": {"target_languages": []}}},
     "realtime_processing.translation_config.target_languages"),
    ({"post_processing": {"summarization_config": {"type": "long"}}}, "post_processing.summarization_config.type"),
    ({"messages_config": {"receive_everything": True}}, "messages_config.receive_everything"),
    ({"callback": True}, "callback_config.url"),
    ({"callback_config": {"url": "ftp://x", "method": "PUT"}}, "callback_config.url"),
    ({"custom_metadata": {"x": "y" * 2100}}, "custom_metadata"),
    ({"custom_metadata": "job-1"}, "custom_metadata"),
])
def test_invalid_body_is_400_with_validation_errors_naming_the_field(emulator, body, field):
    api = Api(emulator)
    resp = api.post(body)
    assert resp.status_code == 400, resp.text
    errors = resp.json()["validation_errors"]
    assert any(f'"{field}"' in e for e in errors), errors
    assert resp.json()["statusCode"] == 400
    # nothing was created
    listing = requests.get(f"{emulator.url}/v2/live", headers=api.headers, timeout=10).json()
    assert listing["items"] == []


def test_bad_json_and_bad_region_are_400(emulator):
    api = Api(emulator)
    resp = requests.post(f"{emulator.url}/v2/live", data=b"{nope", headers=api.headers, timeout=10)
    assert resp.status_code == 400 and resp.json()["statusCode"] == 400
    assert api.post(params={"region": "mars"}).status_code == 400


def test_request_params_show_every_default_and_both_message_default_sets(emulator):
    api = Api(emulator)
    sid = api.start({"callback": True, "callback_config": {"url": "http://127.0.0.1:9/x"},
                     "custom_metadata": {"job_id": "j1"}})["id"]
    job = api.get(sid).json()
    params = job["request_params"]
    assert {k: params[k] for k in ("encoding", "bit_depth", "sample_rate", "channels", "model", "endpointing",
                                   "maximum_duration_without_endpointing")} == {
        "encoding": "wav/pcm", "bit_depth": 16, "sample_rate": 16000, "channels": 1, "model": "solaria-1",
        "endpointing": 0.05, "maximum_duration_without_endpointing": 5}
    assert params["messages_config"] == MESSAGES_CONFIG_DEFAULTS
    assert params["callback_config"] == {"url": "http://127.0.0.1:9/x", **CALLBACK_CONFIG_DEFAULTS}
    assert MESSAGES_CONFIG_DEFAULTS["receive_speech_events"] and not CALLBACK_CONFIG_DEFAULTS["receive_speech_events"]
    assert "custom_metadata" not in params and job["custom_metadata"] == {"job_id": "j1"}
    assert job["status"] == "queued" and job["result"] is None and job["file"] is None
    assert job["kind"] == "live" and job["version"] == 2 and job["request_id"].startswith("G-")


def test_custom_metadata_is_an_empty_object_when_none_was_given(emulator):
    api = Api(emulator)
    for body in ({}, {"custom_metadata": None}):
        job = api.get(api.start(body)["id"]).json()
        assert job["custom_metadata"] == {}, body


# LiveKit's plugin (1.8.9) sends the first with every session; the SDKs' types allow the second.
UNLISTED = [({"realtime_processing": {"words_accurate_timestamps": False}},
             "realtime_processing.words_accurate_timestamps", "is not allowed"),
            ({"realtime_processing": {"translation": True,
                                      "translation_config": {"target_languages": ["fr"], "model": "batch"}}},
             "realtime_processing.translation_config.model", "must be one of the following values: base, enhanced")]


@pytest.mark.parametrize("body, field, error", UNLISTED)
def test_documented_but_unlisted_fields_are_accepted_and_refused_with_strict_schema(emulator_factory, body, field,
                                                                                    error):
    api = Api(emulator_factory())
    params = api.get(api.start(body)["id"]).json()["request_params"]
    section = body["realtime_processing"]
    assert {k: params["realtime_processing"][k] for k in section if k != "translation_config"} == {
        k: v for k, v in section.items() if k != "translation_config"}
    if "translation_config" in section:
        assert params["realtime_processing"]["translation_config"]["model"] == "batch"

    strict = Api(emulator_factory(strict_schema=True))
    resp = strict.post(body)
    assert resp.status_code == 400 and resp.json()["validation_errors"] == [f'Field "{field}" {error}']


def test_concurrency_limit_per_key_is_429_and_frees_when_a_session_ends(emulator_factory):
    emu = emulator_factory(max_sessions_per_key=2)
    api = Api(emu)
    first = api.start()
    api.start()
    resp = api.post()
    assert resp.status_code == 429 and resp.json()["statusCode"] == 429
    with ws_connect(first["url"]) as ws:
        ws.send(json.dumps({"type": "stop_recording"}))
        drain(ws)
    emu.wait_session_done(first["id"])
    assert api.post().status_code == 201


# -------------------------------------------------------------- WebSocket

def test_full_session_message_sequence_and_shapes(emulator):
    api = Api(emulator)
    session = api.start({"messages_config": {"receive_partial_transcripts": True, "receive_lifecycle_events": True}})
    sid = session["id"]
    audio = tone(3.0, windows=((0.3, 1.4), (1.9, 2.6))).tobytes()
    with ws_connect(session["url"]) as ws:
        pieces = list(chunks(audio, 3200))
        for i, piece in enumerate(pieces):
            if i % 2:
                ws.send(piece)
            else:
                ws.send(json.dumps({"type": "audio_chunk", "data": {"chunk": base64.b64encode(piece).decode()}}))
        ws.send(json.dumps({"type": "stop_recording"}))
        messages, code = drain(ws)
    assert code == 1000
    for m in messages:
        check_envelope(m, sid)
    types = [m["type"] for m in messages]
    assert "start_session" not in types  # sent at POST time, before any socket (callback/result only)
    assert types[0] == "start_recording"
    assert types[-5:] == ["end_recording", "post_transcript", "post_final_transcript", "end_session"][-5:] or True
    tail = [t for t in types if t in ("stop_recording", "end_recording", "post_transcript",
                                      "post_final_transcript", "end_session")]
    assert tail == ["stop_recording", "end_recording", "post_transcript", "post_final_transcript", "end_session"]
    assert types[-1] == "end_session"

    acks = [m for m in messages if m["type"] == "audio_chunk"]
    assert len(acks) == len(pieces)
    offset = 0
    for ack, piece in zip(acks, pieces):
        assert set(ack) == {"session_id", "created_at", "type", "acknowledged", "error", "data"}
        assert ack["acknowledged"] is True and ack["error"] is None
        assert ack["data"]["byte_range"] == [offset, offset + len(piece)]
        assert ack["data"]["time_range"] == [round(offset / 32000, 3), round((offset + len(piece)) / 32000, 3)]
        offset += len(piece)

    stop = next(m for m in messages if m["type"] == "stop_recording")
    assert stop["acknowledged"] is True and stop["error"] is None
    assert stop["data"]["recording_duration"] == 3.0 and stop["data"]["recording_left_to_process"] >= 0
    end_rec = next(m for m in messages if m["type"] == "end_recording")
    assert end_rec["data"] == {"recording_duration": 3.0}
    assert set(next(m for m in messages if m["type"] == "end_session")) == {"session_id", "created_at", "type"}

    speech = [m for m in messages if m["type"] in ("speech_start", "speech_end")]
    assert [m["type"] for m in speech] == ["speech_start", "speech_end"] * 2
    assert all(set(m["data"]) == {"time", "channel"} for m in speech)
    assert abs(speech[0]["data"]["time"] - 0.3) < 0.05 and abs(speech[1]["data"]["time"] - 1.4) < 0.05

    transcripts = [m for m in messages if m["type"] == "transcript"]
    finals = [m for m in transcripts if m["data"]["is_final"]]
    partials = [m for m in transcripts if not m["data"]["is_final"]]
    assert [f["data"]["id"] for f in finals] == ["00_00000000", "00_00000001"]
    assert partials and {p["data"]["id"] for p in partials} <= {f["data"]["id"] for f in finals}
    for t in transcripts:
        assert set(t["data"]) == {"id", "is_final", "utterance"}
        check_utterance(t["data"]["utterance"])

    post = next(m for m in messages if m["type"] == "post_final_transcript")["data"]
    assert post["metadata"]["audio_duration"] == 3.0 and post["metadata"]["billing_time"] == 3.0
    assert post["metadata"]["number_of_distinct_channels"] == 1
    assert [u["text"] for u in post["transcription"]["utterances"]] == [f["data"]["utterance"]["text"]
                                                                       for f in finals]
    post_transcript = next(m for m in messages if m["type"] == "post_transcript")["data"]
    assert post_transcript == post["transcription"]
    assert set(post_transcript) == {"full_transcript", "languages", "utterances"}

    job = api.get(sid).json()
    assert job["status"] == "done" and ISO_MS.match(job["completed_at"])
    assert job["file"]["audio_duration"] == 3.0 and job["file"]["number_of_channels"] == 1
    result = job["result"]
    assert result["transcription"] == post["transcription"] and result["metadata"] == post["metadata"]
    # result.messages: every message of the session, each exactly the JSON that was sent.
    sent = [json.dumps(m, sort_keys=True) for m in messages]
    stored = [json.dumps(json.loads(s), sort_keys=True) for s in result["messages"]]
    assert json.loads(result["messages"][0])["type"] == "start_session"
    assert [s for s in stored if s in set(sent)] == sent


def test_messages_config_filters_the_socket(emulator):
    api = Api(emulator)
    session = api.start({"messages_config": {"receive_acknowledgments": False, "receive_speech_events": False,
                                             "receive_final_transcripts": False,
                                             "receive_post_processing_events": False,
                                             "receive_lifecycle_events": True}})
    with ws_connect(session["url"]) as ws:
        for piece in chunks(tone(1.5).tobytes(), 3200):
            ws.send(piece)
        ws.send(json.dumps({"type": "stop_recording"}))
        messages, code = drain(ws)
    assert code == 1000
    assert [m["type"] for m in messages] == ["start_recording", "end_recording", "end_session"]
    # the result still holds every message
    types = {json.loads(m)["type"] for m in api.result(session["id"])["result"]["messages"]}
    assert {"audio_chunk", "transcript", "speech_start", "post_final_transcript", "stop_recording"} <= types


def test_default_messages_config_on_the_socket(emulator):
    api = Api(emulator)
    session = api.start()
    with ws_connect(session["url"]) as ws:
        for piece in chunks(tone(1.5).tobytes(), 3200):
            ws.send(piece)
        ws.send(json.dumps({"type": "stop_recording"}))
        messages, _ = drain(ws)
    types = {m["type"] for m in messages}
    assert {"audio_chunk", "stop_recording", "speech_start", "speech_end", "transcript", "post_transcript",
            "post_final_transcript"} <= types
    assert not types & {"start_session", "start_recording", "end_recording", "end_session"}
    assert all(m["data"]["is_final"] for m in messages if m["type"] == "transcript")


def test_client_close_1000_post_processes_in_background(emulator):
    api = Api(emulator)
    session = api.start()
    with ws_connect(session["url"]) as ws:
        for piece in chunks(tone(1.2).tobytes(), 3200):
            ws.send(piece)
        for _ in range(12):  # wait for every ack so the server has the audio
            ws.recv(timeout=5)
    job = api.result(session["id"])
    assert job["status"] == "done" and job["result"]["metadata"]["audio_duration"] == 1.2
    assert job["result"]["transcription"]["utterances"]


def test_reconnect_resumes_with_exact_byte_offsets(emulator_factory):
    emu = emulator_factory(faults={"ws_cut_after_chunks": 4, "ws_cut_code": 1011})
    api = Api(emu)
    session = api.start({"messages_config": {"receive_speech_events": False, "receive_final_transcripts": False}})
    audio = tone(2.0).tobytes()
    pieces = list(chunks(audio, 3000))  # not a multiple of the frame rate on purpose
    acked, ranges, cuts, code = 0, [], 0, None
    while code is None:
        with ws_connect(session["url"]) as ws:
            try:
                for piece in chunks(audio[acked:], 3000):
                    ws.send(piece)
                    msg = json.loads(ws.recv(timeout=5))
                    assert msg["type"] == "audio_chunk" and msg["data"]["byte_range"][0] == acked
                    acked = msg["data"]["byte_range"][1]
                    ranges.append(msg["data"]["byte_range"])
                ws.send(json.dumps({"type": "stop_recording"}))
                _, code = drain(ws)
            except ConnectionClosed as exc:
                assert exc.rcvd.code == 1011
                cuts += 1
    assert code == 1000 and acked == len(audio)
    assert cuts == len(pieces) // 4  # each connection took exactly 4 chunks
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert emu.received_audio(session["id"]) == audio  # nothing lost, nothing twice
    wav = requests.get(f"{emu.url}/v2/live/{session['id']}/file", headers=api.headers, timeout=10)
    with wave.open(io.BytesIO(wav.content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.readframes(w.getnframes()) == audio


def test_oversized_frame_is_closed_with_1009_and_session_stays_resumable(emulator):
    api = Api(emulator)
    session = api.start()
    with ws_connect(session["url"]) as ws:
        # Only the frame's header goes out: a binary frame of 1 MiB + 2 bytes, masked as a client's must be.
        # The server refuses it on the declared length. Writing the payload too would race the server's
        # close: the client's write fails on the closed socket, sometimes before its reader has seen the 1009.
        ws.socket.sendall(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1024 * 1024 + 2) + b"\0" * 4)
        messages, code = drain(ws)
    assert code == 1009 and messages == []
    with ws_connect(session["url"]) as ws:
        ws.send(b"\0\0" * 100)
        ack = json.loads(ws.recv(timeout=5))
        assert ack["data"]["byte_range"] == [0, 200]


def test_unknown_and_ended_tokens_are_refused_with_44xx(emulator):
    api = Api(emulator)
    base = emulator.url.replace("http://", "ws://")
    with ws_connect(f"{base}/v2/live?token=00000000-0000-0000-0000-000000000000") as ws:
        _, code = drain(ws)
    assert code == 4404
    session = api.start()
    with ws_connect(session["url"]) as ws:
        ws.send(json.dumps({"type": "stop_recording"}))
        drain(ws)
    with ws_connect(session["url"]) as ws:
        _, code = drain(ws)
    assert code == 4410


def test_invalid_messages(emulator):
    api = Api(emulator)
    session = api.start()
    with ws_connect(session["url"]) as ws:
        ws.send(json.dumps({"type": "audio_chunk", "data": {"chunk": "%%%"}}))
        nack = json.loads(ws.recv(timeout=5))
        assert nack["type"] == "audio_chunk" and nack["acknowledged"] is False and nack["data"] is None
        assert isinstance(nack["error"]["message"], str)
        ws.send(json.dumps({"type": "dance"}))
        _, code = drain(ws)
    assert code == 4400


def test_idle_timeout_ends_the_session_with_1000(emulator_factory):
    emu = emulator_factory(idle_timeout_s=0.5)
    api = Api(emu)
    session = api.start({"messages_config": {"receive_lifecycle_events": True}})
    with ws_connect(session["url"]) as ws:
        ws.send(tone(0.5).tobytes())
        messages, code = drain(ws)
    assert code == 1000 and messages[-1]["type"] == "end_session"


def test_never_connected_session_ends_after_the_resume_grace(emulator_factory):
    emu = emulator_factory(resume_grace_s=0.3)
    api = Api(emu)
    sid = api.start()["id"]
    job = emu.wait_session_done(sid, timeout=10)
    assert job["status"] == "done" and job["result"]["metadata"]["audio_duration"] == 0
    assert job["file"] is None


def test_max_session_duration_ends_the_recording(emulator_factory):
    emu = emulator_factory(max_session_s=1.0)
    api = Api(emu)
    session = api.start()
    with ws_connect(session["url"]) as ws:
        # As a streaming client does: each chunk waits for its acknowledgement, so the client is not
        # still writing when the server closes (a TCP reset could then drop the close frame in flight).
        for piece in chunks(tone(3.0).tobytes(), 6400):
            try:
                ws.send(piece)
                while json.loads(ws.recv(timeout=5))["type"] != "audio_chunk":
                    pass
            except ConnectionClosed:
                break
        messages, code = drain(ws)
    assert code == 1000
    assert api.result(session["id"])["result"]["metadata"]["audio_duration"] <= 1.2


@pytest.mark.parametrize("encoding, bit_depth, rate", [
    ("wav/pcm", 8, 8000), ("wav/pcm", 16, 44100), ("wav/pcm", 24, 32000), ("wav/pcm", 32, 48000),
    ("wav/alaw", 8, 8000), ("wav/ulaw", 8, 16000),
])
def test_encodings_and_rates_are_decoded(emulator, encoding, bit_depth, rate):
    api = Api(emulator)
    session = api.start({"encoding": encoding, "bit_depth": bit_depth, "sample_rate": rate})
    data = encode_pcm16(tone(1.5, windows=((0.4, 1.0),), rate=rate), encoding, bit_depth)
    with ws_connect(session["url"]) as ws:
        for piece in chunks(data, 4096 - 4096 % (bit_depth // 8 if encoding == "wav/pcm" else 1)):
            ws.send(piece)
        ws.send(json.dumps({"type": "stop_recording"}))
        messages, _ = drain(ws)
    acks = [m for m in messages if m["type"] == "audio_chunk"]
    assert acks[-1]["data"]["byte_range"][1] == len(data) and acks[-1]["data"]["time_range"][1] == 1.5
    starts = [m["data"]["time"] for m in messages if m["type"] == "speech_start"]
    assert len(starts) == 1 and abs(starts[0] - 0.4) < 0.05
    assert api.result(session["id"])["file"]["audio_duration"] == 1.5


def test_channels_are_transcribed_separately(emulator):
    api = Api(emulator)
    session = api.start({"channels": 3, "sample_rate": 8000})
    left = tone(2.0, windows=((0.2, 0.7),), rate=8000)
    middle = np.zeros_like(left)
    right = tone(2.0, windows=((1.2, 1.8),), rate=8000)
    data = np.stack([left, middle, right], axis=1).reshape(-1).astype("<i2").tobytes()
    with ws_connect(session["url"]) as ws:
        for piece in chunks(data, 4800):
            ws.send(piece)
        ws.send(json.dumps({"type": "stop_recording"}))
        messages, _ = drain(ws)
    finals = [m["data"] for m in messages if m["type"] == "transcript" and m["data"]["is_final"]]
    assert [(f["id"], f["utterance"]["channel"]) for f in finals] == [("00_00000000", 0), ("02_00000000", 2)]
    job = api.result(session["id"])
    assert job["result"]["metadata"]["billing_time"] == 6.0
    wav = requests.get(f"{emulator.url}/v2/live/{session['id']}/file", headers=api.headers, timeout=10)
    with wave.open(io.BytesIO(wav.content)) as w:
        assert w.getnchannels() == 3 and w.getframerate() == 8000 and w.getnframes() == 16000


def test_wav_header_in_the_stream_is_stripped_but_counted_in_byte_range(emulator):
    api = Api(emulator)
    session = api.start()
    samples = tone(1.0).tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples)
    data = buf.getvalue()
    with ws_connect(session["url"]) as ws:
        ws.send(data[:20])  # header split across frames
        for piece in chunks(data[20:], 3200):
            ws.send(piece)
        ws.send(json.dumps({"type": "stop_recording"}))
        messages, _ = drain(ws)
    acks = [m["data"] for m in messages if m["type"] == "audio_chunk"]
    assert acks[0]["byte_range"] == [0, 20] and acks[0]["time_range"] == [0, 0]
    assert acks[-1]["byte_range"][1] == len(data) and acks[-1]["time_range"][1] == 1.0
    assert emulator.received_audio(session["id"]) == samples


# ---------------------------------------------------------------- add-ons

def test_addon_messages_and_result_blocks(emulator):
    api = Api(emulator)
    session = api.start({
        "realtime_processing": {"translation": True, "translation_config": {"target_languages": ["fr", "en"]},
                                "named_entity_recognition": True, "sentiment_analysis": True,
                                "custom_spelling": True,
                                "custom_spelling_config": {"spelling_dictionary": {"ALFA": ["alpha"]}}},
        "post_processing": {"summarization": True, "summarization_config": {"type": "bullet_points"},
                            "chapterization": True}})
    with ws_connect(session["url"]) as ws:
        for piece in chunks(tone(2.5, windows=((0.2, 1.0), (1.5, 2.2))).tobytes(), 3200):
            ws.send(piece)
        ws.send(json.dumps({"type": "stop_recording"}))
        messages, _ = drain(ws)
    by_type: dict[str, list] = {}
    for m in messages:
        by_type.setdefault(m["type"], []).append(m)
    finals = [m["data"] for m in by_type["transcript"] if m["data"]["is_final"]]
    assert finals[0]["utterance"]["words"][0]["word"] == " ALFA"  # custom spelling applied
    translations = by_type["translation"]
    assert len(translations) == len(finals)  # "en" is the source language: only fr
    for t in translations:
        assert set(t) == {"session_id", "created_at", "type", "error", "data"} and t["error"] is None
        assert set(t["data"]) == {"utterance_id", "utterance", "original_language", "target_language",
                                  "translated_utterance"}
        assert t["data"]["target_language"] == "fr" and t["data"]["translated_utterance"]["language"] == "fr"
        check_utterance(t["data"]["translated_utterance"])
    assert [t["data"]["utterance_id"] for t in translations] == [f["id"] for f in finals]
    for kind in ("named_entity_recognition", "sentiment_analysis"):
        assert len(by_type[kind]) == len(finals)
        for m in by_type[kind]:
            assert set(m["data"]) == {"utterance_id", "utterance", "results"} and m["error"] is None
    sentiment = by_type["sentiment_analysis"][0]["data"]["results"][0]
    assert set(sentiment) == {"sentiment", "emotion", "text", "start", "end", "channel"}
    assert sentiment["sentiment"] in {"positive", "negative", "neutral", "mixed", "unknown"}
    summary = by_type["post_summarization"][0]
    assert summary["error"] is None and summary["data"]["results"].startswith("- ")
    chapter = by_type["post_chapterization"][0]["data"]["results"][0]
    assert {"headline", "gist", "keywords", "start", "end", "sentences", "text"} <= set(chapter)

    result = api.result(session["id"])["result"]
    for block in ("translation", "summarization", "named_entity_recognition", "sentiment_analysis",
                  "chapterization"):
        assert {"success", "is_empty", "exec_time", "error", "results"} <= set(result[block])
        assert result[block]["success"] is True
    assert result["translation"]["results"][0]["languages"] == ["fr"]
    assert isinstance(result["sentiment_analysis"]["results"], str)
    post_final = by_type["post_final_transcript"][0]["data"]
    assert post_final["summarization"] == result["summarization"]


def test_chapterization_only_when_asked_for(emulator):
    api = Api(emulator)
    sid = run_session(api, {"post_processing": {"summarization": True}})
    job = api.result(sid)
    types = [json.loads(m)["type"] for m in job["result"]["messages"]]
    assert "post_summarization" in types and "post_chapterization" not in types
    assert "summarization" in job["result"] and "chapterization" not in job["result"]
    assert job["request_params"]["post_processing"]["chapterization"] is False


# -------------------------------------------------------------- callbacks

def run_session(api: Api, body: dict, seconds: float = 1.5) -> str:
    session = api.start(body)
    with ws_connect(session["url"]) as ws:
        for piece in chunks(tone(seconds).tobytes(), 3200):
            ws.send(piece)
        ws.send(json.dumps({"type": "stop_recording"}))
        drain(ws)
    return session["id"]


def test_callbacks_follow_callback_config_defaults_in_order(emulator, receiver):
    api = Api(emulator)
    hook = receiver()
    sid = run_session(api, {"callback": True, "callback_config": {"url": hook.url}})
    assert emulator.wait_callbacks(15)
    events = [b["event"] for b in hook.bodies]
    assert events == ["live.start_session", "live.start_recording", "live.transcript", "live.end_recording",
                      "live.post_transcript", "live.post_final_transcript", "live.end_session"]
    messages = [json.loads(m) for m in api.result(sid)["result"]["messages"]]
    for body in hook.bodies:
        assert set(body) == {"id", "event", "payload"} and body["id"] == sid
        assert body["event"] == "live." + body["payload"]["type"]
        assert body["payload"] in messages  # exactly a message of the session
    ledger = emulator.ledger(sid)["totals"]
    assert ledger["messages"] == ledger["delivered"] == len(hook.bodies) == 7


def test_callback_config_flags_select_messages(emulator, receiver):
    api = Api(emulator)
    hook = receiver()
    run_session(api, {"callback": True, "callback_config": {
        "url": hook.url, "receive_lifecycle_events": False, "receive_final_transcripts": False,
        "receive_post_processing_events": False, "receive_acknowledgments": True, "receive_speech_events": True}})
    assert emulator.wait_callbacks(15)
    assert {b["event"] for b in hook.bodies} == {"live.audio_chunk", "live.stop_recording", "live.speech_start",
                                                 "live.speech_end"}


def test_callback_retries_until_2xx(emulator_factory, receiver):
    emu = emulator_factory(callback_backoff_s=0.01)
    hook = receiver(fail=lambda n, body: 500 if n % 2 else 200)  # every first attempt fails
    sid = run_session(Api(emu), {"callback": True, "callback_config": {"url": hook.url}})
    assert emu.wait_callbacks(15)
    ledger = emu.ledger(sid)
    assert ledger["totals"]["delivered"] == ledger["totals"]["messages"] == len(hook.bodies)
    assert all(e["attempts"] == 2 and e["statuses"] == [500, 200] for e in ledger["entries"])
    assert [b["event"] for b in hook.bodies][0] == "live.start_session"  # still in order


def test_a_callback_refused_as_gone_is_not_retried(emulator_factory, receiver):
    emu = emulator_factory(callback_backoff_s=0.01)
    hook = receiver(fail=lambda n, body: 410)  # the receiver's answer for a job that settled
    sid = run_session(Api(emu), {"callback": True, "callback_config": {"url": hook.url}})
    assert emu.wait_callbacks(15)
    ledger = emu.ledger(sid)
    assert ledger["totals"]["gone"] == ledger["totals"]["messages"] > 0
    assert all(e["attempts"] == 1 and e["statuses"] == [410] for e in ledger["entries"])


def test_callback_faults_are_in_the_ledger_and_reproducible(emulator_factory, receiver):
    faults = {"seed": 7, "callback_drop_rate": 0.3, "callback_duplicate_rate": 0.3, "callback_reorder_rate": 0.2}
    outcomes = []
    for _ in range(2):
        emu = emulator_factory(faults=faults)
        hook = receiver()
        sid = run_session(Api(emu), {"callback": True, "callback_config": {
            "url": hook.url, "receive_acknowledgments": True}})
        assert emu.wait_callbacks(20)
        ledger = emu.ledger(sid)
        t = ledger["totals"]
        assert t["dropped"] > 0 and t["duplicated"] > 0 and t["failed"] == 0 and t["pending"] == 0
        assert t["messages"] == t["delivered"] + t["dropped"]  # sent = stored + dropped on purpose
        assert len(hook.bodies) == t["delivered"] + t["duplicated"]
        delivered = {e["message_key"] for e in ledger["entries"] if e["outcome"] == "delivered"}
        from webhook_service.emulator.callbacks import message_key
        assert {message_key(b["payload"]) for b in hook.bodies} == delivered
        outcomes.append(sorted((e["event"], e["outcome"], e["duplicated"], e["reorder"], e["data_id"] or "")
                               for e in ledger["entries"]))
    assert outcomes[0] == outcomes[1]


def test_callback_timeout_is_retried_and_counted(emulator_factory, receiver):
    emu = emulator_factory(callback_timeout_s=0.3, callback_backoff_s=0.01)
    hook = receiver(fail=lambda n, body: (time.sleep(0.6), 200)[1] if n == 1 else 200)
    Api(emu).start({"callback": True, "callback_config": {"url": hook.url}})
    assert emu.wait_callbacks(10)
    entry = emu.ledger()["entries"][0]
    assert entry["event"] == "live.start_session" and entry["outcome"] == "delivered"
    assert entry["attempts"] == 2 and entry["timeouts"] == 1 and entry["duplicated"] is False
    deadline = time.monotonic() + 10  # the slow first request completes on the receiver's side too
    while len(hook.bodies) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(hook.bodies) == 2  # what `timeouts` warns about: stored twice without a duplicate fault


def test_callback_to_a_dead_url_gives_up_as_failed(emulator_factory):
    emu = emulator_factory(callback_retries=1, callback_backoff_s=0.01, callback_timeout_s=1)
    api = Api(emu)
    api.start({"callback": True, "callback_config": {"url": "http://127.0.0.1:9/nothing"}})
    assert emu.wait_callbacks(10)
    entry = emu.ledger()["entries"][0]
    assert entry["outcome"] == "failed" and entry["attempts"] == 2


# -------------------------------------------------------- REST and admin

def test_list_filters_pagination_delete_and_patch(emulator):
    api = Api(emulator)
    url = f"{emulator.url}/v2/live"
    ids = [api.start({"custom_metadata": {"job_id": f"j{i}", "batch": "b"}})["id"] for i in range(3)]
    done = run_session(api, {"custom_metadata": {"job_id": "j9"}})
    listing = requests.get(url, headers=api.headers, params={"custom_metadata": json.dumps({"job_id": "j1"})},
                           timeout=10).json()
    assert [i["id"] for i in listing["items"]] == [ids[1]]
    page = requests.get(url, headers=api.headers, params={"limit": 2}, timeout=10).json()
    assert len(page["items"]) == 2 and page["next"] and "offset=2" in page["next"]
    assert [i["id"] for i in page["items"]] == [done, ids[2]]  # newest first
    last = requests.get(page["next"], headers=api.headers, timeout=10).json()
    assert last["next"] is None and len(last["items"]) == 2
    by_status = requests.get(url, headers=api.headers, params={"status": "done"}, timeout=10).json()
    assert [i["id"] for i in by_status["items"]] == [done]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(requests.get(url, headers=api.headers, params={"date": today}, timeout=10).json()["items"]) == 4
    bad = requests.get(url, headers=api.headers, params={"status": "finished", "limit": 0}, timeout=10)
    assert bad.status_code == 400 and len(bad.json()["validation_errors"]) == 2
    other = requests.get(url, headers={"x-gladia-key": "nope"}, timeout=10)
    assert other.status_code == 401

    patch = requests.patch(f"{url}/{done}", json={"post_session_metadata": {"a": 1}}, headers=api.headers,
                           timeout=10)
    assert patch.status_code == 204 and api.get(done).json()["post_session_metadata"] == {"a": 1}
    assert requests.delete(f"{url}/{ids[0]}", headers=api.headers, timeout=10).status_code == 403
    assert requests.delete(f"{url}/{done}", headers=api.headers, timeout=10).status_code == 202
    missing = api.get(done)
    assert missing.status_code == 404 and missing.json()["statusCode"] == 404
    assert requests.delete(f"{url}/{done}", headers=api.headers, timeout=10).status_code == 404


def test_rest_faults_by_route_and_admin_api(emulator):
    api = Api(emulator)
    admin = f"{emulator.url}/_emulator/faults"
    sid = api.start()["id"]
    resp = requests.post(admin, json={"rest_error_rate": 1.0, "rest_fault_routes": ["GET /v2/live/{id}"]},
                         timeout=10)
    assert resp.status_code == 200 and resp.json()["rest_error_rate"] == 1.0
    failed = api.get(sid)
    assert failed.status_code == 503 and failed.json()["statusCode"] == 503
    assert api.post().status_code == 201  # other routes unaffected
    emulator.set_faults(rest_error_rate=0.0, rest_429_rate=1.0, rest_fault_routes=["POST"])
    assert api.post().status_code == 429 and api.get(sid).status_code == 200
    assert requests.put(admin, json={"nonsense": 1}, timeout=10).status_code == 400
    assert requests.put(admin, json={"callback_drop_rate": 2}, timeout=10).status_code == 400
    assert requests.delete(admin, timeout=10).json()["rest_429_rate"] == 0.0
    assert api.post().status_code == 201
    health = requests.get(f"{emulator.url}/_emulator/health", timeout=10).json()
    assert health["engine"] == "vad" and health["started_sessions"] == 3


def test_slow_acks_keep_their_order(emulator_factory):
    emu = emulator_factory(faults={"ack_delay_s": 0.05})
    api = Api(emu)
    session = api.start()
    with ws_connect(session["url"]) as ws:
        for piece in chunks(tone(0.5).tobytes(), 1600):
            ws.send(piece)
        ws.send(json.dumps({"type": "stop_recording"}))
        messages, _ = drain(ws)
    ends = [m["data"]["byte_range"][1] for m in messages if m["type"] == "audio_chunk"]
    assert ends == sorted(ends) and ends[-1] == 16000


def test_random_cuts_use_a_non_1000_code(emulator_factory):
    emu = emulator_factory(faults={"ws_cut_rate": 1.0, "ws_cut_code": 1006})
    session = Api(emu).start()
    with ws_connect(session["url"]) as ws:
        ws.send(b"\0\0" * 160)
        messages, code = drain(ws)
    assert messages == [] and code is None  # TCP dropped without a close frame


def test_cli_refuses_bad_fault_options():
    from webhook_service.cli import cli

    result = CliRunner().invoke(cli, ["emulator", "--cut-code", "1000"])
    assert result.exit_code == 2 and "ws_cut_code" in result.output
    result = CliRunner().invoke(cli, ["emulator", "--drop-callbacks", "1.5"])
    assert result.exit_code == 2


# ------------------------------------------------------------ audio units

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_g711_tables_match_the_standard_decoder():
    audioop = pytest.importorskip("audioop")  # the stdlib reference while it exists (Python < 3.13)
    from webhook_service.emulator.audio import ALAW_TO_LINEAR, ULAW_TO_LINEAR

    codes = bytes(range(256))
    assert np.array_equal(np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2"), ULAW_TO_LINEAR)
    assert np.array_equal(np.frombuffer(audioop.alaw2lin(codes, 2), "<i2"), ALAW_TO_LINEAR)


@pytest.mark.parametrize("bit_depth", [8, 16, 24, 32])
def test_pcm_decoding_round_trips_and_keeps_partial_frames(bit_depth):
    from webhook_service.emulator.audio import SampleDecoder

    rng = np.random.default_rng(1)
    samples = (rng.integers(-32768, 32767, size=(500, 2)) & (~0xFF if bit_depth == 8 else ~0)).astype(np.int16)
    data = encode_pcm16(samples.reshape(-1), "wav/pcm", bit_depth)
    decoder = SampleDecoder("wav/pcm", bit_depth, 2)
    cut = len(data) // 2 + 1  # not on a frame boundary
    out = np.concatenate([decoder.decode(data[:cut]), decoder.decode(data[cut:])], axis=1)
    assert np.array_equal(out.T, samples)


def test_file_is_404_before_any_audio(emulator):
    api = Api(emulator)
    sid = api.start()["id"]
    resp = requests.get(f"{emulator.url}/v2/live/{sid}/file", headers=api.headers, timeout=10)
    assert resp.status_code == 404 and resp.json()["statusCode"] == 404
