"""Stream one job's audio into its Gladia live session, and survive anything on the way.

Two layers:

* :class:`LiveStream` (asyncio) owns one WebSocket: paced chunks, the
  acknowledgement window, reconnects that resend from the last acknowledged
  byte, and the final close. It touches no database.
* :func:`run_job` (synchronous, called by the Celery task) owns the job row:
  it claims the job, takes a concurrency slot, creates or finds the Gladia
  session, runs the :class:`LiveStream` on the process's shared event loop and
  records the outcome.

Why one shared event loop per worker process: streaming is waiting (for the
next chunk's time, for acknowledgements), so hundreds of streams fit in one
thread; Celery's ``threads`` pool gives each task a thread that only blocks on
its stream's future, while all sockets, timers and decoding run on one loop
(see ``bench/bench_streaming.py`` for the measurements). Progress of every
stream of the process is written in one transaction per heartbeat interval.

Crash safety rests on the job row:

* a job is *claimed* with a conditional UPDATE (its ``worker_id`` is free or
  its heartbeat is stale), so two runs of one job never stream at once; a run
  that loses its claim (its heartbeat UPDATE matches no row) drops its socket
  without closing the session;
* the Gladia session is created only when the row has none, and recorded at
  once with a conditional UPDATE (only if the row names no other session),
  even by a run that lost its claim meanwhile: the session belongs to the
  job, and its next owner adopts it from the row. A run that finds another
  session recorded ends its own and stops, so the session on the row is the
  one that streams. A crash between the POST and that commit leaves an orphan
  that the next run finds by ``custom_metadata.job_id`` before creating
  another;
* the resume point is ``bytes_acked`` (Gladia's ``byte_range`` end), so a new
  run or a reconnect sends exactly the bytes Gladia has not acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Optional

from sqlalchemy import or_, select, update
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .. import concurrency
from ..audio import AudioError, PcmFormat, PcmReader, estimated_bytes, probe, session_format
from ..config import Settings
from ..db import session_scope
from ..logging_setup import job_context, set_gladia_id
from ..metrics import JOBS_STATE_CHANGES, STREAM_BYTES_SENT, STREAM_RECONNECTS
from ..models import ACTIVE_STATES, Job, utcnow
from ..tokens import callback_token, redact_ws_url
from . import session_config
from .client import (
    GladiaAuthError,
    GladiaBadRequest,
    GladiaClient,
    GladiaError,
    GladiaNotFound,
    GladiaRateLimited,
)

log = logging.getLogger(__name__)

# How long a (re)connection waits for the acknowledgement of its empty probe chunk.
PROBE_TIMEOUT_S = 5.0
MAX_FRAME_BYTES = 1 << 20  # Gladia closes the socket with 1009 above 1 MiB
# Unacknowledged audio a stream may hold (and so resend) before it waits for acknowledgements.
WINDOW_S = 1.0
# Per-connection reconnect attempts before the run gives up and the job is re-driven later.
MAX_RECONNECT_ATTEMPTS = 8
RECONNECT_MAX_DELAY_S = 5.0
# How long the last acknowledgement may take once every byte is sent before the socket is presumed dead.
FINAL_ACK_TIMEOUT_S = 30.0
# How long CLOSE_MODE=stop waits for end_session after stop_recording.
STOP_WAIT_S = 600.0
# A resumption waits this long for a free concurrency slot before its task is re-queued.
SLOT_WAIT_S = 30.0
# A new session that finds no free slot is re-queued after a random delay in this range (seconds).
NEW_SESSION_BACKOFF_S = (2.0, 10.0)
# POST /v2/live attempts within one run when Gladia is unreachable or answers 5xx.
CREATE_ATTEMPTS = 4


# ============================================================== the WebSocket

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
                 lateness: Optional[LatencyRecorder] = None, label: str = "", reconnects_before: int = 0):
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
        self._unacked = bytearray()  # bytes [bytes_acked, bytes_sent)
        self._reader: Optional[PcmReader] = None
        self._acked = asyncio.Event()
        self._probe = asyncio.Event()
        self._probe_total: Optional[int] = None
        self._probing = False
        self._ended = asyncio.Event()  # end_session seen
        self._ws = None

    # ------------------------------------------------------------ main loop

    async def run(self) -> StreamResult:
        attempt = 0
        try:
            self._reader = await self._open_reader(self.bytes_acked)
            while True:
                if self.lost_claim:
                    return self._result("lost_claim")
                progressed_from = self.bytes_acked
                try:
                    async with connect(self.url, compression=None, max_size=64 << 20, proxy=None,
                                       open_timeout=10, ping_interval=20, ping_timeout=30,
                                       close_timeout=5, user_agent_header="webhook-service") as ws:
                        self._ws = ws
                        try:
                            outcome = await self._converse(ws)
                        except AudioError:
                            # The file broke mid-way: end the session with what Gladia has (a 1000 close),
                            # rather than leave it waiting for a reconnect.
                            await self._close_quietly(1000)
                            raise
                        if outcome is not None:
                            return self._result(outcome)
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    self.last_error = f"WebSocket handshake refused with HTTP {status}"
                    if 400 <= status < 500 and status not in (408, 429):
                        return await self._gone()
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    reason = exc.rcvd.reason if exc.rcvd is not None else ""
                    self.last_error = f"socket closed with {code or 'no close frame'} {reason}".strip()
                    if code is not None and 4400 <= code <= 4499:
                        return await self._gone()
                    if code == 1000:
                        # Gladia ended the session although audio was still due.
                        return await self._gone()
                except (OSError, asyncio.TimeoutError, InvalidHandshake, InvalidURI) as exc:
                    self.last_error = f"connection failed: {type(exc).__name__}: {str(exc)[:200]}"
                finally:
                    self._ws = None
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
            self._unacked.clear()
            self.bytes_acked = self.bytes_sent = total
        self._acked.set()

    async def _send_all(self, ws) -> Optional[str]:
        await self._align_with_server(ws)
        # 1. Resend the unacknowledged tail (session-relative offsets make this exact).
        pending = bytes(self._unacked)
        limit = MAX_FRAME_BYTES // self.fmt.bytes_per_frame * self.fmt.bytes_per_frame
        for i in range(0, len(pending), limit):
            await ws.send(pending[i:i + limit])
        # 2. New audio, paced against a monotonic clock: chunk k is due at t0 + k * chunk_duration / speed,
        #    so sleeping late never accumulates drift.
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        base = self.bytes_sent
        rate = self.fmt.bytes_per_second * self.speed
        reader = self._reader
        assert reader is not None
        while self.bytes_total is None:
            if self._fenced():
                return "lost_claim"
            if len(self._unacked) + self.chunk_bytes > self.window_bytes:
                # Back-pressure: Gladia is behind with its acknowledgements; hold the audio in the file.
                waited_from = loop.time()
                while len(self._unacked) + self.chunk_bytes > self.window_bytes:
                    self._acked.clear()
                    await self._acked.wait()
                self.window_wait_s += loop.time() - waited_from
            if rate > 0:
                due = t0 + (self.bytes_sent - base) / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.lateness is not None:
                    self.lateness.add(loop.time() - due)
            chunk = reader.read(self.chunk_bytes)
            if not chunk:
                self.bytes_total = self.bytes_sent
                break
            self._unacked += chunk
            self.bytes_sent += len(chunk)
            await ws.send(chunk)
            STREAM_BYTES_SENT.inc(len(chunk))
        # 3. Every byte sent: wait for the last acknowledgement, then end.
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


# ===================================================== process-wide runtime

class _Runtime:
    """The worker process's event loop (one thread) and its progress writer."""

    def __init__(self, heartbeat_interval_s: float):
        self.loop = asyncio.new_event_loop()
        self.db_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stream-db")
        self.streams: dict[str, _Entry] = {}  # run id -> entry
        self.lock = threading.Lock()
        self.heartbeat_interval_s = heartbeat_interval_s
        self.thread = threading.Thread(target=self._run, name="stream-loop", daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._heartbeat_forever(), self.loop)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout: Optional[float] = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def register(self, job_id: str, stream: LiveStream, run_id: str, settings: Settings) -> None:
        stream.fence_after(fence_s(settings))  # the claim has just written a heartbeat
        with self.lock:
            self.streams[run_id] = _Entry(job_id, run_id, stream, settings)

    def unregister(self, run_id: str) -> None:
        with self.lock:
            self.streams.pop(run_id, None)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            with self.lock:
                entries = list(self.streams.values())
            if not entries:
                continue
            try:
                written, lost = await self.loop.run_in_executor(self.db_pool, write_progress, entries)
            except Exception:  # noqa: BLE001 - the next beat retries; a dead DB must not kill streams at once
                log.exception("progress write failed")
                continue
            for entry in entries:
                if entry.run_id in lost:
                    log.warning("job %s was claimed by another run; dropping this stream", entry.job_id)
                    entry.stream.abort()
                elif entry.run_id in written:
                    entry.stream.fence_after(fence_s(entry.settings))


