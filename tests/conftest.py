"""Shared fixtures: a throw-away copy of the project in its own git repo, driven by real DVC."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import lifecycle  # noqa: F401  first: it pins the BLAS kernels before any test module imports numpy
from tests.helpers_process import free_port, http_ok, stop_process, wait_ready

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a clone holds (no data, no venv, no DVC cache): the project as a new user gets it, with
# the monitoring pipeline's DVC project.
SOURCE_ITEMS = ["lifecycle", "stages", "dvc.yaml", "params.yaml", "contract.yaml", ".dvc/config",
                ".dvc/plots", ".dvcignore", ".gitignore", "pyproject.toml", "Makefile",
                "sweep.yaml", "monitoring/dvc.yaml", "monitoring/.dvc/config",
                "monitoring/.dvc/.gitignore", "monitoring/.dvcignore"]


def run(cmd: list[str] | str, cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command with the project's venv first on PATH; fail loudly with its output."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1", **kw.pop("env", {})}
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True,
                          shell=isinstance(cmd, str), **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_workspace(dest: Path) -> Path:
    """Copy the project's source (not its data) into `dest` as a fresh git + DVC repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in SOURCE_ITEMS:
        src = ROOT / item
        target = dest / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, target)
    (dest / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    run("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", dest)
    return dest


@pytest.fixture(scope="session", autouse=True)
def warm_servers(tmp_path_factory) -> Path:
    """The warm runner's servers (lifecycle/warm.py) of this session: in a folder of their own,
    idle out after 10 s, and asked to stop when the session ends (none outlives the tests)."""
    from lifecycle import warm

    folder = tmp_path_factory.mktemp("warm")
    folder.chmod(0o700)
    saved = {k: os.environ.get(k) for k in ("LIFECYCLE_WARM_DIR", "LIFECYCLE_WARM_IDLE")}
    os.environ.update(LIFECYCLE_WARM_DIR=str(folder), LIFECYCLE_WARM_IDLE="10")
    yield folder
    warm.stop_all(str(folder))
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh project copy in a temporary git repo, ready for `dvc repro`."""
    return make_workspace(tmp_path / "project")


@pytest.fixture(scope="session")
def reproduced_data(tmp_path_factory) -> Path:
    """One project copy on which the data stages (up to `split`) have run (shared; do not modify).

    `reproduced` continues in this same copy, so a session runs the data stages only once."""
    ws = make_workspace(tmp_path_factory.mktemp("reproduced") / "project")
    run(["dvc", "repro", "--quiet", "split"], ws)
    return ws


@pytest.fixture(scope="session")
def reproduced(reproduced_data: Path) -> Path:
    """One project copy on which the whole DAG has run once (shared; do not modify)."""
    run(["dvc", "repro", "--quiet"], reproduced_data)
    return reproduced_data


@pytest.fixture(scope="module")
def bundle(reproduced: Path) -> Path:
    """The bundle the shared reproduced project built (do not modify)."""
    return reproduced / "models" / "bundle"


@pytest.fixture(scope="module")
def rows(reproduced: Path, bundle: Path) -> list[dict]:
    """The validation split as request bodies of the bundle's signature."""
    from tests.helpers_serving import records_from, signature_of

    return records_from(reproduced / "data/processed/validation.parquet", signature_of(bundle))


@pytest.fixture(scope="session")
def demo_sqlite(tmp_path_factory) -> Path:
    """The demo CRM database, first 500 customers, written by the real seed_demo_source stage."""
    from tests.helpers_stages import run_stages, stage_dir

    where = stage_dir(tmp_path_factory.mktemp("demo_source"), {"seed_demo_source.rows": 500})
    run_stages(where, "seed_demo_source")
    return where / "data" / "external" / "crm.sqlite"


@pytest.fixture(scope="session")
def featurized(reproduced_data: Path, tmp_path_factory) -> Path:
    """The demo's featurize and train stages run (in this process) on the shared split, in a
    folder of their own holding data/processed, data/features, models and metrics (shared; do
    not modify). Independent of the stages after train."""
    from tests.helpers_stages import run_stages, stage_dir

    where = stage_dir(tmp_path_factory.mktemp("featurized"))
    shutil.copytree(reproduced_data / "data" / "processed", where / "data" / "processed")
    run_stages(where, "featurize", "train")
    return where


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[dict]:
    """moto's S3 server, a real S3 HTTP endpoint, on a free port of 127.0.0.1; the environment
    that reaches it (test credentials; never a cloud metadata service)."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        wait_ready(proc, http_ok(env["AWS_ENDPOINT_URL"]), "moto_server", log, timeout=30)
        yield env
    finally:
        stop_process(proc)


def s3_client(env: dict):
    """A boto3 S3 client of the endpoint and credentials in `env` (`s3_server`'s)."""
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"],
                        region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
