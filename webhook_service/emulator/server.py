"""The emulator's HTTP and WebSocket server (aiohttp, one port).

Routes mirror Gladia's live v2 API (``/v2/live...``); ``/_emulator/...`` is
the admin API tests and operators use to inject faults and read the callback
ledger. Sessions live in memory (a restart forgets them); received audio is
spooled to files.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Awaitable
from urllib.parse import urlencode

from aiohttp import WSCloseCode, WSMsgType, web

from .callbacks import CallbackSender, Ledger
from .options import EmulatorOptions, FaultState, OptionError
from .schema import validate_request
from .session import Connection, LiveSession, iso_now

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 1024 * 1024  # Gladia closes with 1009 above 1 MiB
WATCHDOG_PERIOD_S = 0.25
STATUSES = ("queued", "processing", "done", "error")
CLOSE_UNKNOWN_TOKEN = 4404
CLOSE_SESSION_ENDED = 4410
CLOSE_BAD_MESSAGE = 4400


def error_response(request: web.Request, status: int, message: str,
                   validation_errors: list[str] | None = None, headers: dict | None = None) -> web.Response:
    """Gladia's common error body (camelCase ``statusCode``)."""
    body: dict[str, Any] = {"timestamp": iso_now(), "path": request.path,
                            "request_id": f"G-{uuid.uuid4().hex[:8]}", "statusCode": status, "message": message}
    if validation_errors is not None:
        body["validation_errors"] = validation_errors
    return web.json_response(body, status=status, headers=headers)