@dataclass
class _Entry:
    job_id: str
    run_id: str
    stream: LiveStream
    settings: Settings


_runtime: Optional[_Runtime] = None
_runtime_lock = threading.Lock()


_shutting_down = threading.Event()


def interrupt_all() -> int:
    """Stop every stream of this process (worker shutdown); their jobs are handed back. Returns how many.

    No new stream starts in this process afterwards.
    """
    _shutting_down.set()
    rt = _runtime
    if rt is None:
        return 0
    with rt.lock:
        entries = list(rt.streams.values())
    for entry in entries:
        rt.loop.call_soon_threadsafe(entry.stream.interrupt)
    return len(entries)


def runtime(settings: Settings) -> _Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = _Runtime(settings.heartbeat_interval_s)
        return _runtime


def _forget_runtime() -> None:
    global _runtime
    _runtime = None


os.register_at_fork(after_in_child=_forget_runtime)


def lease_s(settings: Settings) -> float:
    """Concurrency-slot lease: long enough to survive a few missed heartbeats."""
    return max(settings.stale_heartbeat_s, 3 * settings.heartbeat_interval_s)


def fence_s(settings: Settings) -> float:
    """How long a stream may go on without recording a heartbeat.

    Past that, the sweeper may hand the job to another run (at
    STALE_HEARTBEAT_S), so a run that cannot write its heartbeat stops
    sending first: two runs never feed one session at once.
    """
    return 0.75 * settings.stale_heartbeat_s


