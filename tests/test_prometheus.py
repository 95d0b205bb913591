"""The Prometheus files in deploy/prometheus: the config and rules load, and each alert rule
fires on the history it is meant for and not on a normal one (`promtool test rules`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: run `make system-packages` (Debian `prometheus`)"
    return subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_config_and_rules_are_valid() -> None:
    checked = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout  # the config loads rules.yml


@pytest.mark.parametrize("tests", sorted(p.name for p in (DEPLOY / "tests").glob("*.yml")))
def test_promtool_rule_tests_pass(tests: str) -> None:
    result = promtool("test", "rules", str(DEPLOY / "tests" / tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_rule_test() -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tested = set()
    for path in (DEPLOY / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert alerts == tested, f"alerts never shown firing in a rule test: {alerts - tested}"


def test_a_broken_rule_test_fails(tmp_path) -> None:
    """The control: promtool's exit code does report a rule that does not fire as expected."""
    shutil.copy(DEPLOY / "rules.yml", tmp_path / "rules.yml")
    (tmp_path / "t.yml").write_text("""
rule_files: [rules.yml]
tests:
  - interval: 1m
    input_series:
      - {series: 'up{job="lifecycle-serving", instance="a"}', values: '1x10'}
    alert_rule_test:
      - eval_time: 9m
        alertname: ServingDown
        exp_alerts: [{exp_labels: {severity: critical, job: lifecycle-serving, instance: a}}]
""")
    result = promtool("test", "rules", str(tmp_path / "t.yml"))
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr
