"""One live session's WebSocket: paced audio, acknowledgements, resume, close.

:class:`LiveStream` (asyncio) owns one socket: paced chunks, the
acknowledgement window, reconnects that resend from the last acknowledged
byte, and the final close. It is Gladia's protocol only: it touches no
database and knows nothing of jobs; ``jobs.streaming`` runs it for a job and
records its progress.

The resume point is Gladia's ``byte_range`` end of the last acknowledged
chunk, so a new run or a reconnect sends exactly the bytes Gladia has not
acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..audio import AudioError, PcmFormat, PcmReader
from ..metrics import STREAM_ACK_SECONDS, STREAM_BYTES_SENT, STREAM_RECONNECTS

log = logging.getLogger(__name__)

# How long a (re)connection waits for the acknowledgement of its empty probe chunk.
PROBE_TIMEOUT_S = 5.0
MAX_FRAME_BYTES = 1 << 20  # Gladia closes the socket with 1009 above 1 MiB
# Unacknowledged audio a stream may hold (and so resend) before it waits for acknowledgements.
WINDOW_S = 1.0
# A session's audio clock starts at its creation (see LiveStream's ``created_at``): the audio due by the
# time its socket opens goes at once, up to this much (a slow start is not made up beyond one window).
MAX_CATCH_UP_S = WINDOW_S
# Per-connection reconnect attempts before the run gives up and the job is re-driven later.
MAX_RECONNECT_ATTEMPTS = 8
RECONNECT_MAX_DELAY_S = 5.0
# How long the last acknowledgement may take once every byte is sent before the socket is presumed dead.
FINAL_ACK_TIMEOUT_S = 30.0
# How long CLOSE_MODE=stop waits for end_session after stop_recording.
STOP_WAIT_S = 600.0
# What a connection reports when Gladia ended the session under it (see LiveStream._gone).
_GONE = "gone"


@dataclass
class StreamResult:
    outcome: str  # complete | session_gone | lost_claim | failed_audio | transient
    bytes_sent: int
    bytes_acked: int
    bytes_total: Optional[int]
    reconnects: int
    error: Optional[str] = None


@dataclass
class LatencyRecorder:
    """Lateness of each paced send against its schedule (used by the benchmark)."""

    samples: list[float] = field(default_factory=list)

    def add(self, late_s: float) -> None:
        self.samples.append(late_s)


class LiveStream:
    """One live session's socket: send ``path`` from ``start`` on, paced, acknowledged, resumable."""

    def __init__(self, *, url: str, path: str, fmt: PcmFormat, start: int = 0, chunk_ms: int = 100,
                 speed: float = 1.0, close_mode: str = "close", window_s: float = WINDOW_S,
                 max_duration_s: float = 3 * 3600, session_alive: Optional[Callable[[], Any]] = None,
                 lateness: Optional[LatencyRecorder] = None, label: str = "", reconnects_before: int = 0,
                 on_message: Optional[Callable[[dict[str, Any]], None]] = None,
                 created_at: Optional[float] = None):
        self.url = url
        self.path = path
        self.fmt = fmt
        self.chunk_bytes = fmt.chunk_bytes(chunk_ms, MAX_FRAME_BYTES)
        self.speed = speed
        self.close_mode = close_mode
        self.window_bytes = max(int(window_s * fmt.bytes_per_second) // fmt.bytes_per_frame * fmt.bytes_per_frame,
                                2 * self.chunk_bytes)
        self.max_duration_s = max_duration_s
        self.session_alive = session_alive  # async callable: False when Gladia says the session is over
        self.on_message = on_message  # called on the loop with every message the socket delivers
        self.lateness = lateness
        self.label = label or redact_ws_url(url) or ""
        self.bytes_acked = start
        self.bytes_sent = start
        self.bytes_total: Optional[int] = None
        self.reconnects = 0
        self.window_wait_s = 0.0  # time spent waiting for acknowledgements with the window full
        self.reconnects_before = reconnects_before  # counted by earlier runs of the job
        self.last_error: Optional[str] = None
        self.lost_claim = False  # set by the heartbeat when another run owns the job
        self.interrupted = False  # set when the worker shuts down
        self._fence_at: Optional[float] = None  # monotonic time after which this run must stop sending
        # ``created_at``: when this run created the session (``time.monotonic()``), None if it existed before.
        # Such a session holds no audio: its first connection has nothing to align on. And its slot is
        # held from then on, so its audio is paced from then on: what fell due while the socket opened
        # goes at once, as a live source that kept recording while it connected would send it.
        self._paced_from = created_at if start == 0 else None
        self._aligned = self._paced_from is not None
        self._unacked = bytearray()  # bytes [bytes_acked, bytes_sent)
        self._sent_at: deque[tuple[int, float]] = deque()  # (end byte, send time) of this connection's chunks
        self._reader: Optional[PcmReader] = None
        self._read_ahead: Optional[bytes] = None  # the reader's next chunk, read before its send time
        self._acked = asyncio.Event()
        self._probe = asyncio.Event()
        self._probe_total: Optional[int] = None
        self._probing = False
        self._ended = asyncio.Event()  # end_session seen
        self._ws = None

    # ------------------------------------------------------------ main loop

    async def run(self) -> StreamResult:
        """Stream until every byte is acknowledged, the session ends, or this run must stop."""
        attempt = 0
        try:
            self._reader = await self._open_reader(self.bytes_acked)
            while True:
                if self.lost_claim:
                    return self._result("lost_claim")
                progressed_from = self.bytes_acked
                outcome = await self._connection()
                if outcome == _GONE:
                    return await self._gone()
                if outcome is not None:
                    return self._result(outcome)
                if self.lost_claim:
                    return self._result("lost_claim")
                attempt = 1 if self.bytes_acked > progressed_from else attempt + 1
                if attempt > MAX_RECONNECT_ATTEMPTS:
                    return self._result("transient")
                if attempt >= 3 and self.session_alive is not None and not await self.session_alive():
                    self.last_error = (self.last_error or "") + "; Gladia reports the session as ended"
                    return await self._gone()
                self.reconnects += 1
                STREAM_RECONNECTS.inc()
                delay = min(RECONNECT_MAX_DELAY_S, 0.3 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.warning("stream %s interrupted (%s); reconnecting in %.2fs from byte %d",
                            self.label, self.last_error, delay, self.bytes_acked)
                await asyncio.sleep(delay)
        except AudioError as exc:
            self.last_error = str(exc)
            return self._result("failed_audio")
        finally:
            if self._reader is not None:
                self._reader.close()

    async def _connection(self) -> Optional[str]:
        """One connection: the run's outcome, :data:`_GONE` when the session ended under us, None to reconnect."""
        try:
            async with connect(self.url, compression=None, max_size=64 << 20, proxy=None,
                               open_timeout=10, ping_interval=20, ping_timeout=30,
                               close_timeout=5, user_agent_header="webhook-service") as ws:
                self._ws = ws
                self._sent_at.clear()  # chunks resent on this connection are timed from their new send
                try:
                    return await self._converse(ws)
                except AudioError:
                    # The file broke mid-way: end the session with what Gladia has (a 1000 close),
                    # rather than leave it waiting for a reconnect.
                    await self._close_quietly(1000)
                    raise
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.last_error = f"WebSocket handshake refused with HTTP {status}"
            if 400 <= status < 500 and status not in (408, 429):
                return _GONE
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            self.last_error = f"socket closed with {code or 'no close frame'} {reason}".strip()
            if code is not None and 4400 <= code <= 4499:
                return _GONE
            if code == 1000:
                # Gladia ended the session although audio was still due.
                return _GONE
        except (OSError, asyncio.TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self.last_error = f"connection failed: {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            self._ws = None
        return None

    async def _gone(self) -> StreamResult:
        """The session ended under us. Complete if every byte of the file was acknowledged already.

        That happens when a run closed with 1000 after the last acknowledgement and died before
        recording it: the file's length in bytes was only an estimate until its end was read, so
        the next run reads it here instead of reporting audio missing.
        """
        if self.bytes_total is None and self.bytes_sent <= self.bytes_acked:
            reader = await self._open_reader(self.bytes_acked)
            try:
                at_end = not await asyncio.get_running_loop().run_in_executor(None, reader.read, 1)
            finally:
                reader.close()
            if at_end:
                self.bytes_total = self.bytes_acked
                return self._result("complete")
        return self._result("session_gone")

    async def _open_reader(self, start: int) -> PcmReader:
        # Opening probes the container and may seek and decode a pre-roll: tens of ms that must not
        # stall the other streams of the loop.
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: PcmReader(self.path, self.fmt, start, max_duration_s=self.max_duration_s))

    def _result(self, outcome: str) -> StreamResult:
        return StreamResult(outcome, self.bytes_sent, self.bytes_acked, self.bytes_total, self.reconnects,
                            self.last_error)

    async def _close_quietly(self, code: int) -> None:
        ws = self._ws
        if ws is not None:
            try:
                await ws.close(code)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass

    def fence_after(self, seconds: float) -> None:
        """Allow sending for ``seconds`` more (renewed by each recorded heartbeat)."""
        self._fence_at = time.monotonic() + seconds

    def _fenced(self) -> bool:
        if self._fence_at is not None and time.monotonic() > self._fence_at:
            if not self.lost_claim:
                self.last_error = "no heartbeat recorded for too long; stopping so another run can take over"
                log.warning("stream %s: %s", self.label, self.last_error)
            self.abort()
        return self.lost_claim

    def interrupt(self) -> None:
        """Stop for a worker shutdown: like :meth:`abort`, but the job is handed back at once."""
        self.interrupted = True
        self.abort()

    def abort(self) -> None:
        """Drop the socket without a close frame: Gladia keeps the session for the next owner."""
        self.lost_claim = True
        ws = self._ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    # ------------------------------------------------------ one connection

    async def _converse(self, ws) -> Optional[str]:
        """Resend what is unacknowledged, stream the rest, finish. None means: reconnect."""
        receiver = asyncio.create_task(self._receive(ws))
        try:
            sender_done = asyncio.create_task(self._send_all(ws))
            done, _ = await asyncio.wait({receiver, sender_done}, return_when=asyncio.FIRST_COMPLETED)
            if sender_done in done:
                outcome = sender_done.result()  # raises what the sender raised
                return outcome
            sender_done.cancel()
            try:
                await sender_done
            except (asyncio.CancelledError, ConnectionClosed):
                pass
            receiver.result()  # re-raise ConnectionClosed from the receiver
            raise ConnectionClosed(None, None)  # the server stopped talking without a close frame
        finally:
            if not receiver.done():
                receiver.cancel()
            try:
                await receiver
            except (asyncio.CancelledError, ConnectionClosed):
                pass

    async def _align_with_server(self, ws) -> None:
        """Learn how many bytes Gladia holds, and continue from exactly there.

        An empty audio chunk adds no audio, and its acknowledgement's
        ``byte_range`` end is the session's byte count. After a crash the
        database's ``bytes_acked`` may lag behind (acknowledgements that came
        after the last heartbeat), and after a cut the server may have kept a
        chunk whose acknowledgement was lost: resending from our own count
        would duplicate audio, so the server's count wins.
        """
        self._probe.clear()
        self._probe_total = None
        self._probing = True
        await ws.send(b"")
        try:
            await asyncio.wait_for(self._probe.wait(), PROBE_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("stream %s: no acknowledgement of the empty probe chunk; resending from byte %d",
                        self.label, self.bytes_acked)
            return
        finally:
            self._probing = False
        total = self._probe_total
        if total is None or total == self.bytes_acked:
            return
        if total % self.fmt.bytes_per_frame:
            log.warning("stream %s: server holds %d bytes, not whole frames; resending from byte %d",
                        self.label, total, self.bytes_acked)
            return
        if self.bytes_acked < total <= self.bytes_sent:
            del self._unacked[: total - self.bytes_acked]
            self.bytes_acked = total
        else:  # the server is ahead of what this run sent (crash), or behind what it acknowledged
            log.warning("stream %s: server holds %d bytes, this run had %d acknowledged; continuing from the server's"
                        " count", self.label, total, self.bytes_acked)
            assert self._reader is not None
            self._reader.close()
            self._reader = await self._open_reader(total)
            self._read_ahead = None
            self._unacked.clear()
            self.bytes_acked = self.bytes_sent = total
        self._acked.set()

    async def _send_all(self, ws) -> Optional[str]:
        """Resend the unacknowledged tail, stream the rest of the file, end. None means: reconnect."""
        if self._aligned:
            self._aligned = False  # a later connection (after a cut) asks the server again
        else:
            await self._align_with_server(ws)
        # Session-relative offsets make the resend exact.
        pending = bytes(self._unacked)
        limit = MAX_FRAME_BYTES // self.fmt.bytes_per_frame * self.fmt.bytes_per_frame
        for i in range(0, len(pending), limit):
            await ws.send(pending[i:i + limit])
        if not await self._send_new_audio(ws):
            return "lost_claim"
        return await self._end(ws)

    async def _send_new_audio(self, ws) -> bool:
        """Send the file from ``bytes_sent`` to its end; False when this run must stop (fenced).

        Paced against a monotonic clock: chunk k is due at t0 + k * chunk_duration / speed,
        so sleeping late never accumulates drift. t0 is when this connection starts sending, or, on
        the first connection of a session this run created, up to ``MAX_CATCH_UP_S`` earlier: its creation.
        """
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if self._paced_from is not None:  # the session's first connection: catch up on its set-up
            t0 -= min(max(0.0, time.monotonic() - self._paced_from), MAX_CATCH_UP_S)
            self._paced_from = None
        base = self.bytes_sent
        rate = self.fmt.bytes_per_second * self.speed
        reader = self._reader
        assert reader is not None
        while self.bytes_total is None:
            if self._fenced():
                return False
            if len(self._unacked) + self.chunk_bytes > self.window_bytes:
                # Back-pressure: Gladia is behind with its acknowledgements; hold the audio in the file.
                waited_from = loop.time()
                while len(self._unacked) + self.chunk_bytes > self.window_bytes:
                    self._acked.clear()
                    await self._acked.wait()
                self.window_wait_s += loop.time() - waited_from
            # Read before the pause: the file's end is known at once, not one chunk's wait later
            # (a slot is held for the audio, not for an empty pause after it). A chunk read but not
            # sent yet (the connection dropped during the pause) is the next connection's first.
            if self._read_ahead is None:
                self._read_ahead = reader.read(self.chunk_bytes)
            if not self._read_ahead:
                self.bytes_total = self.bytes_sent
                break
            if rate > 0:
                due = t0 + (self.bytes_sent - base) / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.lateness is not None:
                    self.lateness.add(loop.time() - due)
            chunk, self._read_ahead = self._read_ahead, None
            self._unacked += chunk
            self.bytes_sent += len(chunk)
            self._sent_at.append((self.bytes_sent, loop.time()))
            await ws.send(chunk)
            STREAM_BYTES_SENT.inc(len(chunk))
        return True

    async def _end(self, ws) -> Optional[str]:
        """Every byte sent: wait for the last acknowledgement, then close (or stop_recording). None: reconnect."""
        loop = asyncio.get_running_loop()
        assert self.bytes_total is not None
        deadline = loop.time() + FINAL_ACK_TIMEOUT_S
        while self.bytes_acked < self.bytes_total:
            self._acked.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.last_error = "no acknowledgement for the last audio; resending"
                await ws.close(4000, "no acknowledgement")  # a non-1000 code: the session survives
                return None
            try:
                await asyncio.wait_for(self._acked.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        if self.close_mode == "stop":
            await ws.send(json.dumps({"type": "stop_recording"}))
            try:
                await asyncio.wait_for(self._ended.wait(), STOP_WAIT_S)
            except asyncio.TimeoutError:
                self.last_error = "stop_recording sent; end_session did not arrive in time"
            await self._close_quietly(1000)
            return "complete"
        await ws.close(1000)
        return "complete"

    async def _receive(self, ws) -> None:
        async for raw in ws:
            if isinstance(raw, bytes):
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if self.on_message is not None:
                try:
                    self.on_message(message)
                except Exception:  # noqa: BLE001 - a consumer's bug must not cut the stream
                    log.exception("stream %s: the message handler failed", self.label)
            kind = message.get("type")
            if kind == "audio_chunk":
                data = message.get("data") or {}
                byte_range = data.get("byte_range") if isinstance(data, dict) else None
                if message.get("acknowledged") and isinstance(byte_range, list) and len(byte_range) == 2:
                    end = int(byte_range[1])
                    if int(byte_range[0]) == end:  # the empty probe chunk: the server's byte count
                        self._probe_total = end
                        self._probe.set()
                        continue
                    if self._sent_at:
                        self._observe_acks(end)
                    if end > self.bytes_acked:
                        drop = min(end - self.bytes_acked, len(self._unacked))
                        del self._unacked[:drop]
                        self.bytes_acked = min(end, self.bytes_sent)
                        self._acked.set()
                else:
                    error = (message.get("error") or {}).get("message") if isinstance(message.get("error"), dict) else None
                    if self._probing and not self._probe.is_set():
                        # The server refuses empty chunks: no count to align on; resend from our own.
                        self._probe.set()
                        continue
                    self.last_error = f"chunk not acknowledged: {error or 'no reason given'}"
                    log.warning("stream %s: %s", self.label, self.last_error)
            elif kind == "end_session":
                self._ended.set()
            elif kind == "error":
                self.last_error = f"Gladia error: {json.dumps(message.get('error') or message.get('data'))[:300]}"
                log.warning("stream %s: %s", self.label, self.last_error)


    def _observe_acks(self, end: int) -> None:
        """Acknowledgement latency of the chunks of this connection that ``end`` covers."""
        now = asyncio.get_running_loop().time()
        while self._sent_at and self._sent_at[0][0] <= end:
            STREAM_ACK_SECONDS.observe(now - self._sent_at.popleft()[1])


def redact_ws_url(url: str | None) -> str | None:
    """A WebSocket URL safe for logs and displays: the token is cut to its first characters."""
    if not url:
        return url
    base, sep, query = url.partition("?")
    if not sep:
        return base
    parts = []
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        parts.append(f"{name}={value[:4]}…" if eq and name == "token" else item)
    return f"{base}?{'&'.join(parts)}"