def write_progress(entries: list[_Entry]) -> tuple[set[str], set[str]]:
    """One transaction per database: each stream's progress and heartbeat, and its slot lease.

    Returns (run ids recorded, run ids whose job another run owns now).
    """
    written: set[str] = set()
    lost: set[str] = set()
    by_db: dict[str, list[_Entry]] = {}
    for entry in entries:
        by_db.setdefault(entry.settings.database_url, []).append(entry)
    for url, items in by_db.items():
        now = utcnow()
        owned: list[_Entry] = []
        try:
            with session_scope(url) as session:
                for entry in items:
                    stream = entry.stream
                    result = session.execute(
                        update(Job).where(Job.id == entry.job_id, Job.worker_id == entry.run_id)
                        .values(bytes_sent=stream.bytes_sent, bytes_acked=stream.bytes_acked,
                                reconnects=stream.reconnects_before + stream.reconnects, heartbeat_at=now)
                    )
                    if result.rowcount == 1:
                        owned.append(entry)
                    else:
                        lost.add(entry.run_id)
                concurrency.renew_slots(session, [e.job_id for e in owned], lease_s(items[0].settings), now)
        except Exception:  # noqa: BLE001 - one unreachable database must not stop the others' heartbeats
            log.exception("progress write to %s failed", url.split("@")[-1])
            lost -= {e.run_id for e in items}
            continue
        written |= {e.run_id for e in owned}
    return written, lost


