"""Resident memory of the Gladia emulator (sphinx engine) over many sequential sessions.

    .venv/bin/python bench/bench_emulator_memory.py [--sessions 200] [--limit-mb 400]

The emulator runs as its own process (``webhook-service emulator --engine
sphinx``). One session after the other, each POSTs /v2/live, streams one of
the speech files of tests/data at once (100 ms chunks), sends
``stop_recording`` and reads every message until the emulator closes the
socket after ``end_session``; every tenth session sends no audio at all. The
emulator's resident set (``VmRSS``) is read after each session, its peak
(``VmHWM``) at the end. Exit status 1 when the final or peak resident memory
is above ``--limit-mb``. bench/README.md keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
AUDIO = sorted((ROOT / "tests" / "data").glob("*.wav"))
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhook_service.cli", "emulator", "--engine", "sphinx", "--port", str(port),
         "--api-key", KEY],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        env={**os.environ, "LOG_LEVEL": "WARNING"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the emulator did not start")


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_session(url: str, audio: bytes) -> str:
    """One whole session; returns its final transcript as the socket delivered it."""
    created = requests.post(f"{url}/v2/live", json={}, headers={"x-gladia-key": KEY}, timeout=30)
    created.raise_for_status()
    finals = []
    with connect(created.json()["url"], compression=None, max_size=None, open_timeout=10) as ws:
        for i in range(0, len(audio), 3200):
            ws.send(audio[i:i + 3200])
        ws.send(json.dumps({"type": "stop_recording"}))
        for raw in ws:  # until the emulator closes after end_session
            message = json.loads(raw)
            if message["type"] == "transcript" and message["data"]["is_final"]:
                finals.append(message["data"]["utterance"]["text"].strip())
    return " ".join(finals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--limit-mb", type=float, default=400.0)
    args = parser.parse_args()

    proc, url = start_emulator()
    files = [path.read_bytes() for path in AUDIO]  # WAV headers included: the emulator skips them
    try:
        idle = memory_mb(proc.pid, "VmRSS")
        print(f"emulator idle: {idle:.0f} MB resident")
        started = time.monotonic()
        samples: list[float] = []
        empty_transcripts = 0
        for n in range(1, args.sessions + 1):
            without_audio = n % 10 == 0
            text = one_session(url, b"" if without_audio else files[n % len(files)])
            empty_transcripts += not without_audio and not text
            samples.append(memory_mb(proc.pid, "VmRSS"))
            if n % 20 == 0 or n == 1:
                print(f"after {n:4d} sessions: {samples[-1]:6.0f} MB resident ({time.monotonic() - started:.0f} s)",
                      flush=True)
        peak = memory_mb(proc.pid, "VmHWM")
        final = samples[-1]
        print(f"\n{args.sessions} sequential sessions ({args.sessions // 10} without audio) in "
              f"{time.monotonic() - started:.0f} s; resident memory: idle {idle:.0f} MB, after the first session "
              f"{samples[0]:.0f} MB, final {final:.0f} MB, peak {peak:.0f} MB (limit {args.limit_mb:.0f} MB); "
              f"sessions with audio and no transcript: {empty_transcripts}")
        ok = final < args.limit_mb and peak < args.limit_mb and not empty_transcripts
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
