"""Experiments: a grid through DVC's queue (`make sweep`), its leaderboard (`make compare`).

The sweep test drives the real `dvc exp run --queue` / `dvc queue start -j 2` in a private copy
of the reproduced project, and checks that no queue worker outlives it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from lifecycle import experiments, params
from lifecycle.errors import ParamsError
from tests.conftest import ROOT, run

MAKE = ["make", "-o", ".venv/.installed"]  # the copy uses this venv: never install into it
C_VALUES = [0.05, 0.2, 0.5, 2.0]


# --- the grid -------------------------------------------------------------------------------
def test_a_grid_string_and_a_grid_file_mean_the_same_experiments(tmp_path: Path):
    from_string = experiments.parse_grid_string("train.model=logistic_regression,mlp split.seed=1")
    grid_file = tmp_path / "sweep.yaml"
    grid_file.write_text("train.model: [logistic_regression, mlp]\nsplit.seed: 1\n")
    assert from_string == experiments.load_grid(grid_file) == [
        {"train.model": ["logistic_regression", "mlp"], "split.seed": [1]}]
    assert len(experiments.combinations(from_string[0])) == 2


def test_a_list_of_grids_is_their_union():
    grids = experiments.load_grid(ROOT / "sweep.yaml")
    assert len(grids) > 1
    count = experiments.check_grid(grids, ROOT / "params.yaml", "sweep.yaml")
    assert count == sum(len(experiments.combinations(g)) for g in grids)
    for grid in grids:  # each family sweeps only its own hyperparameters
        family = grid["train.model"][0]
        assert all(k == "train.model" or k.startswith(f"train.{family}.") for k in grid)


@pytest.mark.parametrize(("grid", "message"), [
    ("train.logistic_regresion.C=0.1,1", "train.logistic_regresion.C is not a key of"),
    ("train.logistic_regression.C=0.1,-1", "train.logistic_regression.C"),
    ("train.model=logistic_regression,svm", "train.model"),
    ("train.model", "is not param=value1,value2"),
])
def test_a_bad_grid_is_refused_before_anything_is_queued(grid: str, message: str):
    with pytest.raises(ParamsError, match=re.escape(message)):
        experiments.check_grid(experiments.parse_grid_string(grid), ROOT / "params.yaml", "GRID")


def test_the_sweep_command_names_the_bad_param_and_queues_nothing(workspace: Path):
    proc = run(MAKE + ["sweep", "GRID=train.logistic_regression.C=0.1,-1"], workspace,
               check=False)
    assert proc.returncode != 0
    assert "sweep: error: GRID {'train.logistic_regression.C': -1}" in proc.stderr
    assert "Input should be greater than 0" in proc.stderr
    assert "Queued experiment" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("value", [0.1, 10, -3, True, None, "sqrt", "Fiber optic, DSL",
                                   "total_charges / (tenure + 1)", "it's", "null", [64, 32],
                                   ["a b", 1.5]])
def test_values_reach_dvc_unchanged(value):
    """DVC parses `-S key=value` with Hydra's grammar: each value must come back as itself."""
    override = OverridesParser.create().parse_override(
        f"key={experiments.hydra_value(value)}")
    assert not override.is_sweep_override()
    assert override.value() == value


def test_several_values_become_one_dvc_sweep():
    args = experiments.set_args({"train.logistic_regression.C": [0.1, 1.0],
                                 "train.model": ["logistic_regression"]})
    assert args == ["-S", "train.logistic_regression.C=0.1,1.0",
                    "-S", "train.model=logistic_regression"]
    override = OverridesParser.create().parse_override(args[1])
    assert override.is_sweep_override()
    assert list(override.sweep_iterator()) == [0.1, 1.0]