# ================================================================= the job

class Deferred(Exception):
    """Nothing wrong, but not now (no free slot, Gladia's 429, a transient outage): retry later."""

    def __init__(self, reason: str, countdown: float, *, keep_slot: bool = False):
        super().__init__(reason)
        self.countdown = countdown
        self.keep_slot = keep_slot  # the job's slot stays held (for the run that resumes its session)


@dataclass
class _Claim:
    run_id: str
    job: Job


def _new_run_id() -> str:
    from ..tasks import WORKER_ID  # the worker's host:pid; tasks imports nothing from here at import time

    return f"{WORKER_ID}:{uuid.uuid4().hex[:8]}"[:200]


def claim_job(settings: Settings, job_id: str, run_id: str) -> tuple[Optional[Job], str]:
    """Take ownership of a job that nobody streams (free, or its owner's heartbeat is stale).

    Returns (job, "") on success, or (None, why-not).
    """
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.stale_heartbeat_s)
    with session_scope(settings.database_url) as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(("queued",) + ACTIVE_STATES),
                   or_(Job.worker_id.is_(None), Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before))
            .values(worker_id=run_id, heartbeat_at=now, retry_at=None)
        )
        job = session.get(Job, job_id)
        if job is None:
            return None, "no such job"
        if result.rowcount == 0:
            if job.state not in ("queued",) + ACTIVE_STATES:
                return None, f"job is already {job.state}"
            return None, f"job is being streamed by {job.worker_id} (heartbeat {job.heartbeat_at:%H:%M:%S})"
        session.expunge(job)
        return job, ""


def _update_owned(settings: Settings, job_id: str, run_id: str, **values: Any) -> bool:
    with session_scope(settings.database_url) as session:
        result = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == run_id).values(**values))
        return result.rowcount == 1


def _with_job(settings: Settings, job_id: str, run_id: str, change: Callable[[Job], None]) -> bool:
    """Apply ``change`` to the job row if this run still owns it (row locked on PostgreSQL)."""
    with session_scope(settings.database_url) as session:
        job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
        if job is None or job.worker_id != run_id:
            return False
        before = job.state
        change(job)
        if job.state != before:
            JOBS_STATE_CHANGES.labels(job.state).inc()
        return True


def _fail(settings: Settings, job_id: str, run_id: str, reason: str, *, reconcile: bool = False) -> None:
    def change(job: Job) -> None:
        job.advance("failed")
        job.last_error = reason[:2000]
        job.worker_id = None
        if reconcile and job.gladia_id:
            job.reconcile_after = utcnow()

    _with_job(settings, job_id, run_id, change)
    concurrency.release_slot(settings.database_url, job_id)
    log.error("job failed: %s", reason)


def _release(settings: Settings, job_id: str, run_id: str, error: Optional[str] = None,
             retry_in: Optional[float] = None) -> None:
    """Give the job up; ``retry_in``: its task goes back to the broker, due in that many seconds."""
    values: dict[str, Any] = {"worker_id": None}
    if error:
        values["last_error"] = error[:2000]
    if retry_in is not None:
        values["retry_at"] = utcnow() + timedelta(seconds=retry_in)
    _update_owned(settings, job_id, run_id, **values)


