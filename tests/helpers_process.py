"""A server a test (or a benchmark) started: a free port for it, waiting until it is ready,
stopping it, the same way everywhere; or an http.server answering from a thread."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (other tests run beside this one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> Callable[[], bool]:
    """For `wait_ready`: whether `url` answers 200 now."""
    return lambda: httpx.get(url, timeout=1).status_code == 200


def wait_ready(proc: subprocess.Popen, ready: Callable[[], T], what: str, log: Path | None = None,
               timeout: float = 60, not_yet: tuple[type[Exception], ...] = (
                   OSError, httpx.HTTPError), every: float = 0.1) -> T:
    """Poll `ready()` every `every` seconds until it returns something truthy, and return that.
    An exception in `not_yet` (connection refused, a file not written yet) counts as not yet.
    Fails naming `what`, with the end of `log`, once `proc` has exited or `timeout` s passed."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what}: exited {proc.returncode}:\n{_tail(log)}")
        try:
            if result := ready():
                return result
        except not_yet:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not ready within {timeout} s:\n{_tail(log)}")
        time.sleep(every)


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-3000:] if log and log.exists() else ""


def stop_process(proc: subprocess.Popen, grace: float = 15) -> None:
    """Terminate `proc`, and kill it if it has not exited within `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class InThread:
    """`with` an http.server (`self.server`, set by the subclass) answering from a daemon
    thread; shut down and closed on the way out."""

    server: ThreadingHTTPServer

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
