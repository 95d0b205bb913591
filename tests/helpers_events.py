"""Events test helpers: a throw-away Redis server (Debian `redis-server`) on a free port of
127.0.0.1, password-protected, in a temporary folder."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PASSWORD_VAR = "LIFECYCLE_TEST_REDIS_PASSWORD"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """`redis-server` as a subprocess; `url` names the password as ${PASSWORD_VAR}, `direct_url`
    holds it (for the test's own client)."""

    def __init__(self):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            pytest.fail("redis-server not found: install the Debian package 'redis-server' "
                        "(tools/system-packages.sh, run by make test)")
        self.home = Path(tempfile.mkdtemp(prefix="lifecycle-redis-"))
        self.password, self.port = secrets.token_hex(16), _free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.home),
             "--requirepass", self.password, "--save", "", "--appendonly", "no",
             "--logfile", str(self.home / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://:${{{PASSWORD_VAR}}}@127.0.0.1:{self.port}/0"
        self.direct_url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"
        self.env = {PASSWORD_VAR: self.password}
        self.client = self._connect()

    def _connect(self, timeout: float = 20):
        import redis

        deadline = time.monotonic() + timeout
        while True:
            try:
                client = redis.Redis.from_url(self.direct_url)
                client.ping()
                return client
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.home / "redis.log"
                    pytest.fail(f"redis-server did not start:\n"
                                f"{log.read_text() if log.exists() else ''}")
                time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.home, ignore_errors=True)