def run_job(settings: Settings, job_id: str) -> str:
    """Stream one job to its end; safe to call again, and safe against concurrent calls.

    Returns a short outcome (``stream_closed``, ``failed``, ``skipped: ...``);
    raises :class:`Deferred` when the task should be retried later.
    """
    from ..tasks import MAX_JOB_ATTEMPTS

    if _shutting_down.is_set():
        raise Deferred("worker shutting down", 5.0)
    run_id = _new_run_id()
    with job_context(job_id):
        job, why = claim_job(settings, job_id, run_id)
        if job is None:
            log.info("not streaming: %s", why)
            return f"skipped: {why}"
        if job.gladia_id:
            set_gladia_id(job.gladia_id)
        try:
            return _run_claimed(settings, job, run_id, MAX_JOB_ATTEMPTS)
        except ClaimLost as exc:
            # The job (and its concurrency slot, keyed by job) belongs to the run that took it over.
            log.warning("this run stops: %s", exc)
            return "skipped: claim lost"
        except Deferred as exc:
            _release(settings, job_id, run_id, retry_in=exc.countdown)
            if not exc.keep_slot:
                concurrency.release_slot(settings.database_url, job_id)
            raise
        except BaseException as exc:
            # Unexpected: let the job be re-driven (bounded by its attempts) rather than stuck.
            _release(settings, job_id, run_id, f"{type(exc).__name__}: {str(exc)[:300]}")
            concurrency.release_slot(settings.database_url, job_id)
            raise


def _audio_facts(settings: Settings, job: Job, run_id: str) -> Optional[PcmFormat]:
    """The session's PCM format; probes the file when submit did not (or the file changed). None: failed."""
    config = job.session_config or {}
    try:
        if job.audio_channels is None or job.audio_duration_s is None or "channels" not in config:
            info = probe(job.source_path)
            fmt = session_format(info, config.get("sample_rate"), config.get("bit_depth", 16))
            total = estimated_bytes(info, fmt)

            def store(row: Job) -> None:
                row.audio_channels, row.audio_duration_s = info.channels, info.duration_s
                row.audio_sample_rate, row.audio_sha256 = info.sample_rate, info.sha256
                row.bytes_total = row.bytes_total or total
                row.session_config = session_config.job_config(
                    config, None, channels=fmt.channels, sample_rate=fmt.sample_rate, bit_depth=fmt.bit_depth)

            _with_job(settings, job.id, run_id, store)
            job.session_config = session_config.job_config(
                config, None, channels=fmt.channels, sample_rate=fmt.sample_rate, bit_depth=fmt.bit_depth)
            return fmt
        if not os.path.isfile(job.source_path):
            raise AudioError(f"{job.source_path}: no such file (moved or deleted after submit)")
        return PcmFormat(sample_rate=int(config.get("sample_rate", 16000)), channels=int(config.get("channels", job.audio_channels)),
                         bit_depth=int(config.get("bit_depth", 16)))
    except AudioError as exc:
        _fail(settings, job.id, run_id, str(exc))
        return None


def _acquire_slot(settings: Settings, job: Job, run_id: str) -> None:
    """Hold a concurrency slot; resumptions first (see :func:`concurrency.acquire_slot`).

    A resumption (the job has a recorded session) races Gladia's reconnect
    grace, so it waits here for the next free slot, then is re-queued almost at
    once. A new session can wait, but not on a worker thread: when no slot is
    free its task goes back to the broker at once, so that a backlog of new
    files never keeps resumptions from the threads they need.
    """
    resuming = bool(job.gladia_id and job.ws_url)
    deadline = time.monotonic() + SLOT_WAIT_S
    delay = 0.2
    while True:
        slot = concurrency.acquire_slot(settings.database_url, job.id, settings.max_concurrent_sessions,
                                        lease_s(settings), new_session=not resuming)
        if slot is not None:
            log.debug("holding concurrency slot %d", slot)
            return
        busy = f"all {settings.max_concurrent_sessions} session slots are busy"
        if not resuming:
            raise Deferred(busy, random.uniform(*NEW_SESSION_BACKOFF_S))
        if time.monotonic() >= deadline:
            raise Deferred(busy, random.uniform(0.2, 1.0))
        # Keep the claim fresh while waiting, so nobody presumes this run dead.
        if not _update_owned(settings, job.id, run_id, heartbeat_at=utcnow()):
            raise Deferred("claim lost while waiting for a slot", 1, keep_slot=True)
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 1.6, 2.0)


