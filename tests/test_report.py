"""The pull-request report (`make report BASE=<rev>`): what changed, better or worse, and the
regression gates that fail it. Driven in a private two-commit copy of the reproduced project."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from lifecycle import params, report
from lifecycle.errors import ParamsError
from tests.conftest import ROOT, run

MAKE = ["make", "-o", ".venv/.installed"]  # the copy uses this venv: never install into it
PNG = b"\x89PNG\r\n\x1a\n"


def set_c(ws: Path, value: float) -> None:
    """Edit train.logistic_regression.C in params.yaml as a person would (comments kept)."""
    path = ws / "params.yaml"
    text, n = re.subn(r"(\n  logistic_regression:[^\n]*\n    C: )[^ \n]+", rf"\g<1>{value}",
                      path.read_text())
    assert n == 1
    path.write_text(text)


@pytest.fixture(scope="module")
def pr(reproduced: Path, tmp_path_factory) -> dict:
    """Commit A: the reproduced DAG. Commit B: a deliberately worse model (C = 0.0001: far too
    much regularisation). Then a report of B against A, and of A (checked out again) against B."""
    ws = Path(shutil.copytree(reproduced, tmp_path_factory.mktemp("pr") / "project",
                              symlinks=True))
    git = "git -c user.name=t -c user.email=t@t"
    run(f"{git} add -A && {git} commit -qm A", ws)
    a = run("git rev-parse HEAD", ws).stdout.strip()
    same = run(MAKE + ["report", "BASE=HEAD"], ws, check=False)
    same_md = (ws / "report.md").read_text()

    set_c(ws, 0.0001)
    run(["dvc", "repro", "--quiet", "evaluate"], ws)
    run(f"{git} add -A && {git} commit -qm B", ws)
    b = run("git rev-parse HEAD", ws).stdout.strip()
    worse = run(MAKE + ["report", f"BASE={a}"], ws, check=False)
    worse_md = (ws / "report.md").read_text()

    run(f"git checkout -q {a} && dvc checkout --quiet", ws)
    better = run(MAKE + ["report", f"BASE={b}"], ws, check=False)
    better_md = (ws / "report.md").read_text()
    return {"ws": ws, "a": a, "b": b, "same": (same, same_md), "worse": (worse, worse_md),
            "better": (better, better_md)}


def test_a_worse_model_fails_the_report_naming_the_metric(pr):
    proc, md = pr["worse"]
    assert proc.returncode != 0
    assert "regression gate(s) broken" in proc.stderr
    assert "log_loss rose" in proc.stderr  # 0.50 -> 0.63 against an allowance of 0.02
    assert "**FAILED**" in md and "log_loss" in md.split("## Params")[0]
    assert "| train.logistic_regression.C | 1 | 0.0001 |" in md
    assert re.search(r"\| log_loss \| [\d.]+ \| [\d.]+ \| \+[\d.]+ \(\+[\d.]+%\) \| worse \|", md)


def test_an_equal_or_better_model_passes(pr):
    for case in ("same", "better"):
        proc, md = pr[case]
        assert proc.returncode == 0, (case, proc.stderr)
        gates = len(params.load("report", pr["ws"] / "params.yaml").gates)
        assert f"Passed: {gates} of {gates}." in md
    _, same = pr["same"]
    assert "## Params that changed\n\nNone." in same
    assert "| worse |" not in same and "| better |" not in same
    _, better = pr["better"]
    assert re.search(r"\| log_loss \| [\d.]+ \| [\d.]+ \| -[\d.]+ \(-[\d.]+%\) \| better \|",
                     better)


def test_every_metric_shows_its_delta_and_direction(pr):
    _, md = pr["worse"]
    scores = md.split("### `metrics/scores.json`")[1].split("###")[0]
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss",
                 "brier", "baseline.log_loss", "threshold"):
        assert re.search(rf"\n\| {re.escape(name)} \|", scores), name
    assert re.search(r"\| baseline.log_loss \| ([\d.]+) \| \1 \| 0 \| same \|", scores)
    assert "## Data quality and split" in md
    for file in ("metrics/data_quality.json", "metrics/split.json"):
        assert f"### `{file}`" in md


def test_plots_of_both_sides_are_drawn_offline(pr):
    ws = pr["ws"]
    _, md = pr["better"]
    plots = [s for s in report.plot_specs(yaml.safe_load((ws / "dvc.yaml").read_text()))
             if not s.image]
    assert plots
    for spec in plots:
        png = ws / "report_figures" / (re.sub(r"[^\w.-]+", "_", spec.file) + ".png")
        assert png.read_bytes().startswith(PNG), spec.file
        assert f"![{spec.file}](report_figures/{png.name})" in md
    assert "## Features (`metrics/features.json`)" in md
    assert "(unchanged)" in md  # featurize did not rerun: same manifest hash


def test_the_report_warns_when_results_are_stale(pr):
    _, md = pr["worse"]  # B reran up to evaluate only: explain and package are behind
    assert "results are stale" in md
    assert "explain" in md.split("\n\n")[1]


def test_an_unknown_base_is_one_clear_error(pr):
    proc = run(MAKE + ["report", "BASE=no-such-branch"], pr["ws"], check=False)
    assert proc.returncode != 0
    assert "report: error: BASE 'no-such-branch' is not a git revision" in proc.stderr


# --- the gates, on their own ----------------------------------------------------------------
def gates(**spec) -> params.ReportParams:
    """The project's report params with these gates (written as in params.yaml)."""
    current = params.load("report", ROOT / "params.yaml").model_dump()
    return params.ReportParams.model_validate({**current, "gates": spec})


