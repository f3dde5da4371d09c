"""Concurrent real-time streams in one process: this service's streamer vs the official `gladiaio-sdk`.

    .venv/bin/python bench/bench_streaming.py --streams 100 300 500 --seconds 20

For each client and each stream count, a fresh child process streams the same
16 kHz mono file into that many live sessions at once, in real time, against
the emulator (``vad`` engine) running in its own process. Sessions are created
beforehand over REST and are not part of the measured window, for both
clients (the SDK attaches with ``connect_session``). Measured in the child:

* CPU milliseconds per stream-second of audio (process CPU time over the
  window from the first connection to the last close, divided by streams x
  audio seconds);
* lateness of each paced chunk send against its drift-free schedule (p50,
  p99, max), chunks of 100 ms;
* resident memory per stream: peak RSS during the run minus RSS before the
  streams started, divided by the stream count;
* the number of streams whose every byte was acknowledged (ours) / that
  ended with code 1000 (SDK).

Both clients are driven by the same pacing loop; ours decodes the file with
PyAV (any format, resampling), the SDK side reads PCM with the ``wave``
module, as its samples do. The emulator shares the machine's two cores with
the client under test: at high stream counts it can become the bottleneck
(late acknowledgements), which the table reports rather than hides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_KEY = "bench-key"
CHUNK_MS = 100
SESSION_BODY = {
    "encoding": "wav/pcm", "sample_rate": 16000, "bit_depth": 16, "channels": 1,
    "messages_config": {"receive_final_transcripts": False, "receive_speech_events": False,
                        "receive_pre_processing_events": False, "receive_realtime_processing_events": False,
                        "receive_post_processing_events": False, "receive_acknowledgments": True,
                        "receive_errors": True, "receive_lifecycle_events": False},
}


def ramp_s(streams: int) -> float:
    """Streams start at random times over this many seconds (100 per second), for both clients.

    Sessions do not all open in the same second in production; opening 500
    WebSockets in one second would measure the handshakes, not the streaming.
    """
    return max(1.0, streams / 100)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def create_sessions(api_url: str, n: int) -> list[dict]:
    if api_url.startswith("sink:"):  # the ack-only sink needs no REST call: any token is a session
        port = api_url.split(":", 1)[1]
        return [{"id": f"sink-{i}", "url": f"ws://127.0.0.1:{port}/v2/live?token={i}"} for i in range(n)]
    from webhook_service.gladia.client import GladiaClient

    client = GladiaClient(api_url, API_KEY)
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda _: client.create_live(SESSION_BODY), range(n)))


class Sampler:
    """Peak RSS, sampled from a thread so that the event loop's own work is not disturbed."""

    def __init__(self):
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


# ------------------------------------------------------------------ clients

async def run_ours(sessions: list[dict], audio: Path, seconds: float) -> dict:
    from webhook_service.audio import PcmFormat
    from webhook_service.gladia.stream import LatencyRecorder, LiveStream

    lateness = LatencyRecorder()
    fmt = PcmFormat(16000, 1, 16)
    waits: list[float] = []

    async def one(session: dict) -> bool:
        await asyncio.sleep(random.uniform(0, ramp_s(len(sessions))))  # starts spread as in production
        stream = LiveStream(url=session["url"], path=str(audio), fmt=fmt, chunk_ms=CHUNK_MS, speed=1.0,
                            lateness=lateness)
        result = await stream.run()
        waits.append(stream.window_wait_s)
        return result.outcome == "complete" and result.bytes_acked == result.bytes_total

    ok = await asyncio.gather(*(one(s) for s in sessions))
    return {"ok": sum(ok), "lateness": lateness.samples, "ack_wait_s": sum(waits) / max(1, len(waits))}