def _find_orphan(client: GladiaClient, job: Job) -> Optional[dict[str, Any]]:
    """A session created for this job whose id never reached the database (crash after POST)."""
    try:
        page = client.list_live(custom_metadata={"job_id": job.id}, limit=10)
    except GladiaError as exc:
        log.warning("cannot look for an orphaned session: %s", exc)
        raise Deferred(f"orphan lookup failed: {exc}", random.uniform(5, 15)) from None
    items = [i for i in page.get("items") or [] if (i.get("custom_metadata") or {}).get("job_id") == job.id]
    return items[0] if items else None


class ClaimLost(Exception):
    """Another run owns the job now; this run stops without touching the session it leaves to it."""


def _record_session(settings: Settings, job_id: str, run_id: str, created: dict[str, Any],
                    replaces: frozenset[str]) -> tuple[Optional[str], Optional[str], bool]:
    """Record ``created`` as the job's session unless another one is recorded; whether or not the claim holds.

    The session belongs to the job, not to the run that created it: a run
    that lost its claim while POST /v2/live was in flight still records it,
    so the job's next owner adopts it from the row instead of creating a
    second one (and the receiver, which binds a session from its
    ``start_session`` callback when the row has none, agrees). The UPDATE is
    conditional: the row takes this session when it has none, when it already
    names this one (the receiver got there first, without the socket URL), or
    when it names a session in ``replaces`` (orphans without a socket URL that
    this run found and deletes) and this run still owns the job, so nobody can
    have streamed into them. The UPDATE comes first in the transaction: on
    PostgreSQL it waits for a concurrent claim's row lock, so the owner read
    after it is current.

    Returns the row's (gladia_id, ws_url) after the write and whether this
    run owns the job.
    """
    from datetime import datetime

    values: dict[str, Any] = {"gladia_id": created["id"], "ws_url": created["url"]}
    created_at = created.get("created_at")
    if isinstance(created_at, str):
        try:
            values["gladia_created_at"] = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        except ValueError:
            pass
    takes = [Job.gladia_id.is_(None), Job.gladia_id == created["id"]]
    if replaces:
        takes.append((Job.gladia_id.in_(sorted(replaces))) & (Job.worker_id == run_id))
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id, or_(*takes)).values(**values))
        row = session.execute(select(Job.gladia_id, Job.ws_url, Job.worker_id).where(Job.id == job_id)).one()
    return row.gladia_id, row.ws_url, row.worker_id == run_id


def _delete_quietly(client: GladiaClient, gladia_id: str, why: str, url: Optional[str] = None) -> None:
    """End a session that holds no audio and never will (best effort).

    Gladia refuses to DELETE a session still waiting for audio; when the
    socket URL is known, ``stop_recording`` on it ends the session at once
    instead of leaving it to hold a concurrent-session place until its
    reconnect grace runs out. Its callbacks are refused by the receiver: the
    job's row names another session.
    """
    log.warning("ending session %s (%s)", gladia_id, why)
    try:
        client.delete_live(gladia_id)
        return
    except GladiaError as exc:
        if url is None:
            log.warning("could not delete session %s: %s", gladia_id, exc)
            return
    from websockets.sync.client import connect as connect_sync

    try:
        with connect_sync(url, open_timeout=5, close_timeout=5, proxy=None,
                          user_agent_header="webhook-service") as ws:
            ws.send(json.dumps({"type": "stop_recording"}))
    except Exception as exc:  # noqa: BLE001 - best effort: Gladia ends it after its grace anyway
        log.warning("could not end session %s: %s", gladia_id, exc)


