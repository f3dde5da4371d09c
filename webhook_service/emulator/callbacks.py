"""Callback delivery, with injected faults and an exact ledger.

Each session has its own queue and sender task, so callbacks of one session
arrive in order while a slow or failing receiver never holds up audio
handling or other sessions. Faults are decided when a message is queued (in
the order messages are produced, so a seeded run is reproducible) and written
to the ledger with the delivery outcome: the ledger is the ground truth a
reliability test compares the receiver's database against.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from .options import EmulatorOptions, FaultState

log = logging.getLogger(__name__)

REORDER_HOLD_S = 1.0  # a message held back for reordering waits at most this long for the next one


def message_key(message: dict) -> str:
    """sha256 of the canonical JSON of a message (same formula as the service's ingest)."""
    canonical = json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class LedgerEntry:
    seq: int
    session_id: str
    event: str
    message_key: str
    url: str
    created_at: str
    data_id: str | None
    # pending -> delivered | failed | dropped
    outcome: str = "pending"
    attempts: int = 0
    statuses: list[Any] = field(default_factory=list)
    drop: bool = False
    duplicate: bool = False
    delay: bool = False
    reorder: bool = False
    duplicated: bool = False
    # Attempts that timed out: the receiver may have stored the message anyway, so it can see it
    # once more on the retry without the ledger calling it a duplicate.
    timeouts: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class Ledger:
    """Every callback message the emulator meant to send, and what became of it."""

    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []

    def add(self, entry: LedgerEntry) -> None:
        self.entries.append(entry)

    def clear(self) -> None:
        self.entries.clear()

    def summary(self, session_id: str | None = None) -> dict:
        entries = [e for e in self.entries if session_id is None or e.session_id == session_id]
        totals = {"messages": len(entries), "attempts": sum(e.attempts for e in entries)}
        for outcome in ("delivered", "failed", "gone", "dropped", "pending"):
            totals[outcome] = sum(e.outcome == outcome for e in entries)
        totals["duplicated"] = sum(e.duplicated for e in entries)
        totals["timeouts"] = sum(e.timeouts for e in entries)
        totals["delayed"] = sum(e.delay and e.outcome != "dropped" for e in entries)
        totals["reordered"] = sum(e.reorder and e.outcome != "dropped" for e in entries)
        return {"totals": totals, "entries": [e.as_dict() for e in entries]}


class CallbackSender:
    """Background, per-session ordered POSTs with retries and injected faults."""

    def __init__(self, options: EmulatorOptions, faults: FaultState, ledger: Ledger):
        self.options = options
        self.faults = faults
        self.ledger = ledger
        self._queues: dict[str, asyncio.Queue] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._http: aiohttp.ClientSession | None = None
        self._seq = 0
        self._pending = 0
        self._ordinals: dict[str, int] = {}  # session -> order of its first callback
        self._counts: dict[tuple[str, str], int] = {}  # (session, event) -> messages so far
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(headers={"User-Agent": "gladia-emulator"})

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._http is not None:
            await self._http.close()

    def enqueue(self, session_id: str, url: str, body: dict) -> None:
        """Queue ``body`` (``{id, event, payload}``) for ``url``; returns at once."""
        payload = body["payload"]
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        self._seq += 1
        f = self.faults.faults
        entry = LedgerEntry(seq=self._seq, session_id=session_id, event=body["event"],
                            message_key=message_key(payload), url=url, created_at=payload.get("created_at", ""),
                            data_id=data.get("id") if isinstance(data.get("id"), str) else None)
        # Faults are keyed by (session order, event, index of that event in the session), so a seeded
        # run breaks the same messages even when messages of different kinds interleave differently.
        ordinal = self._ordinals.setdefault(session_id, len(self._ordinals))
        count = self._counts.get((session_id, entry.event), 0)
        self._counts[(session_id, entry.event)] = count + 1
        key = f"{ordinal}|{entry.event}|{count}"
        entry.drop = self.faults.chance(f.callback_drop_rate, key + "|drop")
        if not entry.drop:
            entry.duplicate = self.faults.chance(f.callback_duplicate_rate, key + "|duplicate")
            entry.delay = self.faults.chance(f.callback_delay_rate, key + "|delay")
            entry.reorder = self.faults.chance(f.callback_reorder_rate, key + "|reorder")
        self.ledger.add(entry)
        self._pending += 1
        self._idle.clear()
        queue = self._queues.setdefault(session_id, asyncio.Queue())
        queue.put_nowait((entry, json.dumps(body).encode("utf-8")))
        if session_id not in self._tasks:
            self._tasks[session_id] = asyncio.get_running_loop().create_task(self._run(session_id, queue))

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _done(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    async def _run(self, session_id: str, queue: asyncio.Queue) -> None:
        held = None
        try:
            while True:
                if queue.empty():
                    if held is None:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), REORDER_HOLD_S)
                    except asyncio.TimeoutError:
                        await self._deliver(*held)
                        held = None
                        continue
                else:
                    item = queue.get_nowait()
                if held is not None:
                    await self._deliver(*item)
                    await self._deliver(*held)
                    held = None
                elif item[0].reorder:
                    held = item
                else:
                    await self._deliver(*item)
        finally:
            self._tasks.pop(session_id, None)
            if queue.empty():
                self._queues.pop(session_id, None)

    async def _deliver(self, entry: LedgerEntry, body: bytes) -> None:
        try:
            if entry.drop:
                entry.outcome = "dropped"
                return
            if entry.delay:
                await asyncio.sleep(self.faults.faults.callback_delay_s)
            delivered = await self._post_with_retries(entry, body)
            entry.outcome = "delivered" if delivered else ("gone" if entry.statuses[-1:] == [410] else "failed")
            if delivered and entry.duplicate:
                entry.duplicated = await self._post_once(entry, body) is True
        finally:
            self._done()

    async def _post_with_retries(self, entry: LedgerEntry, body: bytes) -> bool:
        o = self.options
        for attempt in range(o.callback_retries + 1):
            if attempt:
                await asyncio.sleep(min(o.callback_backoff_s * 2 ** (attempt - 1), o.callback_backoff_max_s))
            if await self._post_once(entry, body):
                return True
            if entry.statuses[-1:] == [410]:  # Gone: the receiver will never take it, so it is not retried
                return False
        log.warning("callback %s for session %s failed after %d attempts", entry.event, entry.session_id,
                    entry.attempts)
        return False

    async def _post_once(self, entry: LedgerEntry, body: bytes) -> bool:
        assert self._http is not None
        entry.attempts += 1
        started = time.monotonic()
        try:
            async with self._http.post(entry.url, data=body, headers={"Content-Type": "application/json"},
                                       timeout=aiohttp.ClientTimeout(total=self.options.callback_timeout_s)) as resp:
                await resp.read()
                entry.statuses.append(resp.status)
                return 200 <= resp.status < 300
        except asyncio.TimeoutError:
            entry.timeouts += 1
            entry.statuses.append(f"timeout after {time.monotonic() - started:.1f}s")
        except aiohttp.ClientError as exc:
            entry.statuses.append(f"{type(exc).__name__}")
        return False