async def run_sdk(sessions: list[dict], audio: Path, seconds: float, api_url: str) -> dict:
    from gladiaio_sdk import GladiaClient
    from gladiaio_sdk.v2.live.types import LiveV2ConnectSessionOptions

    if api_url.startswith("sink:"):
        api_url = "http://127.0.0.1:" + api_url.split(":", 1)[1]  # never called: sessions are attached, not created
    client = GladiaClient(api_key=API_KEY, api_url=api_url).live_v2_async()
    lateness: list[float] = []
    with wave.open(str(audio), "rb") as wav:
        frames_per_chunk = wav.getframerate() * CHUNK_MS // 1000
    loop = asyncio.get_running_loop()

    async def one(session: dict) -> bool:
        await asyncio.sleep(random.uniform(0, ramp_s(len(sessions))))
        live = client.connect_session(LiveV2ConnectSessionOptions(id=session["id"], url=session["url"]))
        ended = loop.create_future()
        live.on("ended", lambda msg: ended.done() or ended.set_result(getattr(msg, "code", None)))
        with wave.open(str(audio), "rb") as wav:
            t0 = loop.time()
            sent = 0
            while True:
                due = t0 + sent * CHUNK_MS / 1000
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                lateness.append(loop.time() - due)
                data = wav.readframes(frames_per_chunk)
                if not data:
                    break
                live.send_audio(data)
                sent += 1
        live.stop_recording()
        try:
            code = await asyncio.wait_for(ended, 120)
        except asyncio.TimeoutError:
            return False
        return code == 1000

    ok = await asyncio.gather(*(one(s) for s in sessions))
    return {"ok": sum(ok), "lateness": lateness}


