"""The HTTP server the API runs in: uvicorn (uvloop + httptools), with the bounds it lacks.

uvicorn's httptools protocol reads a request head of any size (a 64 MB header is buffered
whole while other clients wait) and never closes a connection that opened but did not finish
sending its request. `BoundedHttpTools` adds both bounds:

- the request line and headers together at most `MAX_HEAD_BYTES` (431 and close beyond);
- a request must arrive whole (head and body) within `request_timeout` seconds of its first
  byte, or of the connection opening (408 and close otherwise); an idle keep-alive
  connection closes after `timeout_keep_alive` seconds, as before.
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 32 * 1024  # nginx's default is 4 x 8 KiB header buffers
REQUEST_TIMEOUT = 10.0  # seconds for a client to send one whole request
KEEP_ALIVE_TIMEOUT = 5  # seconds an idle keep-alive connection stays open


class BoundedHttpTools(HttpToolsProtocol):
    """HttpToolsProtocol with a bounded request head and a deadline to send a request."""

    request_timeout: float = REQUEST_TIMEOUT
    max_head_bytes: int = MAX_HEAD_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._head_bytes = 0
        self._in_head = True
        self._any_bytes = False
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        self._any_bytes = True
        self._arm()
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes \
                and not self.transport.is_closing():
            self._refuse(431, "Request Header Fields Too Large",
                         f"request line and headers over {self.max_head_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete \
                and self.cycle.response_started:
            self.transport.close()  # mid-answer: nothing more to say
        elif self._any_bytes:
            self._refuse(408, "Request Timeout",
                         f"the request did not arrive within {self.request_timeout:g} s")
        else:
            self.transport.close()  # opened and said nothing

    def _refuse(self, status: int, phrase: str, message: str) -> None:
        """Answer with `status` and close, whatever state the request is in."""
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app, if it started, hears a disconnect
            self.cycle.message_event.set()
        body = message.encode()
        self.transport.write(b"".join([
            f"HTTP/1.1 {status} {phrase}\r\n".encode(),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n", body]))
        self.transport.close()


def protocol(request_timeout: float = REQUEST_TIMEOUT,
             max_head_bytes: int = MAX_HEAD_BYTES) -> type[BoundedHttpTools]:
    """The protocol class with these bounds (uvicorn takes a class, not an instance)."""
    return type("BoundedHttpTools", (BoundedHttpTools,),
                {"request_timeout": request_timeout, "max_head_bytes": max_head_bytes})


def config(app, host: str = "127.0.0.1", port: int = 8000,
           request_timeout: float = REQUEST_TIMEOUT, max_head_bytes: int = MAX_HEAD_BYTES,
           keep_alive: int = KEEP_ALIVE_TIMEOUT) -> uvicorn.Config:
    """One worker, uvloop + bounded httptools, no access log: the lean path the budget needs."""
    return uvicorn.Config(app, host=host, port=port, loop="uvloop",
                          http=protocol(request_timeout, max_head_bytes),
                          timeout_keep_alive=keep_alive, access_log=False,
                          log_level="warning", timeout_graceful_shutdown=5)


def serve(app, host: str = "127.0.0.1", port: int = 8000, **bounds) -> None:
    """Run `app` until interrupted."""
    uvicorn.Server(config(app, host, port, **bounds)).run()