def _ensure_session(settings: Settings, client: GladiaClient, job: Job, run_id: str) -> Optional[tuple[str, str]]:
    """(gladia_id, ws_url) of the job's one session, created if it has none. None: job failed.

    Raises :class:`ClaimLost` when another run owns the job (after recording
    any session this run created, for that run to adopt), :class:`Deferred`
    when another run's session is about to be recorded.
    """
    if job.gladia_id and job.ws_url:
        return job.gladia_id, job.ws_url
    callback_url = (settings.public_base_url.rstrip("/") + "/callbacks/gladia/"
                    + callback_token(job.id, settings.callback_signing_key))
    body = session_config.post_body(job.session_config or {}, callback_url=callback_url, job_id=job.id,
                                    batch_id=job.batch_id)
    # Sessions of this job that can never be fed (their socket URL was never recorded): replaced, then deleted.
    dead: set[str] = {job.gladia_id} if job.gladia_id else set()
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        orphan = _find_orphan(client, job)
        if orphan is not None:
            if isinstance(orphan.get("url"), str):
                log.warning("adopting session %s created by a run that crashed before recording it", orphan["id"])
                created = orphan
                break
            # Gladia's list does not return the socket URL: unless its creator records it meanwhile (read
            # from the row below), that session cannot be fed. It has received no audio: it is replaced
            # and deleted, so the job still ends up with exactly one session holding audio.
            dead.add(orphan["id"])
        try:
            created = client.create_live(body)
            break
        except GladiaRateLimited as exc:
            # Back-pressure (Gladia's own concurrency limit), not a failure.
            concurrency.release_slot(settings.database_url, job.id)
            raise Deferred(f"Gladia answered 429: {exc}", exc.retry_after or random.uniform(5, 20)) from None
        except (GladiaBadRequest, GladiaAuthError) as exc:
            _fail(settings, job.id, run_id, f"Gladia refused the session: {exc}")
            return None
        except GladiaError as exc:
            if attempt == CREATE_ATTEMPTS:
                concurrency.release_slot(settings.database_url, job.id)
                raise Deferred(f"cannot create the session: {exc}", random.uniform(10, 30)) from None
            log.warning("POST /v2/live failed (%s); looking for an orphan, then retrying", exc)
            time.sleep(min(5.0, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0))
    gladia_id, url = created["id"], created["url"]
    dead.discard(gladia_id)
    recorded_id, recorded_url, owner = _record_session(settings, job.id, run_id, created, frozenset(dead))
    if recorded_id != gladia_id:
        # Another session is the job's (another run recorded it, or the receiver bound it from its
        # start_session callback and its creator is about to record the URL): this one must hold no audio.
        _delete_quietly(client, gladia_id, f"the job already has session {recorded_id}", url)
        if owner and recorded_id and recorded_url:
            log.warning("adopting session %s recorded by another run", recorded_id)
            set_gladia_id(recorded_id)
            return recorded_id, recorded_url
        if not owner:
            raise ClaimLost(f"another run owns the job (session {recorded_id})")
        raise Deferred(f"session {recorded_id} of another run is being recorded", random.uniform(0.5, 1.5))
    set_gladia_id(gladia_id)
    for other in sorted(dead):
        _delete_quietly(client, other, "replaced: its socket URL was never recorded")
    if not owner:
        log.warning("session %s recorded for the job's new owner; this run lost its claim", gladia_id)
        raise ClaimLost("claim lost while creating the session")
    log.info("session %s created, socket %s", gladia_id, redact_ws_url(url))
    return gladia_id, url