def change(key, old, new, file="metrics/scores.json"):
    r = params.load("report", ROOT / "params.yaml")
    return report.Change(file, key, old, new,
                         report.direction(key, r.higher_is_better, r.lower_is_better))


@pytest.mark.parametrize(("gate", "old", "new", "ok"), [
    (0.01, 0.85, 0.84, True),       # dropped exactly the allowance
    (0.01, 0.85, 0.8399, False),
    ("5%", 0.80, 0.76, True),       # 5 % of 0.80 = 0.04
    ("5%", 0.80, 0.7599, False),
    (0.0, 0.85, 0.90, True),        # better is always fine
])
def test_higher_is_better_gates(gate, old, new, ok):
    [result] = report.check_gates([change("roc_auc", old, new)], gates(roc_auc=gate))
    assert result.ok is ok


def test_lower_is_better_gates_limit_a_rise():
    [rose] = report.check_gates([change("log_loss", 0.50, 0.53)], gates(log_loss=0.02))
    assert not rose.ok and rose.why.startswith("rose 0.03")
    [fell] = report.check_gates([change("log_loss", 0.50, 0.10)], gates(log_loss=0.0))
    assert fell.ok


def test_a_gated_metric_that_disappears_breaks_its_gate_and_a_new_one_passes():
    [gone] = report.check_gates([change("roc_auc", 0.85, None)], gates(roc_auc=0.01))
    assert not gone.ok and "missing in the workspace" in gone.why
    [new] = report.check_gates([change("roc_auc", None, 0.85)], gates(roc_auc=0.01))
    assert new.ok
    [absent] = report.check_gates([], gates(roc_auc=0.01))
    assert not absent.ok


def test_a_gate_needs_a_direction_and_a_valid_limit():
    with pytest.raises(ParamsError, match=r"report.gates.rows_out: is higher or lower better"):
        report.check_gates([change("rows_out", 10, 9)], gates(rows_out=1))
    everything = yaml.safe_load((ROOT / "params.yaml").read_text())
    for bad in ("five%", -0.1, "-5%"):
        everything["report"]["gates"] = {"roc_auc": bad}
        with pytest.raises(ValidationError, match="gates.roc_auc"):
            params.ReportParams.model_validate(everything["report"])


def test_bad_gates_in_params_yaml_are_one_line_naming_the_key(tmp_path: Path):
    everything = yaml.safe_load((ROOT / "params.yaml").read_text())
    everything["report"]["gates"] = {"roc_auc": "a lot"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(everything))
    with pytest.raises(ParamsError, match=r"^params.yaml: report.gates.roc_auc: .*'a lot'"):
        params.load("report", path)


# --- the feature manifest and the plot declarations ------------------------------------------
def test_feature_changes_name_added_removed_and_redefined_features():
    old = {"version": "aaa", "features": [
        {"name": "tenure", "type": "numeric", "importance": 0.1},
        {"name": "contract_Month", "type": "one-hot", "importance": 0.2},
        {"name": "gone", "type": "numeric", "importance": 0.0}]}
    new = {"version": "bbb", "features": [
        {"name": "tenure", "type": "numeric", "importance": 0.3},   # importance moves: not a change
        {"name": "contract_Month", "type": "numeric", "importance": 0.2},
        {"name": "added", "type": "derived", "importance": 0.0}]}
    changes = report.feature_changes(json.dumps(old).encode(), json.dumps(new).encode())
    assert changes["added"] == ["added"] and changes["removed"] == ["gone"]
    assert changes["redefined"] == ["contract_Month"]
    assert changes["hash"] == ("aaa", "bbb") and changes["count"] == (3, 3)
    plain = report.feature_changes(b'{"features": ["a", "b"]}', None)
    assert plain["count"] == (2, None) and plain["hash"][0].startswith("sha256:")


def test_plot_declarations_in_both_dvc_yaml_forms():
    dvc_yaml = {
        "stages": {"evaluate": {"plots": [
            "metrics/a.csv",
            {"metrics/roc.json": {"x": "fpr", "y": "tpr", "template": "linear", "cache": False}},
        ]}},
        "plots": [
            {"Precision-recall": {"x": "recall", "y": {"metrics/pr.json": "precision"}}},
            {"metrics/confusion.csv": {"template": "confusion", "x": "actual", "y": "predicted"}},
            "metrics/importance.png",
        ],
    }
    specs = {s.file: s for s in report.plot_specs(dvc_yaml)}
    assert specs["metrics/roc.json"] == report.PlotSpec("metrics/roc.json", "fpr", ("tpr",))
    assert specs["metrics/pr.json"].x == "recall" and specs["metrics/pr.json"].ys == ("precision",)
    assert specs["metrics/confusion.csv"].template == "confusion"
    assert specs["metrics/importance.png"].image and specs["metrics/a.csv"].x is None
