"""Run the emulator inside another program: a thread with its own event loop.

Used by the test fixtures, the demo and the benchmark. The handle talks to
the emulator through its own loop (``run_coroutine_threadsafe``), so callers
in any thread can change faults or read the ledger safely.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from typing import Any

from aiohttp import web

from .options import EmulatorOptions
from .server import Emulator


class RunningEmulator:
    """An emulator serving on a real port from a background thread."""

    def __init__(self, options: EmulatorOptions):
        self.emulator = Emulator(options)
        self.options = self.emulator.options
        self.api_key = self.options.api_keys[0]
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="gladia-emulator", daemon=True)
        self.host = self.options.host
        self.port = 0
        self.url = ""

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(self.emulator.app(), access_log=None, shutdown_timeout=2)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.options.port)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the only way to read port 0
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
            return
        self.url = f"http://{self.host}:{self.port}"
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        leftovers = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for task in leftovers:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        self._loop.close()

    def start(self, timeout: float = 10.0) -> "RunningEmulator":
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError("the emulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the emulator failed to start: {self._error}") from self._error
        return self

    def call(self, fn, *args, timeout: float = 30.0) -> Any:
        """Run ``fn(*args)`` (a coroutine function or plain function) on the emulator's loop."""
        async def runner():
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(timeout)

    # ----------------------------------------------------------- conveniences

    def set_faults(self, **changes: Any) -> dict:
        """Merge ``changes`` into the current faults (and re-seed); returns them all."""
        def apply() -> dict:
            self.emulator.faults.set(self.emulator.faults.faults.updated(changes))
            return self.emulator.faults.faults.as_dict()
        return self.call(apply)

    def reset_faults(self) -> dict:
        def apply() -> dict:
            self.emulator.faults.set(type(self.emulator.faults.faults)())
            return self.emulator.faults.faults.as_dict()
        return self.call(apply)

    def ledger(self, session_id: str | None = None) -> dict:
        """``{"totals": {...}, "entries": [...]}`` of every callback the emulator meant to send."""
        return self.call(self.emulator.ledger.summary, session_id)

    def wait_callbacks(self, timeout: float = 30.0) -> bool:
        """Wait until every queued callback was delivered, dropped or given up."""
        return self.call(self.emulator.callbacks.wait_idle, timeout, timeout=timeout + 5)

    def session(self, session_id: str) -> dict:
        """GET /v2/live/:id as the API shows it (raises KeyError when unknown)."""
        return self.call(lambda: self.emulator.sessions[session_id].to_json())

    def wait_session_done(self, session_id: str, timeout: float = 30.0) -> dict:
        async def wait() -> dict:
            session = self.emulator.sessions[session_id]
            await asyncio.wait_for(session.done.wait(), timeout)
            return session.to_json()
        return self.call(wait, timeout=timeout + 5)

    def received_audio(self, session_id: str) -> bytes:
        """The samples received for a session (WAV header of the stream stripped)."""
        def read() -> bytes:
            spool = self.emulator.sessions[session_id].spool
            return spool.path.read_bytes() if spool.size else b""
        return self.call(read)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def start_emulator(**options: Any) -> RunningEmulator:
    """Start an emulator on a free port (``port=0``) unless told otherwise; defaults: vad engine."""
    faults = options.pop("faults", None)
    base = EmulatorOptions(port=0, engine="vad")
    opts = replace(base, **options)
    if isinstance(faults, dict):
        opts = replace(opts, faults=opts.faults.updated(faults))
    elif faults is not None:
        opts = replace(opts, faults=faults)
    return RunningEmulator(opts).start()