class Emulator:
    """All state of one emulator instance: sessions, faults, callbacks, ledger.

    It is the :class:`~.ports.SessionHost` of every session it creates.
    """

    def __init__(self, options: EmulatorOptions):
        self.options = options.validated()
        self.faults = FaultState(options.faults)
        self.ledger = Ledger()
        self.sessions: dict[str, LiveSession] = {}
        self.by_token: dict[str, LiveSession] = {}
        self._own_spool = not options.spool_dir
        self.spool_dir = options.spool_dir or tempfile.mkdtemp(prefix="gladia-emulator-")
        os.makedirs(self.spool_dir, exist_ok=True)
        self.executor: ThreadPoolExecutor | None = None
        if options.engine == "sphinx":
            self.executor = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2),
                                               thread_name_prefix="emulator-asr")
        self.callbacks: CallbackSender | None = None  # created on the loop at startup
        self._tasks: set[asyncio.Task] = set()
        self._watchdog: asyncio.Task | None = None
        self.started_sessions = 0

    # ------------------------------------------------- what sessions use (SessionHost)

    @property
    def engine(self) -> str:
        return self.options.engine

    @property
    def max_session_s(self) -> float:
        return self.options.max_session_s

    def ack_delay_s(self) -> float:
        return self.faults.faults.ack_delay_s

    def send_callback(self, session_id: str, url: str, body: dict[str, Any]) -> None:
        assert self.callbacks is not None, "callbacks start with the app"
        self.callbacks.enqueue(session_id, url, body)

    # ------------------------------------------------------------- lifecycle

    def spawn(self, coro: Awaitable) -> asyncio.Task:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def on_startup(self, _app: web.Application) -> None:
        self.callbacks = CallbackSender(self.options, self.faults, self.ledger)
        await self.callbacks.start()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def on_shutdown(self, _app: web.Application) -> None:
        for session in self.sessions.values():
            if session.conn is not None:
                await session.conn.close(WSCloseCode.GOING_AWAY, "emulator shutting down", flush=False)

    async def on_cleanup(self, _app: web.Application) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.callbacks is not None:
            await self.callbacks.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        for session in self.sessions.values():
            session.spool.close()
        if self._own_spool:
            shutil.rmtree(self.spool_dir, ignore_errors=True)

    async def _watch(self) -> None:
        """End sessions that went silent (open socket, no audio) or never came back (no socket)."""
        o = self.options
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD_S)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.finishing or not session.active:
                    continue
                if session.conn is not None and now - session.last_activity > o.idle_timeout_s:
                    session.end_recording(f"no audio for {o.idle_timeout_s:g} s")
                elif (session.conn is None and session.disconnected_at is not None
                      and now - session.disconnected_at > o.resume_grace_s):
                    session.end_recording(f"no connection for {o.resume_grace_s:g} s")

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024 * 1024)
        app.on_startup.append(self.on_startup)
        app.on_shutdown.append(self.on_shutdown)
        app.on_cleanup.append(self.on_cleanup)
        app.router.add_post("/v2/live", self.post_live)
        app.router.add_get("/v2/live", self.get_live_or_ws)
        app.router.add_get("/v2/live/{id}", self.get_session)
        app.router.add_delete("/v2/live/{id}", self.delete_session)
        app.router.add_patch("/v2/live/{id}", self.patch_session)
        app.router.add_get("/v2/live/{id}/file", self.get_file)
        app.router.add_get("/_emulator/health", self.admin_health)
        app.router.add_get("/_emulator/faults", self.admin_get_faults)
        app.router.add_put("/_emulator/faults", self.admin_set_faults)
        app.router.add_post("/_emulator/faults", self.admin_set_faults)
        app.router.add_delete("/_emulator/faults", self.admin_reset_faults)
        app.router.add_get("/_emulator/ledger", self.admin_ledger)
        app.router.add_delete("/_emulator/ledger", self.admin_clear_ledger)
        app.router.add_post("/_emulator/callbacks/wait", self.admin_wait_callbacks)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        """Injected REST faults, authentication, and JSON error bodies for every /v2/ route."""
        if not request.path.startswith("/v2/"):
            return await handler(request)
        is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        if not is_ws:
            fault = self._rest_fault(request)
            if fault is not None:
                return fault
            key = request.headers.get("x-gladia-key")
            if not key:
                return error_response(request, 401, "no gladia key provided")
            if key not in self.options.api_keys:
                return error_response(request, 401, "gladia key not found")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error_response(request, exc.status, exc.reason)
            raise

    def _rest_fault(self, request: web.Request) -> web.Response | None:
        f = self.faults.faults
        if not (f.rest_error_rate or f.rest_429_rate):
            return None
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
        label = f"{request.method} {route}"
        if f.rest_fault_routes and not any(r.strip() in (request.method, label) for r in f.rest_fault_routes):
            return None
        if self.faults.chance(f.rest_429_rate):
            return error_response(request, 429, "too many requests (injected fault)", headers={"Retry-After": "1"})
        if self.faults.chance(f.rest_error_rate):
            return error_response(request, f.rest_error_status, "internal error (injected fault)")
        return None

    # ------------------------------------------------------------------ REST

    def _session_for(self, request: web.Request) -> LiveSession:
        session = self.sessions.get(request.match_info["id"])
        if session is None or session.api_key != request.headers.get("x-gladia-key"):
            raise web.HTTPNotFound(reason="live session not found")
        return session

    async def post_live(self, request: web.Request) -> web.Response:
        region = request.query.get("region")
        if region is not None and region not in ("us-west", "eu-west"):
            return error_response(request, 400, "invalid query",
                                  ['Field "region" must be one of the following values: us-west, eu-west'])
        unknown_query = sorted(set(request.query) - {"region"})
        if unknown_query:
            return error_response(request, 400, "invalid query",
                                  [f'Field "{name}" is not allowed' for name in unknown_query])
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return error_response(request, 400, f"invalid JSON body: {exc}", [])
        params, custom_metadata, errors = validate_request(body, strict=self.options.strict_schema)
        if errors:
            return error_response(request, 400, "body validation failed", errors)
        key = request.headers["x-gladia-key"]
        running = sum(1 for s in self.sessions.values() if s.api_key == key and s.active)
        if running >= self.options.max_sessions_per_key:
            return error_response(request, 429, f"maximum number of concurrent live sessions "
                                                f"({self.options.max_sessions_per_key}) reached")
        session = LiveSession(self, key, params, custom_metadata)
        self.sessions[session.id] = session
        self.by_token[session.token] = session
        self.started_sessions += 1
        scheme = "wss" if request.secure else "ws"
        url = f"{scheme}://{request.host}/v2/live?token={session.token}"
        return web.json_response({"id": session.id, "created_at": session.created_at, "url": url}, status=201)

    async def get_live_or_ws(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.websocket(request)
        return await self.list_sessions(request)

    async def get_session(self, request: web.Request) -> web.Response:
        return web.json_response(self._session_for(request).to_json())

    async def delete_session(self, request: web.Request) -> web.Response:
        session = self._session_for(request)
        if session.active:
            return error_response(request, 403, "live session is not in a deletable state (still running)")
        del self.sessions[session.id]
        self.by_token.pop(session.token, None)
        session.spool.remove()
        return web.Response(status=202)

    async def patch_session(self, request: web.Request) -> web.Response:
        session = self._session_for(request)
        raw = await request.read()
        if len(raw) > 100 * 1024:
            return error_response(request, 413, "payload too large")
        try:
            body = json.loads(raw or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return error_response(request, 400, "invalid JSON body", ["Body must be a JSON object"])
        if not isinstance(body, dict) or set(body) - {"post_session_metadata"} or not isinstance(
                body.get("post_session_metadata", {}), dict):
            return error_response(request, 400, "body validation failed",
                                  ['Field "post_session_metadata" must be an object'])
        session.post_session_metadata = body.get("post_session_metadata", {})
        return web.Response(status=204)

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        session = self._session_for(request)
        if not session.recording_started:
            raise web.HTTPNotFound(reason="no audio received for this live session")
        p = session.params
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                               "Content-Disposition": f'attachment; filename="{session.id}.wav"'})
        await response.prepare(request)
        for block in session.spool.iter_wav(p["encoding"], p["bit_depth"], p["sample_rate"], p["channels"]):
            await response.write(block)
        await response.write_eof()
        return response

    async def list_sessions(self, request: web.Request) -> web.Response:
        query, errors = _parse_list_query(request.query)
        if errors:
            return error_response(request, 400, "invalid query", errors)
        key = request.headers["x-gladia-key"]
        items = [s for s in self.sessions.values() if s.api_key == key and query.matches(s)]
        items.sort(key=lambda s: s.created_dt, reverse=True)
        page = items[query.offset:query.offset + query.limit]

        def link(new_offset: int) -> str:
            params = [(k, v) for k, v in request.query.items() if k not in ("offset", "limit")]
            params += [("offset", str(new_offset)), ("limit", str(query.limit))]
            return f"{request.scheme}://{request.host}{request.path}?{urlencode(params)}"

        nxt = link(query.offset + query.limit) if query.offset + query.limit < len(items) else None
        return web.json_response({"first": link(0), "current": link(query.offset), "next": nxt,
                                  "items": [s.to_json() for s in page]})

    # ------------------------------------------------------------- WebSocket

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, autoping=True)
        await ws.prepare(request)
        session = self.by_token.get(request.query.get("token", ""))
        if session is None:
            await ws.close(code=CLOSE_UNKNOWN_TOKEN, message=b"unknown session token")
            return ws
        if session.finishing or not session.active:
            await ws.close(code=CLOSE_SESSION_ENDED, message=b"session has already ended")
            return ws
        conn = Connection(ws)
        await session.attach(conn)
        try:
            await self._read(session, conn)
            if conn.close_started:
                # Closed from this side (end of session, cut): the handler must not return before the
                # close handshake is done, or the connection would be dropped without its close frame.
                await asyncio.wait_for(conn.closed.wait(), 15)
        finally:
            log.debug("session %s: socket closed with %s", session.id, ws.close_code)
            session.detach(conn, ws.close_code)
        return ws

    async def _read(self, session: LiveSession, conn: Connection) -> None:
        ws = conn.ws
        f = self.faults
        async for msg in ws:
            if conn.closing:
                break
            if msg.type == WSMsgType.BINARY:
                audio: bytes | None = msg.data
            elif msg.type == WSMsgType.TEXT:
                audio = None
                try:
                    payload = json.loads(msg.data)
                    kind = payload.get("type") if isinstance(payload, dict) else None
                except json.JSONDecodeError:
                    kind = None
                if kind == "stop_recording":
                    session.stop_recording()
                    continue
                if kind != "audio_chunk":
                    await conn.close(CLOSE_BAD_MESSAGE, "invalid message: expected audio_chunk or stop_recording")
                    break
                try:
                    chunk = payload["data"]["chunk"]
                    audio = base64.b64decode(chunk, validate=True)
                except (KeyError, TypeError, binascii.Error, ValueError):
                    session.emit("audio_chunk", acknowledged=False,
                                 error={"message": "data.chunk must be base64-encoded audio"}, data=None)
                    continue
            else:
                break  # close/error (frames over 1 MiB: aiohttp has closed with 1009)
            faults = f.faults
            conn.chunks += 1
            if (faults.ws_cut_after_chunks and conn.chunks > faults.ws_cut_after_chunks) or f.chance(
                    faults.ws_cut_rate):
                # The chunk is dropped unacknowledged: the client resends it after reconnecting.
                await conn.close(faults.ws_cut_code, "connection cut (injected fault)", flush=True)
                break
            session.receive_audio(audio)

    # ------------------------------------------------------------- admin API

    async def admin_health(self, _request: web.Request) -> web.Response:
        active = sum(1 for s in self.sessions.values() if s.active)
        return web.json_response({"status": "ok", "engine": self.options.engine, "sessions": len(self.sessions),
                                  "active_sessions": active, "started_sessions": self.started_sessions})

    async def admin_get_faults(self, _request: web.Request) -> web.Response:
        return web.json_response(self.faults.faults.as_dict())

    async def admin_set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            base = self.faults.faults if request.method == "POST" else type(self.faults.faults)()
            self.faults.set(base.updated(changes))
        except (ValueError, OptionError) as exc:
            return error_response(request, 400, str(exc), [str(exc)])
        return web.json_response(self.faults.faults.as_dict())

    async def admin_reset_faults(self, _request: web.Request) -> web.Response:
        self.faults.set(type(self.faults.faults)())
        return web.json_response(self.faults.faults.as_dict())

    async def admin_ledger(self, request: web.Request) -> web.Response:
        return web.json_response(self.ledger.summary(request.query.get("session_id")))

    async def admin_clear_ledger(self, _request: web.Request) -> web.Response:
        self.ledger.clear()
        return web.Response(status=204)

    async def admin_wait_callbacks(self, request: web.Request) -> web.Response:
        try:
            timeout = float(request.query.get("timeout", "30"))
        except ValueError:
            return error_response(request, 400, "timeout must be a number")
        assert self.callbacks is not None
        idle = await self.callbacks.wait_idle(timeout)
        return web.json_response({"idle": idle})