# --- the leaderboard, from `dvc exp show --json` ---------------------------------------------
def _entry(rev, name, p, m, state=None):
    data = {"rev": rev, "params": {"params.yaml": {"data": p}},
            "metrics": {f: {"data": d} for f, d in m.items()}}
    if state is None:
        return {"rev": rev, "name": name, "data": data, "error": None}
    return {"revs": [{"rev": rev, "name": name, "data": data, "error": None}],
            "executor": {"state": state}, "name": name}


def exp_show(primary="roc_auc") -> list[dict]:
    """The shape `dvc exp show --json` gives (DVC 3): workspace, baseline, its experiments."""
    def scores(auc, loss):
        return {"metrics/scores.json": {primary: auc, "log_loss": loss, "accuracy": 0.8},
                "metrics/data_quality.json": {"accuracy": 1.0}}

    p = {"split": {"seed": 42}, "train": {"C": 1.0, "model": "lr"}}
    baseline = _entry("a" * 40, "main", p, scores(0.80, 0.50))
    baseline["experiments"] = [
        _entry("b" * 40, "exp-low", {**p, "train": {"C": 0.1, "model": "lr"}}, scores(0.78, 0.45),
               "success"),
        _entry("c" * 40, "exp-high", {**p, "train": {"C": 10.0, "model": "lr"}},
               scores(0.85, 0.55), "success"),
        _entry("d" * 40, "exp-broken", {**p, "train": {"C": 3.0, "model": "lr"}},
               scores(0.80, 0.50), "failed"),
    ]
    return [{"rev": "workspace", "name": None, "data": {}, "error": None, "experiments": None},
            baseline]


def report_params(**changes) -> params.ReportParams:
    return params.load("report", ROOT / "params.yaml").model_copy(update=changes)


def test_leaderboard_shows_only_varying_params_best_first():
    rows = experiments.experiment_rows(exp_show())
    text, best, value = experiments.leaderboard(rows, report_params(
        leaderboard_metrics=["log_loss", "accuracy"]))
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["#", "experiment", "rev", "state", "train.C", "roc_auc", "log_loss",
                      "accuracy"]  # split.seed and train.model do not vary: not shown
    order = [line.split("|")[2].strip() for line in lines[2:]]
    assert order == ["exp-high", "main", "exp-low", "exp-broken"]
    assert best.name == "exp-high" and value == "0.85"
    broken = lines[-1]
    assert "failed" in broken and "0.8" not in broken  # DVC shows the baseline's metrics: hidden
    assert "| 0.8 |" in lines[2]  # a bare `accuracy` means the scores file's (metrics_file)


def test_lower_is_better_sorts_ascending():
    rows = experiments.experiment_rows(exp_show())
    _, best, value = experiments.leaderboard(rows, report_params(primary_metric="log_loss"))
    assert best.name == "exp-low" and value == "0.45"


def test_an_ambiguous_metric_name_must_name_its_file():
    rows = experiments.experiment_rows(exp_show())
    with pytest.raises(ParamsError, match="metrics/data_quality.json:accuracy|<file>:accuracy"):
        experiments.leaderboard(rows, report_params(metrics_file="metrics/other.json",
                                                    leaderboard_metrics=["accuracy"]))


