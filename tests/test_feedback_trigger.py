"""Triggers of the feedback loop: the GitHub workflow runs on a schedule and by hand, through
the same cron-able command (`make feedback-loop`); actionlint itself runs in test_workflows."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT, run


def test_retrain_workflow_has_a_schedule_a_dispatch_and_runs_the_loop():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "retrain.yml").read_text())
    on = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert on["schedule"][0]["cron"].count(" ") == 4
    assert set(on["workflow_dispatch"]["inputs"]) == {"trigger", "train_on", "mode"}
    steps = workflow["jobs"]["retrain"]["steps"]
    assert any("make feedback-loop" in step.get("run", "") for step in steps)


def test_loop_command_says_what_is_wrong_in_one_line(tmp_path):
    """No registry export to retrain on: one line naming it, exit 1, no traceback."""
    import sys

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    proc = run([sys.executable, "-m", "lifecycle.feedback", "--registry",
                f"sqlite:///{tmp_path / 'empty.sqlite'}", "retrain"], tmp_path, check=False,
               env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("feedback: error: no labelled answers")
    assert "Traceback" not in proc.stderr
