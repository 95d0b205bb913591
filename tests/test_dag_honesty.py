"""dvc.yaml tells the truth about the code: lifecycle.dag_check on the project and on broken
copies of it, and every declared output written by a real run."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from lifecycle import dag_check
from tests.conftest import BIN, ROOT, run


def edit_stage(ws: Path, stage: str, **changes) -> None:
    """Rewrite one stage of the workspace's dvc.yaml (a key set to None is removed)."""
    spec = yaml.safe_load((ws / "dvc.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            spec["stages"][stage].pop(key, None)
        else:
            spec["stages"][stage][key] = value
    (ws / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def stage_of(ws: Path, stage: str) -> dict:
    return yaml.safe_load((ws / "dvc.yaml").read_text())["stages"][stage]


def deps_of(ws: Path, stage: str) -> list:
    return stage_of(ws, stage)["deps"]


def test_project_dvc_yaml_matches_the_code(workspace: Path) -> None:
    assert dag_check.check(workspace) == []


def test_a_module_missing_from_deps_is_caught(workspace: Path) -> None:
    edit_stage(workspace, "split",
               deps=[d for d in deps_of(workspace, "split") if d != "lifecycle/splitting.py"])
    assert dag_check.check(workspace) == [
        "dvc.yaml: stage 'split': deps lack lifecycle/splitting.py (imported by stages/split.py)"]

    cli = run([sys.executable, "-m", "lifecycle.dag_check", "--root", str(workspace)], workspace,
              check=False)
    assert cli.returncode == 1
    assert "deps lack lifecycle/splitting.py" in cli.stdout
    assert "1 problem(s)" in cli.stderr


def test_a_params_section_missing_is_caught(workspace: Path) -> None:
    params = [p for p in stage_of(workspace, "collect")["params"] if p != "collect"]
    edit_stage(workspace, "collect", params=params)
    [problem] = dag_check.check(workspace)
    assert problem.startswith("dvc.yaml: stage 'collect': params lack 'collect' from params.yaml "
                              "(read at stages/collect.py:")


def test_declared_but_unused_deps_and_params_are_caught(workspace: Path) -> None:
    edit_stage(workspace, "collect", deps=[*deps_of(workspace, "collect"), "lifecycle/demo.py"],
               params=[*stage_of(workspace, "collect")["params"], "validate.as_of"])
    assert sorted(dag_check.check(workspace)) == [
        "dvc.yaml: stage 'collect': deps list lifecycle/demo.py, which the stage never runs or "
        "imports",
        "dvc.yaml: stage 'collect': params list 'validate.as_of' from params.yaml, which the stage "
        "never reads"]


def test_indirect_and_function_level_imports_count(workspace: Path) -> None:
    """A module imported inside a function of an imported module is code the stage runs; one
    imported only for type checking is not. A params section read there counts too."""
    helper = workspace / "lifecycle" / "tie_breaker.py"
    helper.write_text('"""Test helper."""\nfrom lifecycle import params\n\n\n'
                      'def seed() -> int:\n    return params.load("seed_demo_source").seed\n')
    typing_only = workspace / "lifecycle" / "typing_only.py"
    typing_only.write_text('"""Test helper."""\n')
    splitting = workspace / "lifecycle" / "splitting.py"
    splitting.write_text(splitting.read_text() + (
        "\n\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from lifecycle import typing_only  # noqa: F401\n\n\n"
        "def _tie_breaker() -> int:\n    from lifecycle.tie_breaker import seed\n\n"
        "    return seed()\n"))
    problems = [p for p in dag_check.check(workspace) if "'split'" in p]
    assert problems == [
        "dvc.yaml: stage 'split': deps lack lifecycle/tie_breaker.py (imported by "
        "lifecycle/splitting.py)",
        "dvc.yaml: stage 'split': params lack 'seed_demo_source' from params.yaml (read at "
        "lifecycle/tie_breaker.py:6)"]


def test_the_monitoring_projects_stage_is_checked_too(workspace: Path) -> None:
    """monitoring/ is a DVC project of its own (the root's DVC does not see it); its paths are
    held against the code from the project root all the same."""
    spec = yaml.safe_load((workspace / "monitoring" / "dvc.yaml").read_text())
    monitor = spec["stages"]["monitor"]
    monitor["deps"] = [d for d in monitor["deps"] if d != "../lifecycle/cli.py"]
    monitor["params"] = [{"../params.yaml": ["monitor", "train"]}]
    (workspace / "monitoring" / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert dag_check.check(workspace) == [
        "dvc.yaml: stage 'monitor': deps lack lifecycle/cli.py (imported by stages/monitor.py)",
        "dvc.yaml: stage 'monitor': params list 'train' from params.yaml, which the stage never "
        "reads"]


def test_a_fresh_clone_after_make_run_has_a_clean_dvc_status(reproduced: Path) -> None:
    """The monitoring pipeline runs on a registry export a fresh clone does not have: the
    root's `dvc status` must not show it as changed; `dvc --cd monitoring` still sees it."""
    status = run(["dvc", "status"], reproduced)
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
    monitoring = run(["dvc", "--cd", "monitoring", "status"], reproduced)
    assert "monitor:" in monitoring.stdout and "deleted:            out" in monitoring.stdout


def test_every_declared_output_is_written_and_nothing_else(reproduced: Path) -> None:
    stages = dag_check.load_stages(reproduced)
    assert {st.name for st in stages} >= {"collect", "validate", "preprocess", "split"}
    assert dag_check.check_outputs(stages, reproduced) == []
    assert dag_check.undeclared_outputs(stages, reproduced) == []


def test_pre_commit_runs_ruff_the_dag_check_and_dvc_hooks() -> None:
    """The hook config is valid (checked offline) and wires the checks a commit must pass."""
    run([str(BIN / "pre-commit"), "validate-config", ".pre-commit-config.yaml"], ROOT)
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff", "dag-check", "dvc-pre-commit", "dvc-post-checkout", "dvc-push"} <= set(hooks)
    assert hooks["dag-check"]["entry"].endswith("python -m lifecycle.dag_check")
    assert hooks["dvc-push"]["entry"].endswith("python -m lifecycle.remote push")
    assert set(config["default_install_hook_types"]) == {"pre-commit", "pre-push", "post-checkout"}
