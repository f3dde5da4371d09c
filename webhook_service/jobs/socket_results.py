"""What a job's session sends on its WebSocket, stored as if its callback had arrived.

A receiver that Gladia cannot reach (a laptop, a private network) gets no
callback, and a session whose callbacks all fail has no other real-time
source: with ``STORE_SOCKET_MESSAGES`` the worker asks the socket for the
message types the session's ``callback_config`` wants (``post_body``) and
sends each one it receives through the receiver's own normalization
(``ingest.normalize_message``, source ``websocket``). A message is known by
its content, so one received both ways is one ``events`` row.

The stream hands messages over on the event loop (:meth:`SocketResults.add`);
they are written in batches on threads of their own (the runtime's
``results_pool``, apart from the heartbeats'), never on the loop. A batch that
cannot be written is logged and left to reconciliation, which repairs whatever
is missing from ``GET /v2/live/:id``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from datetime import datetime
from typing import Any, Optional

from ..db import session_scope
from ..gladia.session_config import callback_flags, is_expected
from ..gladia.validation import InvalidMessage
from ..ingest import normalize_message
from ..models import SETTLED_STATES, Job, utcnow

log = logging.getLogger(__name__)


class SocketResults:
    """One job's socket messages, filtered by what the session wants and written in the background."""

    def __init__(self, database_url: str, job_id: str, gladia_id: str, session_config: Optional[dict[str, Any]],
                 executor: Executor, *, reconcile_delay_s: float):
        self.database_url = database_url
        self.reconcile_delay_s = reconcile_delay_s  # for an end_session to schedule the job's reconciliation
        self.job_id = job_id
        self.gladia_id = gladia_id
        self.flags = callback_flags(session_config)
        self.executor = executor
        self.stored = 0  # messages new to the events table
        self._pending: list[tuple[dict[str, Any], datetime]] = []
        self._writer: Optional[asyncio.Task] = None

    def add(self, message: dict[str, Any]) -> None:
        """Take one message off the socket (on the event loop); acknowledgements only if they are wanted."""
        if not is_expected(message, self.flags):
            return
        self._pending.append((message, utcnow()))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def drain(self) -> None:
        """Wait until every message taken so far is written (or given up)."""
        while self._writer is not None and not self._writer.done():
            await self._writer

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                self.stored += await loop.run_in_executor(self.executor, self._store, batch)
            except Exception as exc:  # noqa: BLE001 - reconciliation repairs what is not stored here
                log.warning("could not store %d socket message(s) of session %s (reconciliation will): %s: %s",
                            len(batch), self.gladia_id, type(exc).__name__, str(exc)[:300])

    def _store(self, batch: list[tuple[dict[str, Any], datetime]]) -> int:
        """One transaction: each message through the receiver's normalization; how many were new."""
        new = 0
        with session_scope(self.database_url) as session:
            job = session.get(Job, self.job_id)
            if job is None or job.gladia_id != self.gladia_id or job.state in SETTLED_STATES:
                return 0  # deleted, given another session, or settled: only reconciliation changes it now
            for message, received_at in batch:
                try:
                    new += normalize_message(session, message, source="websocket", job=job,
                                             gladia_id=self.gladia_id, received_at=received_at,
                                             reconcile_delay_s=self.reconcile_delay_s)
                except InvalidMessage as exc:  # checked before any write: the transaction is intact
                    log.warning("socket message of session %s not stored: %s", self.gladia_id, exc)
        return new
