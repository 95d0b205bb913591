"""Headless Chromium (Debian `chromium`) driven over the Chrome DevTools Protocol: open a page,
record every request it makes (Network.requestWillBeSent, which fires for file:, data: and
network URLs alike, before anything leaves the machine), read its DOM, take a screenshot."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.helpers_process import stop_process, wait_ready

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,900"]


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed: run `make system-packages` (Debian `chromium`)"
    return found


@dataclass
class Visit:
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    dom: str = ""  # document.documentElement.outerHTML after load
    screenshot: bytes = b""  # PNG of the whole page
    failed: list[str] = field(default_factory=list)  # Network.loadingFailed reasons


class Chromium:
    """`with Chromium(tmp) as browser: visit = browser.visit(url)`."""

    def __init__(self, profile: Path):
        self.profile = profile
        self.proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> Chromium:
        self.profile.mkdir(parents=True, exist_ok=True)
        self.log = open(self.profile / "chromium.log", "w")  # noqa: SIM115 - closed on exit
        self._closing = contextlib.ExitStack()
        self.proc = subprocess.Popen(
            [chromium_binary(), *FLAGS, f"--user-data-dir={self.profile}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "about:blank"], stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.ws = self._closing.enter_context(connect(
                self._page_socket(), max_size=None, open_timeout=30))
        except BaseException:
            self.__exit__()
            raise
        return self

    def _page_socket(self) -> str:
        """The page target's DevTools websocket: Chromium writes its port to the profile, the
        page target appears shortly after."""
        log = self.profile / "chromium.log"

        def port() -> str:
            return (self.profile / "DevToolsActivePort").read_text().split()[0]

        at = wait_ready(self.proc, port, "chromium's DevTools port", log,
                        not_yet=(FileNotFoundError, IndexError))

        def pages() -> list[dict]:
            return [t for t in httpx.get(f"http://127.0.0.1:{at}/json/list").json()
                    if t["type"] == "page"]

        return wait_ready(self.proc, pages, "chromium's page target", log)[0][
            "webSocketDebuggerUrl"]

    def __exit__(self, *exc) -> None:
        try:
            self._closing.close()
        finally:
            stop_process(self.proc)
            self.log.close()

    def call(self, method: str, visit: Visit | None = None, **params) -> dict:
        """Send one command; record the events that arrive meanwhile; return its result."""
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]
            self._record(message, visit)

    def _record(self, message: dict, visit: Visit | None) -> bool:
        """Note requests and failures; True when the page's load event has fired."""
        method = message.get("method")
        if visit is not None and method == "Network.requestWillBeSent":
            visit.requests.append(message["params"]["request"]["url"])
        if visit is not None and method == "Network.loadingFailed":
            visit.failed.append(message["params"].get("errorText", ""))
        return method == "Page.loadEventFired"

    def visit(self, url: str, settle: float = 1.0) -> Visit:
        """Open `url`, wait for its load event and `settle` seconds more (late requests),
        then read the DOM and take a full-page screenshot."""
        visit = Visit()
        self.call("Network.enable", visit)
        self.call("Page.enable", visit)
        self.call("Page.navigate", visit, url=url)
        deadline = time.monotonic() + 60
        while not self._record(json.loads(self.ws.recv(timeout=60)), visit):
            assert time.monotonic() < deadline, "the page did not finish loading"
        quiet_until = time.monotonic() + settle
        while (left := quiet_until - time.monotonic()) > 0:
            try:
                self._record(json.loads(self.ws.recv(timeout=left)), visit)
            except TimeoutError:
                break
        visit.dom = self.call("Runtime.evaluate", visit,
                              expression="document.documentElement.outerHTML",
                              returnByValue=True)["result"]["value"]
        shot = self.call("Page.captureScreenshot", visit, format="png",
                         captureBeyondViewport=True)
        visit.screenshot = base64.b64decode(shot["data"])
        return visit
