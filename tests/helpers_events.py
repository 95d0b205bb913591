"""Events test helpers: a throw-away Redis server (Debian `redis-server`) on a free port of
127.0.0.1, password-protected, in a temporary folder."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers_process import free_port, stop_process, wait_ready

PASSWORD_VAR = "LIFECYCLE_TEST_REDIS_PASSWORD"


class RedisServer:
    """`redis-server` as a subprocess; `url` names the password as ${PASSWORD_VAR}, `direct_url`
    holds it (for the test's own client)."""

    def __init__(self):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            pytest.fail("redis-server not found: install the Debian package 'redis-server' "
                        "(tools/system-packages.sh, run by make test)")
        self.home = Path(tempfile.mkdtemp(prefix="lifecycle-redis-"))
        self.password, self.port = secrets.token_hex(16), free_port()
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

        client = redis.Redis.from_url(self.direct_url)
        try:
            wait_ready(self.proc, client.ping, "redis-server", self.home / "redis.log", timeout,
                       (redis.ConnectionError,), every=0.05)
        except BaseException:
            stop_process(self.proc)
            raise
        return client

    def stop(self) -> None:
        self.client.close()
        stop_process(self.proc)
        shutil.rmtree(self.home, ignore_errors=True)