LIST_FILTERS = ("offset", "limit", "status", "date", "before_date", "after_date", "custom_metadata")


@dataclass
class _ListQuery:
    """The filters and the page of ``GET /v2/live``."""

    offset: int = 0
    limit: int = 20
    statuses: list[str] = field(default_factory=list)
    day: date | None = None
    before: datetime | None = None
    after: datetime | None = None
    metadata: dict | None = None  # custom_metadata={"k": v} (JSON, values compared as they are)
    bracket: dict[str, str] = field(default_factory=dict)  # custom_metadata[k]=v (the SDK's form, as text)

    def matches(self, session: LiveSession) -> bool:
        if self.statuses and session.status not in self.statuses:
            return False
        created = session.created_dt
        if ((self.day is not None and created.date() != self.day)
                or (self.before is not None and created >= self.before)
                or (self.after is not None and created <= self.after)):
            return False
        metadata = session.custom_metadata
        if self.metadata is not None and not (isinstance(metadata, dict) and all(
                metadata.get(k) == v for k, v in self.metadata.items())):
            return False
        return not self.bracket or (isinstance(metadata, dict) and all(
            k in metadata and _query_text(metadata[k]) == v for k, v in self.bracket.items()))


def _query_integer(q: Any, name: str, default: int, minimum: int, errors: list[str]) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        errors.append(f'Field "{name}" must be an integer >= {minimum}')
        return default
    return value