def child(args) -> None:
    """One measurement in a fresh process; prints one JSON line."""
    import gc

    if args.client == "sdk":
        import gladiaio_sdk  # noqa: F401  (imports before the baseline)
    else:
        # The modules a worker process holds (the job orchestration imports the store, the client, the
        # stream): the size of the heap sets how often the garbage collector walks it, which is part of
        # the CPU a stream costs in a worker.
        import webhook_service.jobs.streaming  # noqa: F401
    sessions = create_sessions(args.api_url, args.n)
    gc.collect()
    baseline = rss_bytes()
    cpu0, wall0 = time.process_time(), time.monotonic()
    with Sampler() as sampler:
        if args.client == "ours":
            result = asyncio.run(run_ours(sessions, Path(args.audio), args.seconds))
        else:
            result = asyncio.run(run_sdk(sessions, Path(args.audio), args.seconds, args.api_url))
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    late = result["lateness"]
    print(json.dumps({
        "client": args.client, "streams": args.n, "ok": result["ok"], "wall_s": round(wall, 2),
        "cpu_ms_per_stream_s": round(cpu * 1000 / (args.n * args.seconds), 3),
        "late_p50_ms": round(percentile(late, 0.50) * 1000, 2),
        "late_p99_ms": round(percentile(late, 0.99) * 1000, 2),
        "late_max_ms": round(max(late) * 1000, 2) if late else None,
        "rss_per_stream_kb": round((sampler.peak - baseline) / args.n / 1024, 1),
        # Mean seconds per stream spent holding audio back because acknowledgements were late (server-side lag).
        "ack_wait_s": round(result["ack_wait_s"], 3) if "ack_wait_s" in result else None,
        "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


# --------------------------------------------------------------------- sink

def sink(port: int) -> None:
    """A WebSocket server that only acknowledges audio, as Gladia does, at the lowest cost possible.

    It tells the client's own cost and scheduling apart from a server that
    falls behind: the emulator runs a voice-activity engine, writes every
    byte to disk and keeps every message, all in one Python process. The
    sink speaks just enough RFC 6455 on a bare asyncio protocol: handshake,
    binary frames acknowledged with Gladia's ``byte_range``, ``stop_recording``
    answered by ``end_session`` and a 1000 close, close and ping frames.
    """
    import base64
    import hashlib
    import struct

    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def frame(opcode: int, payload: bytes) -> bytes:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        return head + payload

    class Sink(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport = transport
            self.buffer = bytearray()
            self.open = False
            self.total = 0

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            if not self.open:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).decode("latin-1")
                del self.buffer[:end + 4]
                key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                           if line.lower().startswith("sec-websocket-key:"))
                accept = base64.b64encode(hashlib.sha1(key.encode() + guid).digest()).decode()
                self.transport.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
                self.open = True
            buf = self.buffer
            while len(buf) >= 2:
                opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
                offset = 2
                if length == 126:
                    if len(buf) < 4:
                        return
                    length, offset = struct.unpack_from("!H", buf, 2)[0], 4
                elif length == 127:
                    if len(buf) < 10:
                        return
                    length, offset = struct.unpack_from("!Q", buf, 2)[0], 10
                masked = buf[1] & 0x80
                start = offset + (4 if masked else 0)
                if len(buf) < start + length:
                    return
                if opcode == 2:
                    before, self.total = self.total, self.total + length
                    self.transport.write(frame(1, (
                        '{"session_id":"s","created_at":"2026-01-01T00:00:00.000Z","type":"audio_chunk",'
                        '"acknowledged":true,"error":null,'
                        f'"data":{{"byte_range":[{before},{self.total}],"time_range":[0,0]}}}}').encode()))
                elif opcode in (1, 8, 9):
                    payload = bytes(buf[start:start + length])
                    if masked:
                        mask = buf[offset:offset + 4]
                        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                    if opcode == 9:
                        self.transport.write(frame(10, payload))
                    elif opcode == 8:
                        self.transport.write(frame(8, payload[:2]))
                        self.transport.close()
                        return
                    elif b"stop_recording" in payload:
                        self.transport.write(frame(1, b'{"session_id":"s","created_at":"2026-01-01T00:00:00.000Z",'
                                                      b'"type":"end_session"}'))
                        self.transport.write(frame(8, struct.pack("!H", 1000)))
                del buf[:start + length]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ------------------------------------------------------------------- parent

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 300, 500])
    parser.add_argument("--seconds", type=float, default=20.0, help="Audio per stream (real time).")
    parser.add_argument("--clients", nargs="+", default=["ours", "sdk"], choices=["ours", "sdk"])
    parser.add_argument("--servers", nargs="+", default=["emulator", "sink"], choices=["emulator", "sink"],
                        help="emulator: the Gladia emulator (vad engine); sink: an ack-only WebSocket server.")
    parser.add_argument("--emulator-url", help="Use a running emulator (API key 'bench-key') instead of starting one.")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink)
        return
    if args.child:
        child(args)
        return

    from webhook_service.audio import synth_speechlike

    workdir = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    audio = synth_speechlike(workdir / "speech.wav", args.seconds, sample_rate=16000, channels=1)
    servers: dict[str, tuple[str, subprocess.Popen | None]] = {}
    try:
        for server in args.servers:
            port = free_port()
            if server == "emulator" and args.emulator_url:
                servers[server] = (args.emulator_url, None)
                continue
            if server == "emulator":
                command = [sys.executable, "-m", "webhook_service.cli", "emulator", "--engine", "vad", "--port",
                           str(port), "--api-key", API_KEY, "--max-sessions-per-key", "100000", "--idle-timeout",
                           "120", "--resume-grace", "120", "--spool-dir", str(workdir / "spool")]
                url = f"http://127.0.0.1:{port}"
            else:
                command = [sys.executable, __file__, "--sink", str(port)]
                url = f"sink:{port}"
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                       stderr=(workdir / f"{server}.log").open("wb"), cwd=ROOT)
            servers[server] = (url, process)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    time.sleep(0.2)
        rows = []
        for server, (api_url, _process) in servers.items():
            for n in args.streams:
                for client in args.clients:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", "--client", client, "--n", str(n), "--api-url",
                         api_url, "--audio", str(audio), "--seconds", str(args.seconds)],
                        capture_output=True, text=True, cwd=ROOT, timeout=args.seconds * 10 + 300,
                    )
                    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
                    if out.returncode != 0 or not lines:
                        print(f"{client} x{n} on {server} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                        continue
                    row = dict(json.loads(lines[-1]), server=server)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        for _url, process in servers.values():
            if process is not None:
                process.terminate()
                process.wait(15)
    print()
    print("| server | client | streams | ok | CPU ms / stream-s | p50 late ms | p99 late ms | max late ms "
          "| ack wait s / stream | RSS KiB / stream |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = "webhook_service" if r["client"] == "ours" else "gladiaio-sdk 2.2.1"
        wait = "" if r.get("ack_wait_s") is None else r["ack_wait_s"]
        print(f"| {r['server']} | {name} | {r['streams']} | {r['ok']} | {r['cpu_ms_per_stream_s']} | "
              f"{r['late_p50_ms']} | {r['late_p99_ms']} | {r['late_max_ms']} | {wait} | {r['rss_per_stream_kb']} |")


if __name__ == "__main__":
    main()
