"""Running the real stage scripts outside DVC: in a bare folder holding params.yaml and
contract.yaml, with the paths dvc.yaml gives them, in this process (fast) or as a subprocess
(exactly what `dvc repro` runs)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, run

DELETE = object()   # a params override that removes the key


def stage_args(name: str) -> list[str]:
    """The arguments dvc.yaml passes to a stage (everything after
    `python -m lifecycle.warm stages.<name>`)."""
    cmd = shlex.split(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]["cmd"])
    assert cmd[:4] == ["python", "-m", "lifecycle.warm", f"stages.{name}"], cmd
    return cmd[4:]


def stage_dir(path: Path, params: dict | None = None) -> Path:
    """A folder where stages can run: the project's params.yaml (with overrides) and contract."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "contract.yaml", path / "contract.yaml")
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    set_params(path, params or {})
    return path


def set_params(path: Path, overrides: dict) -> None:
    """Edit params.yaml in `path`: {"split.test_size": 0.3, "split.seed": DELETE}."""
    everything = yaml.safe_load((path / "params.yaml").read_text())
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        node = everything
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    (path / "params.yaml").write_text(yaml.safe_dump(everything, sort_keys=False))


def run_stage(cwd: Path, name: str) -> tuple[int, str]:
    """Run stage `name` in this process, in `cwd`: (exit code, what it wrote to stderr)."""
    from lifecycle import cli

    module = importlib.import_module(f"stages.{name}")
    err, old_cwd, old_argv = io.StringIO(), Path.cwd(), sys.argv
    try:
        os.chdir(cwd)
        sys.argv = [f"stages/{name}.py", *stage_args(name)]
        with contextlib.redirect_stderr(err):
            cli.run(name, module.main)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
    return code, err.getvalue()


def run_stages(cwd: Path, *names: str) -> None:
    """Run stages in order in this process; each must succeed."""
    for name in names:
        code, err = run_stage(cwd, name)
        assert code == 0, f"{name} exited {code}: {err}"


def run_stage_process(cwd: Path, name: str, env: dict | None = None):
    """Run stage `name` as its own process, exactly as dvc.yaml's cmd does (warm runner)."""
    return run([sys.executable, "-m", "lifecycle.warm", f"stages.{name}", *stage_args(name)],
               cwd, check=False,
               env={"PYTHONPATH": str(ROOT), **(env or {})})


def assert_one_error_line(stderr: str, stage: str, *words: str) -> str:
    """A failure is one line `<stage>: error: ...` naming the problem, and no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    line = lines[0]
    assert line.startswith(f"{stage}: error: "), line
    assert "Traceback" not in stderr
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    return line


def metrics(cwd: Path, name: str) -> dict:
    return json.loads((cwd / "metrics" / f"{name}.json").read_text())


def assert_rows_add_up(report: dict) -> None:
    """rows_in = rows_out + every row dropped, by reason."""
    assert report["rows_in"] == report["rows_out"] + sum(report["rows_dropped"].values()), report
