"""The receiver as production runs it, for tests and benchmarks: gunicorn and nginx as subprocesses.

``ReceiverStack`` starts ``webhook-service web`` (gunicorn, with the options of
``gunicorn_conf``) and, unless told otherwise, ``webhook-service proxy`` (nginx)
in front of it, each writing its stdout and stderr to files that a test reads
afterwards. ``Tricklers`` are slow clients: each holds a connection open and
sends one byte a second, reconnecting when the server closes it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from webhook_service.demo import free_port, stop_process_groups

ROOT = Path(__file__).resolve().parent.parent


def signing_key() -> str:
    """A production-grade callback signing key (43 random characters)."""
    return secrets.token_urlsafe(32)


class ReceiverStack:
    """gunicorn (``workers`` processes, threads as ``gunicorn_conf``) on the database ``database_url``, behind nginx when ``proxy``."""

    def __init__(self, database_url: str, workdir: Path, *, key: str, proxy: bool = True, workers: int = 2,
                 dev: bool = False, access_log: bool = True):
        self.workdir = workdir
        self.access_log = access_log
        self.key = key
        self.proxy = proxy
        self.gunicorn_port = free_port()
        self.proxy_port = free_port() if proxy else None
        self.port = self.proxy_port or self.gunicorn_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, DATABASE_URL=database_url, CALLBACK_SIGNING_KEY=key,
                        DATA_DIR=str(workdir / "data"), CELERY_BROKER_URL="memory://", LOG_LEVEL="INFO",
                        PUBLIC_BASE_URL=self.url, FORWARDED_ALLOW_IPS="127.0.0.1")
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.workers = workers
        self.dev = dev
        self.procs: list[subprocess.Popen] = []

    def log(self, name: str) -> str:
        """The text a process wrote: ``web.out``, ``web.err``, ``proxy.out``, ``proxy.err``."""
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, text: str, count: int, timeout_s: float = 15) -> int:
        """How many times ``text`` is in the log ``name`` once it reaches ``count`` or ``timeout_s`` passed.

        A server writes its access-log line after the answer (nginx after its lingering close).
        """
        deadline = time.monotonic() + timeout_s
        while (found := self.log(name).count(text)) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return found

    def _spawn(self, name: str, args: list[str]) -> None:
        out = open(self.workdir / f"{name}.out", "wb")
        err = open(self.workdir / f"{name}.err", "wb")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "webhook_service.cli", *args], env=self.env,
                                           cwd=ROOT, stdout=out, stderr=err, start_new_session=True))
        out.close()
        err.close()

    def start(self) -> "ReceiverStack":
        web = ["web", "--host", "127.0.0.1", "--port", str(self.gunicorn_port), "--workers", str(self.workers)]
        self._spawn("web", web + (["--dev"] if self.dev else []) + ([] if self.access_log else ["--no-access-log"]))
        if self.proxy:
            self._spawn("proxy", ["proxy", "--listen", f"127.0.0.1:{self.proxy_port}",
                                  "--upstream", f"127.0.0.1:{self.gunicorn_port}"])
        self._wait_ready(timeout_s=40)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a receiver process exited:\n{self.log('web.err')}\n{self.log('proxy.err')}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the receiver did not start:\n{self.log('web.err')}\n{self.log('proxy.err')}")

    def stop(self) -> None:
        stop_process_groups(self.procs, grace_s=10)
        self.procs.clear()

    def post(self, path: str, body: dict, timeout_s: float = 30) -> tuple[int, dict, float]:
        """POST JSON; (status, parsed body, seconds until the whole answer was read)."""
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, json.loads(raw or b"null"), time.monotonic() - started


@dataclass
class Tricklers:
    """``count`` slow clients against ``port``, each sending one byte per ``interval_s``.

    Half trickle a request header, half send a whole header announcing a large
    body and trickle the body; a connection the server closes is opened again,
    so ``count`` connections trickle for as long as they run.
    """

    port: int
    path: str
    count: int = 50
    interval_s: float = 1.0
    bytes_sent: int = 0
    connections_opened: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _payload(self, header_trickler: bool) -> tuple[bytes, bytes]:
        """(what is sent at once, what is then sent a byte at a time)."""
        if header_trickler:
            return b"", (f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         + "X-Padding: " + "a" * 4000 + "\r\n\r\n").encode()
        head = (f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n").encode()
        return head, b"{" + b" " * 99_999

    def _run(self, header_trickler: bool) -> None:
        prefix, slow = self._payload(header_trickler)
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    with self._lock:
                        self.connections_opened += 1
                    if prefix:
                        sock.sendall(prefix)
                    for byte in slow:
                        if self._stop.wait(self.interval_s):
                            return
                        sock.sendall(bytes([byte]))
                        with self._lock:
                            self.bytes_sent += 1
            except OSError:
                if self._stop.wait(0.2):
                    return

    def start(self) -> "Tricklers":
        for i in range(self.count):
            thread = threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
