"""The worker process's streaming runtime: one event loop for every stream, one progress writer.

Why one shared event loop per worker process: streaming is waiting (for the
next chunk's time, for acknowledgements), so hundreds of streams fit in one
thread; Celery's ``threads`` pool gives each task a thread that only blocks on
its stream's future, while all sockets, timers and decoding run on one loop
(see ``bench/bench_streaming.py`` for the measurements). Progress of every
stream of the process is written in one transaction per heartbeat interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import update

from ..config import Settings
from ..db import session_scope
from ..gladia.stream import LiveStream
from ..models import Job, utcnow
from . import slots

log = logging.getLogger(__name__)


class _Runtime:
    """The worker process's event loop (one thread) and its progress writer."""

    def __init__(self, heartbeat_interval_s: float):
        self.loop = asyncio.new_event_loop()
        self.db_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stream-db")
        # The results the sockets deliver (socket_results) are written apart: a burst of them must never
        # hold up a heartbeat, whose absence would make a live stream stop (fence_s).
        self.results_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stream-results")
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


def shutting_down() -> bool:
    """True once :func:`interrupt_all` ran: no new stream starts in this process."""
    return _shutting_down.is_set()


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
                slots.renew_slots(session, [e.job_id for e in owned], slots.lease_s(items[0].settings), now)
        except Exception:  # noqa: BLE001 - one unreachable database must not stop the others' heartbeats
            log.exception("progress write to %s failed", url.split("@")[-1])
            lost -= {e.run_id for e in items}
            continue
        written |= {e.run_id for e in owned}
    return written, lost
