"""Shared fixtures: a throw-away copy of the project in its own git repo, driven by real DVC."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lifecycle  # noqa: F401  first: it pins the BLAS kernels before any test module imports numpy

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a clone holds (no data, no venv, no DVC cache): the project as a new user gets it.
SOURCE_ITEMS = ["lifecycle", "stages", "dvc.yaml", "params.yaml", "contract.yaml", ".dvc/config",
                ".dvc/plots", ".dvcignore", ".gitignore", "pyproject.toml", "Makefile",
                "sweep.yaml"]


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
