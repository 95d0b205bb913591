"""The broker a worker talks to, kept to five calls so that another broker (Kafka: a consumer
group over topics, `commit` for ack, a producer for publish) would be one more module like
`RedisBroker`.

Redis Streams semantics: each event has an id ("1733140000000-0", increasing per stream); a
consumer group hands every event to one of its consumers and keeps it *pending* until it is
acknowledged; the pending events of a consumer that died are taken over with XAUTOCLAIM once
they have been idle `min_idle_ms`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

Event = tuple[str, str, bytes | None]   # (stream, event id, its data field: None if absent)


class Broker(Protocol):
    def read(self, count: int, block_ms: int) -> list[Event]:
        """Up to `count` new events for this consumer (waits up to `block_ms` for the first)."""

    def claim(self, min_idle_ms: int, count: int) -> list[Event]:
        """Events pending longer than `min_idle_ms` on any consumer, now this one's."""

    def publish(self, batches: dict[str, Sequence[bytes]]) -> None:
        """Append one event per payload to each stream, in order, in one round trip."""

    def ack(self, events: Sequence[tuple[str, str]]) -> None:
        """Done with these (stream, event id): they leave the pending list."""

    def lag(self) -> dict[str, dict]:
        """Per stream read: {"lag": events not yet delivered to the group, "pending": delivered
        and not yet acknowledged}."""


def redact(url: str) -> str:
    """A server URL without its password, for logs and manifests."""
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def expand_env(url: str, where: str = "the server URL") -> str:
    """Fill in ${VAR} / $VAR from the environment (passwords stay out of files and command
    lines); an unset one is an error rather than a literal '${VAR}' sent to the server."""
    import os

    from lifecycle.errors import StageError

    unset = [a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", url)
             if (a or b) not in os.environ]
    if unset:
        raise StageError(f"environment variable(s) not set: {', '.join(unset)} (named in "
                         f"{where})")
    return os.path.expandvars(url)


def connect(url: str):
    """A Redis client for `url` (already expanded), checked with a PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30, socket_keepalive=True)
    client.ping()
    return client


class RedisBroker:
    """Consumer `consumer` of group `group` on the streams `streams` of the Redis server at
    `url` (redis://[:password@]host:port/db); the group is created, from each stream's start,
    where it is missing. Published events go under the field `field`; `max_len` caps the
    streams published to (approximately, as XADD MAXLEN ~ does)."""

    def __init__(self, url: str, streams: Sequence[str], group: str, consumer: str,
                 field: bytes = b"data", max_len: int | None = None):
        import redis

        self.streams, self.group, self.consumer = list(streams), group, consumer
        self.field, self.max_len = field, max_len
        self.client = connect(url)
        self._xadd_many = _bytes(self.client.script_load(self.XADD_MANY))
        for stream in self.streams:
            try:
                self.client.xgroup_create(stream, group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self, count: int, block_ms: int) -> list[Event]:
        args = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block_ms:
            args += ["BLOCK", block_ms]
        reply = self._raw(*args, "STREAMS", *self.streams, *[">"] * len(self.streams))
        if isinstance(reply, dict):  # RESP3: {stream: events}; RESP2: [[stream, events]]
            reply = reply.items()
        return [(stream.decode(), event_id.decode(), self._data(fields))
                for stream, events in reply or () for event_id, fields in events]

    def _data(self, fields: list | dict | None) -> bytes | None:
        """The event's `field` value from its field list [name, value, ...]."""
        if isinstance(fields, dict):
            return fields.get(self.field)
        if fields and len(fields) == 2:
            return fields[1] if fields[0] == self.field else None
        return dict(zip(fields[::2], fields[1::2], strict=True)).get(self.field) if fields \
            else None

    def _roundtrip(self, *, packed: bytes | None = None, command: tuple = (),
                   replies: int = 1) -> list:
        """Send one pre-encoded command (RESP) or one command, read `replies` replies as the
        server sent them (the client library's reply callbacks would build more objects per
        event than the rest of the read). A failed exchange drops the connection."""
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            if packed is not None:
                connection.send_packed_command([packed])
            else:
                connection.send_command(*command)
            return [connection.read_response() for _ in range(replies)]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def _raw(self, *args):
        """One command, its reply as the server sent it."""
        return self._roundtrip(command=args)[0]

    def claim(self, min_idle_ms: int, count: int) -> list[Event]:
        out: list[Event] = []
        for stream in self.streams:
            start = "0-0"
            while len(out) < count:
                start, claimed, *deleted = self.client.xautoclaim(
                    stream, self.group, self.consumer, min_idle_ms, start_id=start,
                    count=count - len(out))
                out += [(stream, _text(i), (fields or {}).get(self.field))
                        for i, fields in claimed]
                if _text(start) == "0-0":
                    break
        return out

    # XADD of every payload to one stream in one command (each ARGV after the first two is a
    # payload): one reply per batch instead of one per event.
    XADD_MANY = """
    local n = 0
    for i = 3, #ARGV do
      if ARGV[1] == '' then
        redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i])
      else
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[2], ARGV[i])
      end
      n = n + 1
    end
    return n
    """

    def publish(self, batches: dict[str, Sequence[bytes]]) -> None:
        """XADD every payload, one server-side loop per stream, sent as pre-encoded
        commands: the client library's per-command work would cost more than the rest of a
        micro-batch."""
        import redis

        try:
            self._publish(batches)
        except redis.exceptions.NoScriptError:  # the server restarted: its scripts are gone
            self._xadd_many = _bytes(self.client.script_load(self.XADD_MANY))
            self._publish(batches)

    def _publish(self, batches: dict[str, Sequence[bytes]]) -> None:
        parts, count = [], 0
        for stream, payloads in batches.items():
            if not payloads:
                continue
            args = [b"EVALSHA", self._xadd_many, b"1", stream.encode(),
                    str(self.max_len or "").encode(), self.field]
            parts.append(b"*%d\r\n" % (len(args) + len(payloads)))
            parts += [b"$%d\r\n%s\r\n" % (len(a), a) for a in args]
            for payload in payloads:
                parts += [b"$%d\r\n" % len(payload), payload, b"\r\n"]
            count += 1
        if not count:
            return
        replies = self._roundtrip(packed=b"".join(parts), replies=count)
        expected = [len(p) for p in batches.values() if p]
        if replies != expected:
            raise RuntimeError(f"XADD of {expected} events answered {replies}")

    def ack(self, events: Sequence[tuple[str, str]]) -> None:
        by_stream: dict[str, list[str]] = {}
        for stream, event_id in events:
            by_stream.setdefault(stream, []).append(event_id)
        for stream, ids in by_stream.items():
            head = [b"XACK", stream.encode(), self.group.encode()]
            parts = [b"*%d\r\n" % (len(head) + len(ids))]
            parts += [b"$%d\r\n%s\r\n" % (len(a), a) for a in head]
            parts += [b"$%d\r\n%s\r\n" % (len(i), i.encode()) for i in ids]
            self._roundtrip(packed=b"".join(parts))

    def lag(self) -> dict[str, dict]:
        out = {}
        for stream in self.streams:
            mine = [g for g in self.client.xinfo_groups(stream) if _text(g["name"]) == self.group]
            out[stream] = ({"lag": mine[0].get("lag"), "pending": mine[0]["pending"]} if mine
                           else {"lag": None, "pending": 0})
        return out

    def close(self) -> None:
        self.client.close()


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
