"""Benchmark of the Gladia emulator: session starts per second, concurrent real-time
streams (vad engine), and the sphinx engine's real-time factor.

    .venv/bin/python bench/bench_emulator.py [--streams 50,100,200,400] [--seconds 10]

The emulator runs as its own process (``webhook-service emulator``) so the
load generator's CPU is not counted in it (both share the machine, though).
Results go to stdout as a table; bench/README.md keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import wave
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(engine: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhook_service.cli", "emulator", "--engine", engine, "--port", str(port),
         "--api-key", KEY, "--max-sessions-per-key", "100000", "--resume-grace", "600", "--idle-timeout", "600"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "LOG_LEVEL": "WARNING"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("emulator did not start")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_starts(url: str, total: int = 1000, concurrency: int = 20) -> float:
    """POST /v2/live as fast as ``concurrency`` clients can; sessions per second."""
    async with aiohttp.ClientSession(headers={"x-gladia-key": KEY}) as http:
        queue = list(range(total))

        async def worker():
            while queue:
                queue.pop()
                async with http.post(f"{url}/v2/live", json={}) as resp:
                    assert resp.status == 201, await resp.text()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - started)


async def one_stream(http: aiohttp.ClientSession, url: str, seconds: float, latencies: list[float],
                     lags: list[float]) -> None:
    """A real-time stream: 100 ms of 16 kHz PCM every 100 ms, measuring each ack's latency."""
    async with http.post(f"{url}/v2/live", json={"messages_config": {"receive_speech_events": False}}) as resp:
        session = await resp.json()
    rate = 16000
    t = np.arange(rate * seconds) / rate
    audio = (np.sin(2 * np.pi * 300 * t) * 8000 * ((t % 2) < 1.2)).astype("<i2").tobytes()
    chunk = 3200
    sent_at: dict[int, float] = {}
    async with http.ws_connect(session["url"]) as ws:
        async def reader():
            async for msg in ws:
                data = json.loads(msg.data)
                if data["type"] == "audio_chunk":
                    end = data["data"]["byte_range"][1]
                    latencies.append(time.perf_counter() - sent_at.pop(end))
                elif data["type"] == "end_session":
                    return

        read_task = asyncio.create_task(reader())
        start = time.perf_counter()
        for i, pos in enumerate(range(0, len(audio), chunk)):
            due = start + i * 0.1
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > 0.02:  # more than 20 ms behind schedule
                lags.append(-delay)
            sent_at[pos + len(audio[pos:pos + chunk])] = time.perf_counter()
            await ws.send_bytes(audio[pos:pos + chunk])
        await ws.send_str(json.dumps({"type": "stop_recording"}))
        await asyncio.wait_for(read_task, 60)


async def _streams_in_process(url: str, count: int, seconds: float) -> tuple[list[float], list[float]]:
    latencies: list[float] = []
    lags: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers={"x-gladia-key": KEY}, connector=connector) as http:
        await asyncio.gather(*(one_stream(http, url, seconds, latencies, lags) for _ in range(count)))
    return latencies, lags


def _client_process(job: tuple[str, int, float]) -> tuple[list[float], list[float]]:
    return asyncio.run(_streams_in_process(*job))


def bench_streams(url: str, count: int, seconds: float, pid: int, processes: int) -> dict:
    """``count`` real-time streams from ``processes`` client processes (one Python client saturates early)."""
    from multiprocessing import Pool

    shares = [count // processes + (i < count % processes) for i in range(processes)]
    cpu0 = cpu_seconds(pid)
    wall0 = time.perf_counter()
    with Pool(processes) as pool:
        parts = pool.map(_client_process, [(url, n, seconds) for n in shares if n])
    wall = time.perf_counter() - wall0
    latencies = sorted(x for part in parts for x in part[0])
    lags = [x for part in parts for x in part[1]]
    return {"streams": count, "acks": len(latencies),
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
            "max_ms": 1000 * latencies[-1],
            "late_sends": len(lags),
            "emulator_cpu": (cpu_seconds(pid) - cpu0) / wall}


async def bench_sphinx(url: str, pid: int) -> dict:
    """One session fed a 10 s speech file as fast as possible: time to end_session / audio length."""
    path = ROOT / "samples" / "meeting.wav"
    with wave.open(str(path)) as w:
        duration = w.getnframes() / w.getframerate()
    data = path.read_bytes()
    cpu0 = cpu_seconds(pid)
    async with aiohttp.ClientSession(headers={"x-gladia-key": KEY}) as http:
        async with http.post(f"{url}/v2/live", json={}) as resp:
            session = await resp.json()
        started = time.perf_counter()
        async with http.ws_connect(session["url"], max_msg_size=0) as ws:
            for pos in range(0, len(data), 32000):
                await ws.send_bytes(data[pos:pos + 32000])
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            async for msg in ws:
                if json.loads(msg.data)["type"] == "end_session":
                    break
        elapsed = time.perf_counter() - started
        async with http.get(f"{url}/v2/live/{session['id']}") as resp:
            text = (await resp.json())["result"]["transcription"]["full_transcript"]
    return {"audio_s": duration, "elapsed_s": elapsed, "rtf": elapsed / duration,
            "cpu_rtf": (cpu_seconds(pid) - cpu0) / duration, "transcript": text, "rss_mb": peak_rss_mb(pid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="50,100,200,300", help="concurrent stream counts to try")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    parser.add_argument("--starts", type=int, default=1000, help="sessions to start for the start rate")
    parser.add_argument("--client-processes", type=int, default=3, help="load-generator processes")
    args = parser.parse_args()

    proc, url = start_emulator("vad")
    try:
        rate = asyncio.run(bench_starts(url, args.starts))
        print(f"session starts: {rate:.0f}/s ({args.starts} POST /v2/live, 20 concurrent clients)")
    finally:
        proc.terminate()
        proc.wait()
    print(f"{'streams':>8} {'acks':>7} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'late sends':>10} {'emu CPU':>8}")
    for count in (int(c) for c in args.streams.split(",")):
        proc, url = start_emulator("vad")
        try:
            r = bench_streams(url, count, args.seconds, proc.pid, args.client_processes)
        finally:
            proc.terminate()
            proc.wait()
        print(f"{r['streams']:>8} {r['acks']:>7} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {r['max_ms']:>7.1f} "
              f"{r['late_sends']:>10} {r['emulator_cpu']:>7.0%}")
    proc, url = start_emulator("sphinx")
    try:
        time.sleep(1)
        idle_rss = peak_rss_mb(proc.pid)
        r = asyncio.run(bench_sphinx(url, proc.pid))
    finally:
        proc.terminate()
        proc.wait()
    print(f"sphinx: {r['audio_s']:.1f} s of audio in {r['elapsed_s']:.2f} s -> real-time factor {r['rtf']:.3f} "
          f"(CPU {r['cpu_rtf']:.3f}); transcript: {r['transcript']!r}")
    print(f"sphinx memory: {idle_rss:.0f} MB idle, {r['rss_mb']:.0f} MB peak with one mono session")


if __name__ == "__main__":
    main()
