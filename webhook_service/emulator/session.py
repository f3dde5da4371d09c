"""One live session: audio in, messages out, result at the end.

Audio handling (spool + acknowledgement) happens on the event loop as each
frame arrives and never waits for recognition: recognition runs in a separate
per-session task (in a thread pool for the sphinx engine), and callbacks go
through the background sender. Every message produced is serialized once; that
exact string is what the socket sends, what ``result.messages`` lists, and
what the callback carries as ``payload``.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
import uuid
from concurrent.futures import Executor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from ..gladia.messages import flag_for
from . import addons
from .audio import SampleDecoder, Spool, WavHeaderStripper, sample_width
from .engines import Event, RecognizerParams, create_recognizer, utterance_confidence
from .ports import SessionHost

log = logging.getLogger(__name__)

# Audio waiting for recognition is handed to the engine in batches of at most this size.
MAX_ENGINE_BATCH = 512 * 1024


def iso_now() -> str:
    """ISO-8601 UTC with milliseconds and a Z, as Gladia writes ``created_at``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def wanted(config: dict, message: dict) -> bool:
    """Whether a ``messages_config`` / ``callback_config`` lets ``message`` through.

    A message that carries an ``error`` also passes when ``receive_errors`` is
    on (there is no separate error message type).
    """
    flag = flag_for(message) or "receive_errors"
    if config.get(flag, False):
        return True
    return message.get("error") is not None and config.get("receive_errors", False)