# --- a real sweep through DVC's queue --------------------------------------------------------
def processes_in(path: Path) -> list[int]:
    """Pids of processes whose working directory is inside `path` (queue workers, executors)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd == str(path) or cwd.startswith(f"{path}/"):
            found.append(int(proc.name))
    return found


def disk_objects(cache: Path) -> dict[str, int]:
    return {str(p.relative_to(cache)): p.stat().st_size for p in cache.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def swept(reproduced: Path, tmp_path_factory) -> dict:
    """A private copy of the reproduced project, committed, then `make sweep` with JOBS=2 over
    four values of train.logistic_regression.C plus one experiment that fails (its evaluate
    gate is set out of reach), and `make compare` afterwards."""
    tmp = tmp_path_factory.mktemp("sweep")
    ws = Path(shutil.copytree(reproduced, tmp / "project", symlinks=True))
    run("git config user.name t && git config user.email t@t && git add -A && "
        "git commit -qm 'the DAG, reproduced'", ws)
    grid = tmp / "grid.yaml"
    grid.write_text(f"- train.logistic_regression.C: {C_VALUES}\n"
                    "- evaluate.gate.worst_acceptable: [0.999]\n")
    cache_before = disk_objects(ws / ".dvc" / "cache")
    try:
        sweep = run(MAKE + ["sweep", f"SWEEP={grid}", "JOBS=2", "TARGETS=evaluate"], ws,
                    check=False, timeout=1200)
        compare = run(MAKE + ["compare"], ws)
        deadline = time.monotonic() + 60  # `dvc queue stop` lets idle workers exit on their own
        while processes_in(ws) and time.monotonic() < deadline:
            time.sleep(1)
        left = processes_in(ws)
    finally:
        for pid in processes_in(ws):  # whatever a failure left behind, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return {"ws": ws, "sweep": sweep, "compare": compare.stdout, "left": left,
            "cache_before": cache_before, "cache_after": disk_objects(ws / ".dvc" / "cache")}


def leaderboard_rows(markdown: str) -> list[dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, [c.strip() for c in line.strip("|").split("|")], strict=True))
            for line in lines[2:]]


def test_sweep_runs_the_grid_through_the_queue_and_ranks_it(swept):
    rows = leaderboard_rows(swept["compare"])
    done = [r for r in rows if r["state"] == "success"]
    assert len(done) == len(C_VALUES)
    assert sorted(float(r["train.logistic_regression.C"]) for r in done) == C_VALUES
    for row in done:
        for metric in ("roc_auc", "pr_auc", "f1", "log_loss", "brier"):
            assert 0 < float(row[metric]) < 1, (row, metric)
    ranked = [float(r["roc_auc"]) for r in rows if r["roc_auc"] != "-"]
    assert ranked == sorted(ranked, reverse=True)
    assert [r["state"] for r in rows].count("baseline") == 1
    assert "split.seed" not in rows[0]  # only what varies is shown
    best = next(r for r in rows if r["state"] in ("success", "baseline"))
    if best["state"] == "success":
        assert f"dvc exp apply {best['experiment']}" in swept["compare"]


def test_a_failed_experiment_is_shown_with_its_log(swept):
    sweep = swept["sweep"]
    assert sweep.returncode != 0
    failed = [r for r in leaderboard_rows(swept["compare"]) if r["state"] == "failed"]
    assert len(failed) == 1 and failed[0]["roc_auc"] == "-"
    name = failed[0]["experiment"]
    assert f"sweep: experiment {name} failed; its log (dvc queue logs {name})" in sweep.stderr
    assert "quality gate failed" in sweep.stderr  # evaluate's own message, from the log
    assert f"failed: {name}" in sweep.stderr


def test_experiments_share_the_cache_and_leave_nothing_behind(swept):
    ws = swept["ws"]
    before, after = swept["cache_before"], swept["cache_after"]
    assert set(before) <= set(after)
    added = sum(size for name, size in after.items() if name not in before)
    # what the experiments changed: a model and a bundle each; the data is not copied
    changed = (ws / "models" / "model.skops").stat().st_size + sum(
        p.stat().st_size for p in (ws / "models" / "bundle").rglob("*"))
    data = sum(p.stat().st_size for p in (ws / "data").rglob("*") if p.is_file())
    assert added < 1.5 * len(C_VALUES) * changed + 64_000
    assert added < data
    assert "hardlink" in run(["dvc", "config", "cache.type"], ws).stdout
    exps = ws / ".dvc" / "tmp" / "exps"
    assert not [p for p in exps.glob("tmp*") if p.is_dir()]  # executors' temp dirs are gone
    assert swept["left"] == []  # no queue worker outlives the sweep
    status = run(["dvc", "queue", "status"], ws).stdout
    assert "Running" not in status and "Queued" not in status
    assert json.loads(run(["dvc", "status", "--json"], ws).stdout) == {}  # workspace untouched
