"""Headless Chromium driven over the DevTools protocol, logged in through the dashboard's login page.

Shared by the dashboard's browser tests: they look at pages as an operator
would, after typing a token into the login form (the gate is never bypassed).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests
from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """A headless Chromium driven over the DevTools protocol: enough to log in and look at a page."""

    def __init__(self, profile: Path, size: str):
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={profile}", f"--window-size={size}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert self.proc.poll() is None and time.monotonic() < deadline, "Chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        target = next(p for p in pages if p["type"] == "page")
        self.stack = ExitStack()
        self.ws = self.stack.enter_context(connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self.calls = 0
        self.events: list[dict] = []
        self.call("Page.enable")

    def call(self, method: str, **params):
        self.calls += 1
        self.ws.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=90))
            if message.get("id") == self.calls:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str) -> None:
        while not any(m.get("method") == event for m in self.events):
            self.events.append(json.loads(self.ws.recv(timeout=90)))
        self.events.clear()

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def log_in_and_open(chromium: DevTools, url: str, token: str) -> None:
    """Open ``url`` through the login page (typing ``token``), then let its scripts run."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    chromium.open(f"{origin}/login?next=" + quote(url[len(origin):], safe=""))
    assert chromium.evaluate("document.title").startswith("Sign in")
    chromium.events.clear()
    chromium.evaluate(f"document.getElementById('token').value = {json.dumps(token)};"
                      "document.querySelector('#login form').submit()")
    chromium.wait_for("Page.loadEventFired")
    assert chromium.evaluate("location.href") == url  # logged in, back on the page asked for
    chromium.call("Emulation.setVirtualTimePolicy", policy="pauseIfNetworkFetchesPending", budget=2000)
    chromium.wait_for("Emulation.virtualTimeBudgetExpired")


def browse(url: str, shot: Path, token: str, size: str = "1400,1300") -> str:
    """Log in through the login page, load ``url``; save a screenshot; return the DOM after scripts ran."""
    chromium = DevTools(shot.parent / ("profile-" + shot.stem), size)
    try:
        log_in_and_open(chromium, url, token)
        dom = chromium.evaluate("document.documentElement.outerHTML")
        shot.write_bytes(base64.b64decode(chromium.call("Page.captureScreenshot", format="png")["data"]))
    finally:
        chromium.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return dom
