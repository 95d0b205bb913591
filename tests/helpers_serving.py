"""Serving test helpers: a real server process on 127.0.0.1, request bodies from real rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers_process import free_port, http_ok, stop_process, wait_ready

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADMIN_TOKEN = "test-admin-token"


class Server:
    """`python -m lifecycle.serving serve ...` as a subprocess, ready when /health says so."""

    def __init__(self, *args: str, cwd: Path, registry: str, env: dict | None = None,
                 admin_token: str | None = ADMIN_TOKEN):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.registry = registry
        self.cmd = [str(BIN / "python"), "-m", "lifecycle.serving", "serve", *args,
                    "--port", str(self.port), "--registry", registry]
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                    "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1", **(env or {})}
        if admin_token:
            self.env["SERVING_ADMIN_TOKEN"] = admin_token
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.log = cwd / f"server-{self.port}.log"

    def start(self, timeout: float = 60) -> Server:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_ready(self.proc, http_ok(f"{self.url}/health"), "server", self.log, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
        if hasattr(self, "_log"):
            self._log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def admin(self) -> dict:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def plain(value):
    """A JSON value for a DataFrame cell (None for every missing marker)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def records_from(split: Path, signature: dict, n: int | None = None) -> list[dict]:
    """Real rows of a split as API records: the signature's fields, JSON values."""
    names = [f["name"] for f in signature["fields"]]
    frame = pd.read_parquet(split, columns=names)
    if n is not None:
        frame = frame.head(n)
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def signature_of(bundle: Path) -> dict:
    return json.loads((bundle / "signature.json").read_text())


def registry_ids(url: str, role: str = "served") -> set[str]:
    """Request ids the registry holds, read with plain SQL (not through our module)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT request_id FROM predictions WHERE role = "
                                              ":role"), {"role": role})
            return {r[0] for r in rows}
    finally:
        engine.dispose()


def registry_rows(url: str) -> pd.DataFrame:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return pd.read_sql_query(sa.text("SELECT * FROM predictions"), connection)
    finally:
        engine.dispose()
