"""What a live session needs from the server that holds it, as a small interface.

:class:`~.session.LiveSession` depends on this Protocol, not on the server
module: the server (:class:`~.server.Emulator`) implements it, and a test can
hand a session any object that does. One direction only: the server knows
sessions, a session knows a host.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any, Awaitable, Optional, Protocol


class SessionHost(Protocol):
    """The services a session uses: spooling, recognition, faults, callbacks, background work."""

    spool_dir: str  # where each session spools the audio it receives
    executor: Optional[Executor]  # the thread pool recognition runs in (None: on the event loop)

    @property
    def engine(self) -> str:
        """The recognition engine each channel gets (``create_recognizer``'s name)."""

    @property
    def max_session_s(self) -> float:
        """Audio length after which a session's recording ends."""

    def ack_delay_s(self) -> float:
        """How long an acknowledgement waits before it is sent (an injected fault; 0 normally)."""

    def send_callback(self, session_id: str, url: str, body: dict[str, Any]) -> None:
        """Queue one callback POST for the session (sent in the background, in order)."""

    def spawn(self, coro: Awaitable) -> asyncio.Task:
        """Run ``coro`` in the background, kept alive until it ends."""