def _query_dates(q: Any, query: _ListQuery, errors: list[str]) -> None:
    try:
        if "date" in q:
            query.day = date.fromisoformat(q["date"])
        if "before_date" in q:
            query.before = _parse_datetime(q["before_date"])
        if "after_date" in q:
            query.after = _parse_datetime(q["after_date"])
    except ValueError as exc:
        errors.append(f"invalid date: {exc}")


def _query_metadata(q: Any, query: _ListQuery, errors: list[str]) -> None:
    if "custom_metadata" in q:
        try:
            query.metadata = json.loads(q["custom_metadata"])
        except json.JSONDecodeError:
            query.metadata = None
        if not isinstance(query.metadata, dict):
            query.metadata = None
            errors.append('Field "custom_metadata" must be a JSON object')
    # The official SDK sends the filter as custom_metadata[key]=value (qs style, values as strings).
    query.bracket = {k[len("custom_metadata["):-1]: v for k, v in q.items()
                     if k.startswith("custom_metadata[") and k.endswith("]")}


def _parse_list_query(q: Any) -> tuple[_ListQuery, list[str]]:
    """``GET /v2/live``'s query string, or the ``validation_errors`` it deserves (all of them)."""
    errors: list[str] = []
    query = _ListQuery(offset=_query_integer(q, "offset", 0, 0, errors),
                       limit=_query_integer(q, "limit", 20, 1, errors))
    query.statuses = [s for raw in q.getall("status", []) for s in raw.split(",") if s]
    for status in query.statuses:
        if status not in STATUSES:
            errors.append(f'Field "status" must be one of the following values: {", ".join(STATUSES)}')
    _query_dates(q, query, errors)
    _query_metadata(q, query, errors)
    unknown = sorted(k for k in set(q) - set(LIST_FILTERS) if not k.startswith("custom_metadata["))
    errors += [f'Field "{name}" is not allowed' for name in unknown]
    return query, errors


def _query_text(value: Any) -> str:
    """How a metadata value reads in a query string (as Python's and the SDK's str() writes it)."""
    return value if isinstance(value, str) else str(value)


def _parse_datetime(raw: str) -> datetime:
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def create_app(options: EmulatorOptions) -> web.Application:
    return Emulator(options).app()


def run(options: EmulatorOptions) -> None:
    """Serve until interrupted (the ``webhook-service emulator`` command)."""
    app = create_app(options)
    web.run_app(app, host=options.host, port=options.port, print=lambda line: log.info(line),
                access_log=None, shutdown_timeout=5)