class Connection:
    """One WebSocket attached to a session; a single writer task keeps outgoing order."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self.chunks = 0
        self._queue: asyncio.Queue = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write())
        self.closing = False
        self.close_started = False
        self.closed = asyncio.Event()  # set when a close this side started is complete

    def send(self, text: str, delay: float = 0.0) -> None:
        if not self.closing:
            self._queue.put_nowait((time.monotonic() + delay, text))

    async def _write(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            not_before, text = item
            wait = not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.ws.closed:
                continue
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                pass  # the peer went away; the session notices through the reader

    def stop(self) -> None:
        """The socket is gone: let the writer task end (nothing more can be sent)."""
        self.closing = True
        self._queue.put_nowait(None)

    async def close(self, code: int, reason: str, flush: bool = True) -> None:
        """Close after sending what is queued (``flush``) or at once."""
        if self.closing:
            return
        self.closing = True
        self.close_started = True
        try:
            await self._close(code, reason, flush)
        finally:
            self.closed.set()

    async def _close(self, code: int, reason: str, flush: bool) -> None:
        if flush:
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(self._writer, 10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._writer.cancel()
        else:
            self._writer.cancel()
        if code == 1006:  # simulate a dropped connection: no close frame at all
            transport = self.ws._req.transport if self.ws._req is not None else None  # noqa: SLF001
            if transport is not None:
                transport.abort()
            return
        await self.ws.close(code=code, message=reason.encode())


class LiveSession:
    """State of one session, from POST to end_session (and after, for GET)."""

    def __init__(self, host: SessionHost, api_key: str, params: dict, custom_metadata: dict):
        self.host = host
        self.id = str(uuid.uuid4())
        self.token = str(uuid.uuid4())
        self.file_id = str(uuid.uuid4())
        self.api_key = api_key
        self.params = params
        self.custom_metadata = custom_metadata
        self.created_at = iso_now()
        self.created_dt = datetime.now(timezone.utc)
        self.completed_at: str | None = None
        self.status = "queued"
        self.error_code: int | None = None
        self.post_session_metadata: dict = {}
        self.messages: list[str] = []
        self.utterances: list[dict] = []
        self.addon_results: dict[str, list] = {"translation": [], "named_entity_recognition": [],
                                               "sentiment_analysis": []}
        self.post_results: dict[str, Any] = {}

        enc, depth = params["encoding"], params["bit_depth"]
        self.channels = params["channels"]
        self.sample_rate = params["sample_rate"]
        self.bytes_per_second = self.sample_rate * self.channels * sample_width(enc, depth)
        self.bytes_received = 0  # every byte acknowledged, WAV header included (byte_range)
        self.audio_bytes = 0  # samples only (time_range, durations)
        self._stripper = WavHeaderStripper()
        self._decoder = SampleDecoder(enc, depth, self.channels)
        self.spool = Spool(Path(host.spool_dir) / f"{self.id}.raw")
        self._recognizers: list | None = None
        self._counters = [0] * self.channels
        self._processed = 0  # spool bytes already handed to the engine
        self._input_closed = False
        self._wake = asyncio.Event()
        self._processor = asyncio.get_running_loop().create_task(self._process())

        self.conn: Connection | None = None
        self.recording_started = False
        self.finishing = False
        self.done = asyncio.Event()
        self.last_activity = time.monotonic()
        self.disconnected_at: float | None = time.monotonic()  # never connected yet
        languages = params.get("language_config", {}).get("languages", [])
        self.language = languages[0] if len(languages) == 1 or (languages and "en" not in languages) else "en"
        self.emit("start_session")

    # ------------------------------------------------------------------ output

    @property
    def active(self) -> bool:
        return self.status in ("queued", "processing")

    def emit(self, kind: str, **fields: Any) -> dict:
        message = {"session_id": self.id, "created_at": iso_now(), "type": kind, **fields}
        text = json.dumps(message, ensure_ascii=False)
        self.messages.append(text)
        if self.conn is not None and wanted(self.params["messages_config"], message):
            delay = self.host.ack_delay_s() if kind == "audio_chunk" else 0.0
            self.conn.send(text, delay)
        callback = self.params["callback_config"]
        if self.params["callback"] and "url" in callback and wanted(callback, message):
            self.host.send_callback(self.id, callback["url"],
                                    {"id": self.id, "event": f"live.{kind}", "payload": message})
        return message

    # ------------------------------------------------------------ connections

    async def attach(self, conn: Connection) -> None:
        old, self.conn = self.conn, conn
        self.disconnected_at = None
        self.last_activity = time.monotonic()
        if self.status == "queued":
            self.status = "processing"
        if old is not None:
            await old.close(4409, "replaced by a new connection", flush=False)

    def detach(self, conn: Connection, code: int | None) -> None:
        """The socket closed; a client close with 1000 ends the recording, anything else may resume."""
        if self.conn is not conn:
            return
        self.conn = None
        conn.stop()
        self.disconnected_at = time.monotonic()
        if code == 1000 and not self.finishing:
            self.end_recording("client closed with 1000")

    # ------------------------------------------------------------------- input

    def audio_seconds(self, nbytes: int | None = None) -> float:
        return (self.audio_bytes if nbytes is None else nbytes) / self.bytes_per_second

    def receive_audio(self, data: bytes) -> None:
        """Spool, acknowledge and queue one chunk (the chunk was already accepted by the caller)."""
        self.last_activity = time.monotonic()
        if self.finishing:
            self.emit("audio_chunk", acknowledged=False, error={"message": "recording has already ended"},
                      data=None)
            return
        before, audio_before = self.bytes_received, self.audio_bytes
        samples = self._stripper.feed(data)
        self.bytes_received += len(data)
        if samples:
            self.spool.write(samples)
            self.audio_bytes += len(samples)
            self._wake.set()
            if not self.recording_started:
                self.recording_started = True
                self.emit("start_recording")
        self.emit("audio_chunk", acknowledged=True, error=None,
                  data={"byte_range": [before, self.bytes_received],
                        "time_range": [round(self.audio_seconds(audio_before), 3), round(self.audio_seconds(), 3)]})
        if self.audio_seconds() >= self.host.max_session_s:
            self.end_recording("maximum session duration reached")

    def stop_recording(self) -> None:
        if self.finishing:
            self.emit("stop_recording", acknowledged=False, error={"message": "recording has already ended"},
                      data=None)
            return
        self.emit("stop_recording", acknowledged=True, error=None,
                  data={"recording_duration": round(self.audio_seconds(), 3),
                        "recording_left_to_process": round(self.audio_seconds(self.spool.size - self._processed), 3)})
        self.end_recording("stop_recording")

    # -------------------------------------------------------------- recognition

    def _make_recognizers(self) -> list:
        pre = self.params.get("pre_processing", {})
        rp = RecognizerParams(sample_rate=self.sample_rate, endpointing=self.params["endpointing"],
                              max_utterance_s=self.params["maximum_duration_without_endpointing"],
                              speech_threshold=pre.get("speech_threshold", 0.6))
        return [create_recognizer(self.host.engine, rp) for _ in range(self.channels)]

    def _recognize(self, offset: int, size: int) -> list[tuple[int, Event]]:
        """Runs in the engine's thread for sphinx: read from the spool, decode, feed each channel.

        ``size`` 0 means the end: flush every recognizer, then let them go. A
        recognizer is made with the first audio (a session that never gets any
        makes none) and released at the end: a sphinx decoder holds about
        100 MB, and a finished session is kept in memory (for GET) long after.
        """
        if self._recognizers is None:
            if not size:
                return []
            self._recognizers = self._make_recognizers()
        streams: list[list[tuple[int, Event]]] = []
        if size:
            audio = self.spool.read(offset, size)
            per_channel = self._decoder.decode(audio)
            for channel, recognizer in enumerate(self._recognizers):
                streams.append([(channel, e) for e in recognizer.feed(per_channel[channel])])
        else:
            recognizers, self._recognizers = self._recognizers, None
            for channel, recognizer in enumerate(recognizers):
                streams.append([(channel, e) for e in recognizer.flush()])
        # Interleave channels by time, but never reorder one channel's own events
        # (a partial is produced before its final even when its time is later).
        return list(heapq.merge(*streams, key=lambda item: item[1].time))

    async def _run_engine(self, offset: int, size: int) -> list[tuple[int, Event]]:
        executor: Executor | None = self.host.executor
        if executor is None:
            return self._recognize(offset, size)
        return await asyncio.get_running_loop().run_in_executor(executor, self._recognize, offset, size)

    async def _process(self) -> None:
        """Feed the engine from the spool until the input is closed and everything is read."""
        try:
            while True:
                available = self.spool.size - self._processed
                if not available:
                    if self._input_closed:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                size = min(available, MAX_ENGINE_BATCH)
                events = await self._run_engine(self._processed, size)
                self._processed += size
                self._publish(events)
            self._publish(await self._run_engine(self._processed, 0))
        except Exception:  # a recognizer bug must not leave the session hanging
            log.exception("recognition failed for session %s", self.id)

    def _utterance(self, channel: int, words: list) -> dict:
        spelling = self.params.get("realtime_processing", {}).get("custom_spelling_config", {})
        replace = {variant.lower(): out for out, variants in spelling.get("spelling_dictionary", {}).items()
                   for variant in variants}
        word_dicts = [{"word": " " + replace.get(w.word.lower(), w.word), "start": w.start, "end": w.end,
                       "confidence": w.confidence} for w in words]
        return {"start": words[0].start, "end": words[-1].end, "confidence": utterance_confidence(words),
                "channel": channel, "words": word_dicts, "text": "".join(w["word"] for w in word_dicts),
                "language": self.language}

    def _publish(self, events: list[tuple[int, Event]]) -> None:
        for channel, event in events:
            if event.kind in ("speech_start", "speech_end"):
                self.emit(event.kind, data={"time": event.time, "channel": channel})
                continue
            if not event.words:
                continue
            utterance_id = f"{channel:02d}_{self._counters[channel]:08d}"
            utterance = self._utterance(channel, event.words)
            final = event.kind == "final"
            self.emit("transcript", data={"id": utterance_id, "is_final": final, "utterance": utterance})
            if final:
                self._counters[channel] += 1
                self.utterances.append(utterance)
                self._realtime_addons(utterance_id, utterance)

    def _realtime_addons(self, utterance_id: str, utterance: dict) -> None:
        rt = self.params.get("realtime_processing", {})
        if rt.get("translation"):
            for target in rt["translation_config"]["target_languages"]:
                if target == utterance["language"]:
                    continue
                translated = addons.translate_utterance(utterance, target)
                self.addon_results["translation"].append((target, translated))
                self.emit("translation", error=None,
                          data={"utterance_id": utterance_id, "utterance": utterance,
                                "original_language": utterance["language"], "target_language": target,
                                "translated_utterance": translated})
        if rt.get("named_entity_recognition"):
            results = addons.named_entities(utterance)
            self.addon_results["named_entity_recognition"] += results
            self.emit("named_entity_recognition", error=None,
                      data={"utterance_id": utterance_id, "utterance": utterance, "results": results})
        if rt.get("sentiment_analysis"):
            results = addons.sentiment(utterance)
            self.addon_results["sentiment_analysis"] += results
            self.emit("sentiment_analysis", error=None,
                      data={"utterance_id": utterance_id, "utterance": utterance, "results": results})

    # ----------------------------------------------------------------- the end

    def transcription(self) -> dict:
        utterances = sorted(self.utterances, key=lambda u: (u["start"], u["channel"]))
        return {"full_transcript": " ".join(u["text"].strip() for u in utterances),
                "languages": [self.language] if utterances else [],
                "utterances": utterances}

    def metadata(self) -> dict:
        duration = round(self.audio_seconds(), 3)
        return {"audio_duration": duration, "number_of_distinct_channels": self.channels,
                "billing_time": round(duration * self.channels, 3),
                "transcription_time": round(self.post_results.get("transcription_time", 0.0), 3)}

    def addon_blocks(self) -> dict:
        """The add-on blocks of the result (only those requested), in GET's shape."""
        rt = self.params.get("realtime_processing", {})
        post = self.params.get("post_processing", {})
        blocks: dict[str, Any] = {}
        if rt.get("translation"):
            results = []
            for target in rt["translation_config"]["target_languages"]:
                if target == self.language:
                    continue
                utterances = [u for t, u in self.addon_results["translation"] if t == target]
                results.append({"error": None, "full_transcript": " ".join(u["text"].strip() for u in utterances),
                                "languages": [target], "utterances": utterances, "sentences": [],
                                "subtitles": []})
            blocks["translation"] = addons.addon_block(results)
        if post.get("summarization"):
            blocks["summarization"] = addons.addon_block(self.post_results.get("summarization", ""))
        if rt.get("named_entity_recognition"):
            blocks["named_entity_recognition"] = addons.addon_block(self.addon_results["named_entity_recognition"])
        if rt.get("sentiment_analysis"):
            # The result schema types this block's ``results`` as a string: the list, JSON-encoded.
            block = addons.addon_block(json.dumps(self.addon_results["sentiment_analysis"], ensure_ascii=False))
            block["is_empty"] = not self.addon_results["sentiment_analysis"]
            blocks["sentiment_analysis"] = block
        if post.get("chapterization"):
            blocks["chapterization"] = addons.addon_block(self.post_results.get("chapterization", []))
        return blocks

    def end_recording(self, reason: str) -> None:
        """Refuse audio from now on and finish the session in the background."""
        if self.finishing:
            return
        self.finishing = True
        self.host.spawn(self._finish(reason))

    async def _finish(self, reason: str) -> None:
        """Drain recognition, post-process, end the session, close with 1000."""
        log.info("session %s: recording ends (%s)", self.id, reason)
        tail = self._stripper.flush()
        if tail:
            self.spool.write(tail)
            self.audio_bytes += len(tail)
        started = time.monotonic()
        self._input_closed = True
        self._wake.set()
        await self._processor
        self.spool.close()
        self.emit("end_recording", data={"recording_duration": round(self.audio_seconds(), 3)})

        utterances = sorted(self.utterances, key=lambda u: (u["start"], u["channel"]))
        post = self.params.get("post_processing", {})
        if post.get("summarization"):
            self.post_results["summarization"] = addons.summarize(utterances, post["summarization_config"]["type"])
        if post.get("chapterization"):
            self.post_results["chapterization"] = addons.chapters(utterances)
        self.post_results["transcription_time"] = time.monotonic() - started
        transcription = self.transcription()
        self.emit("post_transcript", data=transcription)
        self.emit("post_final_transcript",
                  data={"metadata": self.metadata(), "transcription": transcription, **self.addon_blocks()})
        if post.get("summarization"):
            self.emit("post_summarization", error=None, data={"results": self.post_results["summarization"]})
        if post.get("chapterization"):
            self.emit("post_chapterization", error=None, data={"results": self.post_results["chapterization"]})
        self.status = "done"
        self.completed_at = iso_now()
        self.emit("end_session")
        self.done.set()
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close(1000, "session ended")

    # -------------------------------------------------------------------- views

    def file_info(self) -> dict | None:
        if not self.recording_started:
            return None
        return {"id": self.file_id, "filename": None, "source": None,
                "audio_duration": round(self.audio_seconds(), 3), "number_of_channels": self.channels}

    def to_json(self) -> dict:
        result = None
        if self.status == "done":
            result = {"metadata": self.metadata(), "transcription": self.transcription(), **self.addon_blocks(),
                      "messages": list(self.messages)}
        return {"id": self.id, "request_id": f"G-{self.id[:8]}", "version": 2, "status": self.status,
                "created_at": self.created_at, "completed_at": self.completed_at,
                "custom_metadata": self.custom_metadata, "error_code": self.error_code,
                "post_session_metadata": self.post_session_metadata, "kind": "live",
                "file": self.file_info(), "request_params": self.params, "result": result}
