"""A real Prometheus server (Debian `prometheus`) on 127.0.0.1 for a test, and its HTTP API."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from tests.helpers_process import stop_process
from tests.helpers_serving import free_port


class Prometheus:
    """`with Prometheus(tmp, config) as prom: prom.query("up")`; config is prometheus.yml as a
    dict (its rule_files relative to `tmp`)."""

    def __init__(self, where: Path, config: dict):
        self.where, self.config = where, config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Prometheus:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: run `make system-packages`"
        self.where.mkdir(parents=True, exist_ok=True)
        (self.where / "prometheus.yml").write_text(yaml.safe_dump(self.config))
        self.log = open(self.where / "prometheus.log", "w")  # noqa: SIM115 - closed on exit
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.where / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.where / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            cwd=self.where, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.wait(lambda: httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200,
                      "ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)
        self.log.close()

    def output(self) -> str:
        return (self.where / "prometheus.log").read_text()[-3000:]

    def wait(self, condition, what: str, timeout: float = 90):
        """Poll `condition` (exceptions count as not yet) until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.output()}"
            try:
                if result := condition():
                    return result
            except (httpx.HTTPError, KeyError, IndexError, ValueError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"prometheus: not {what} within {timeout} s:\n{self.output()}")

    def query(self, expr: str) -> list[dict]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        answer.raise_for_status()
        return answer.json()["data"]["result"]

    def alerts(self) -> list[dict]:
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=10)
        answer.raise_for_status()
        return answer.json()["data"]["alerts"]