def _run_claimed(settings: Settings, job: Job, run_id: str, max_attempts: int) -> str:
    fmt = _audio_facts(settings, job, run_id)
    if fmt is None:
        return "failed"
    _acquire_slot(settings, job, run_id)
    state = {"attempts": 0}

    def start(row: Job) -> None:
        row.attempts = (row.attempts or 0) + 1
        state["attempts"] = row.attempts
        row.advance("starting")

    _with_job(settings, job.id, run_id, start)
    if state["attempts"] > max_attempts:
        _fail(settings, job.id, run_id, f"gave up after {max_attempts} attempts; last error: {job.last_error}",
              reconcile=True)
        return "failed"
    client = GladiaClient.from_settings(settings)
    try:
        found = _ensure_session(settings, client, job, run_id)
        if found is None:
            return "failed"
        gladia_id, url = found
        _with_job(settings, job.id, run_id, lambda row: row.advance("streaming"))
        options = session_config.stream_options(job.session_config or {}, settings)

        rt = runtime(settings)

        async def session_alive() -> bool:
            def check() -> bool:
                try:
                    return client.get_live(gladia_id).get("status") not in ("done", "error")
                except GladiaNotFound:
                    return False
                except GladiaError:
                    return True
            return await asyncio.get_running_loop().run_in_executor(rt.db_pool, check)

        async def build() -> LiveStream:
            return LiveStream(url=url, path=job.source_path, fmt=fmt, start=job.bytes_acked or 0,
                                chunk_ms=options.chunk_ms, speed=options.speed, close_mode=settings.close_mode,
                                session_alive=session_alive, label=redact_ws_url(url) or gladia_id,
                                reconnects_before=job.reconnects or 0)

        stream = rt.run(build())
        rt.register(job.id, stream, run_id, settings)
        log.info("streaming %s from byte %d (chunk %d ms, speed %g)", job.source_path, stream.bytes_acked,
                 options.chunk_ms, options.speed)
        try:
            result = rt.run(stream.run())
        finally:
            rt.unregister(run_id)
        return _finish(settings, job, run_id, result, stream)
    finally:
        client.close()


def _finish(settings: Settings, job: Job, run_id: str, result: StreamResult, stream: LiveStream) -> str:
    now = utcnow()
    reconnects = (job.reconnects or 0) + result.reconnects

    def progress(row: Job) -> None:
        row.bytes_sent, row.bytes_acked, row.reconnects, row.heartbeat_at = (
            result.bytes_sent, result.bytes_acked, reconnects, now)
        if result.bytes_total is not None:
            row.bytes_total = result.bytes_total

    if result.outcome == "lost_claim" and stream.interrupted:
        # Worker shutdown: record where the stream stands and give the job back for another worker.
        _with_job(settings, job.id, run_id, progress)
        # Back-date the heartbeat: the sweeper re-drives the job at its next pass even if the re-queued
        # task dies with this worker (a filesystem broker holds delayed tasks in the worker's memory).
        _update_owned(settings, job.id, run_id, worker_id=None,
                      heartbeat_at=utcnow() - timedelta(seconds=settings.stale_heartbeat_s + 1),
                      last_error="worker shut down while streaming; resumed elsewhere")
        # The session lives on at Gladia: its slot stays with the job for the run that resumes it.
        concurrency.hold_slot(settings.database_url, job.id, lease_s(settings))
        raise Deferred("worker shutting down", 1.0, keep_slot=True)
    if result.outcome == "lost_claim":
        log.warning("another run owns the job now; this run stops")
        return "skipped: claim lost"
    if result.outcome == "failed_audio":
        _with_job(settings, job.id, run_id, progress)
        _fail(settings, job.id, run_id, result.error or "audio error", reconcile=True)
        return "failed"
    if result.outcome == "transient":
        _with_job(settings, job.id, run_id, progress)
        _release(settings, job.id, run_id, result.error)
        concurrency.release_slot(settings.database_url, job.id)
        raise Deferred(f"stream interrupted: {result.error}", random.uniform(5, 15))

    def closed(row: Job) -> None:
        progress(row)
        row.advance("stream_closed")
        row.worker_id = None
        if result.outcome == "complete":
            row.reconcile_after = now + timedelta(seconds=settings.reconcile_delay_s)
        else:  # the session ended or vanished under us: what Gladia kept is for reconciliation to settle
            row.last_error = (f"session ended before all audio was acknowledged "
                              f"({result.bytes_acked} of {result.bytes_total or row.bytes_total or '?'} bytes): "
                              f"{result.error or ''}").strip()[:2000]
            row.reconcile_after = now

    if not _with_job(settings, job.id, run_id, closed):
        log.warning("another run owns the job now; leaving the outcome to it")
        return "skipped: claim lost"
    concurrency.release_slot(settings.database_url, job.id)
    log.info("stream closed (%s): %d bytes acknowledged, %d reconnects", result.outcome, result.bytes_acked,
             result.reconnects)
    return "stream_closed"
