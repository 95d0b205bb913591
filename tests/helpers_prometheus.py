"""A real Prometheus server (Debian `prometheus`) on 127.0.0.1 for a test, and its HTTP API."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from tests.helpers_process import free_port, http_ok, stop_process, wait_ready


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
            self.wait(http_ok(f"{self.url}/-/ready"), "ready")
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
        """Poll `condition` (errors and empty answers count as not yet) until it returns
        something truthy."""
        return wait_ready(self.proc, condition, f"prometheus {what}",
                          self.where / "prometheus.log", timeout,
                          (httpx.HTTPError, KeyError, IndexError, ValueError), every=0.5)

    def query(self, expr: str) -> list[dict]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        answer.raise_for_status()
        return answer.json()["data"]["result"]

    def alerts(self) -> list[dict]:
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=10)
        answer.raise_for_status()
        return answer.json()["data"]["alerts"]
