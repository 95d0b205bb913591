"""End to end: the real API records simulated traffic, the monitoring pipeline (its own DVC
project, monitoring/) judges the export, the gate fails on the alert.

The bundle comes from the session's reproduced project; the monitoring pipeline runs in a
fresh project copy (the shared one is left as it is) with small windows and a cheap null."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_workspace, run
from tests.helpers_serving import BIN, Server


@pytest.fixture(scope="module")
def monitored(reproduced: Path, tmp_path_factory) -> Path:
    """A project whose monitoring pipeline has judged an export of simulated traffic: 300
    unshifted requests, then 300 with a concept shift, all with feedback."""
    tmp_path = tmp_path_factory.mktemp("monitored")
    ws = make_workspace(tmp_path / "project")
    shutil.copytree(reproduced / "models" / "bundle", ws / "models" / "bundle")
    config = yaml.safe_load((ws / "params.yaml").read_text())
    config["monitor"]["window"]["size"] = 300
    (ws / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    pool = reproduced / "data" / "processed" / "test.parquet"
    with Server("--bundle", str(ws / "models" / "bundle"), cwd=tmp_path / "server",
                registry=registry) as server:
        for shift, seed in (("none", 1), ("concept", 2)):  # `make simulate`, twice
            proc = subprocess.run(
                [str(BIN / "python"), "-m", "lifecycle.monitoring.simulate", "--url",
                 server.url, "--shift", shift, "--rows", "300", "--rate", "0",
                 "--feedback-delay", "0.2", "--pool", str(pool), "--contract",
                 str(ws / "contract.yaml"), "--seed", str(seed)],
                cwd=ws, capture_output=True, text=True, env=server.env)
            assert proc.returncode == 0, proc.stderr
            counts = json.loads(proc.stderr.strip().splitlines()[-1].split(": ", 2)[2])
            assert counts["answered"] == counts["feedback"] == 300, counts

    run([sys.executable, "-m", "lifecycle.serving", "export", "--registry", registry,
         "--output", "data/registry/predictions.parquet"], ws)
    run(["dvc", "--cd", "monitoring", "repro"], ws)   # what `make monitor` runs
    return ws


def test_simulated_concept_shift_is_caught_by_the_monitoring_pipeline(monitored: Path):
    ws = monitored
    metrics = json.loads((ws / "monitoring" / "metrics.json").read_text())
    assert metrics["windows_judged"] == 2 and metrics["rows"]["judged"] == 600
    results = json.loads((ws / "monitoring" / "out" / "results.json").read_text())
    first, second = results["windows"]

    def verdict(window, check, target):
        return next(r["verdict"] for r in window["checks"]
                    if r["check"] == check and r["target"] == target)

    # unshifted traffic: no drift anywhere; the concept shift: realized accuracy falls below
    # the label-free estimate while the inputs (data drift) hold
    assert {r["verdict"] for r in first["checks"]} <= {"ok", "insufficient"}
    assert verdict(second, "concept_drift", "accuracy") == "drift"
    assert verdict(second, "data_drift", "dataset") == "ok"
    assert verdict(second, "performance_estimate", "accuracy") == "ok"
    assert any(a["check"] == "concept_drift" and a["window"] == 1 for a in results["alerts"])
    assert (ws / "monitoring" / "out" / "dashboard.html").stat().st_size > 1000
    plot = json.loads((ws / "monitoring" / "plots" / "timeline.json").read_text())
    assert [row["window"] for row in plot] == [0, 1]

    gate = run([sys.executable, "-m", "lifecycle.monitoring", "gate",
                "monitoring/out/results.json"], ws, check=False)
    assert gate.returncode == 1 and "concept_drift" in gate.stderr
    # the same export and bundle again: DVC has nothing to do
    again = run(["dvc", "--cd", "monitoring", "repro"], ws)
    assert "didn't change, skipping" in again.stdout or "up to date" in again.stdout


def test_two_runs_on_one_export_write_identical_bytes(monitored: Path):
    # forced to judge the same export and bundle again, in a new process, the stage writes
    # every output of monitoring/dvc.yaml byte for byte (no clock, no unseeded draw)
    ws = monitored
    first_run = outputs(ws)
    assert set(first_run) >= {"monitoring/out/results.json", "monitoring/out/dashboard.html",
                              "monitoring/out/monitoring.prom", "monitoring/metrics.json",
                              "monitoring/plots/timeline.json"}
    run(["dvc", "--cd", "monitoring", "repro", "--force"], ws)
    second_run = outputs(ws)
    assert sorted(second_run) == sorted(first_run)
    changed = [name for name in first_run if first_run[name] != second_run[name]]
    assert not changed, f"outputs differ between two runs on one export: {changed}"


def outputs(ws: Path) -> dict[str, bytes]:
    """Every file the monitoring stage writes (its outs, metrics and plots), by path."""
    stage = yaml.safe_load((ws / "monitoring" / "dvc.yaml").read_text())["stages"]["monitor"]
    declared = [next(iter(o)) if isinstance(o, dict) else o
                for key in ("outs", "metrics", "plots") for o in stage.get(key, [])]
    files = {}
    for name in declared:
        path = ws / "monitoring" / name
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                files[str(f.relative_to(ws))] = f.read_bytes()
    return files
