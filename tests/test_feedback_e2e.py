"""The feedback loop end to end, in a temporary repo with the real server, DVC and GTO:

v1 (GTO stage prod) serves; the simulator sends concept-shifted traffic with delayed
feedback; the online learner runs in shadow over the answers (prequential);
`python -m lifecycle.feedback loop --trigger alert --promote` sees the monitoring alert,
retrains as a DVC experiment on original + production rows, judges the challenger against
v1 on the newest labelled window (which neither trained on), and registers v1.1.0 in prod
with its evidence. A running blue/green server serving v1 takes v1.1.0 up under load (the
admin API loads it into the idle slot, then switches; no restart) with no failed request;
its realized ROC AUC on the next window is above v1's on the same rows (`watch` keeps it).
Then the stale v1 bundle, forced back into prod as v1.2.0 without the gate, is rolled back by
`watch` after its first window: GTO prod returns to v1.1.0 and the server's previous slot is
live again.

Traffic comes from the test split's customers (lifecycle/monitoring/simulate.py says why that
is sound), cut into two disjoint halves: the first plays the production rows retraining uses,
the second the newer windows the gate and the rollback rule judge on.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest
import yaml

from lifecycle.feedback import rollout
from lifecycle.serving.loadgen import run_load
from tests.conftest import ROOT, run
from tests.helpers_serving import ADMIN_TOKEN, BIN, Server, records_from, signature_of

GIT_USER = ["-c", "user.name=t", "-c", "user.email=t@t"]


@pytest.fixture(scope="module")
def loop_repo(reproduced: Path, tmp_path_factory) -> Path:
    """A copy of the reproduced project (its DVC cache too), v1 committed and in prod, with the
    monitoring pipeline and small windows."""
    ws = tmp_path_factory.mktemp("loop") / "project"
    shutil.copytree(reproduced, ws, symlinks=True)
    shutil.copytree(ROOT / "monitoring", ws / "monitoring",
                    ignore=shutil.ignore_patterns("out", "dvc.lock"))
    config = yaml.safe_load((ws / "params.yaml").read_text())
    config["monitor"]["window"]["size"] = 300
    config["collect"]["production"]["judge_rows"] = 300
    config["feedback"]["rollback"]["window_rows"] = 300
    config["explain"].update(lime=False, n_repeats=1, samples=1, shap_rows=50)  # the retrain's
    #                                                  cost is the DAG's: keep its extras small
    (ws / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run(["git", "add", "-A"], ws)
    run(["git", *GIT_USER, "commit", "-qm", "v1"], ws)
    run(["gto", "register", "churn-model", "HEAD", "--version", "v1.0.0"], ws)
    run(["gto", "assign", "churn-model", "--version", "v1.0.0", "--stage", "prod"], ws)
    return ws


def simulate(server: Server, ws: Path, shift: str, pool: Path, rows: int, seed: int) -> dict:
    """`make simulate`: rows through /predict, each outcome 0.2 s after its answer."""
    proc = subprocess.run(
        [str(BIN / "python"), "-m", "lifecycle.monitoring.simulate", "--url", server.url,
         "--shift", shift, "--rows", str(rows), "--rate", "0", "--feedback-delay", "0.2",
         "--pool", str(pool), "--contract", str(ws / "contract.yaml"), "--seed", str(seed)],
        cwd=ws, capture_output=True, text=True, env=server.env)
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stderr.strip().splitlines()[-1].split(": ", 2)[2])
    assert counts["answered"] == counts["feedback"] == rows and not counts["failed"], counts
    return counts


def feedback_cli(ws: Path, registry: str, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "lifecycle.feedback", "--registry", registry, *args], ws,
               check=False, env={"SERVING_ADMIN_TOKEN": ADMIN_TOKEN})


def serve(ws: Path, where: Path, registry: str, deployment: dict) -> Server:
    where.mkdir(parents=True, exist_ok=True)
    (where / "deploy.yaml").write_text(yaml.safe_dump(deployment, sort_keys=False))
    return Server("--deployment", str(where / "deploy.yaml"), "--repo", str(ws), cwd=where,
                  registry=registry)


def deploy_under_load(server: Server, customers: list[dict], version: str) -> dict:
    """Load on /predict while the running server takes `version` up (no restart): the admin API
    loads it into the idle slot, then switches to it. Every request must get a 200."""
    async def scenario():
        bodies = [orjson.dumps(c) for c in customers]
        load = asyncio.create_task(run_load(f"{server.url}/predict", bodies, requests=600,
                                            concurrency=8))
        await asyncio.sleep(0.3)
        state = await asyncio.to_thread(rollout.deploy_version, server.url, ADMIN_TOKEN,
                                        version)
        return await load, state

    result, state = asyncio.run(scenario())
    assert state["live"] == "green"
    assert result["statuses"] == {"200": 600} and not result["errors"], result
    live = httpx.get(f"{server.url}/metadata").json()["variants"]["green"]
    assert live["source"] == f"churn-model@{version}"
    answer = httpx.post(f"{server.url}/predict", json=customers[0]).json()
    assert answer["variant"] == "green" and answer["model_version"] == live["model_version"]
    return result


def test_alert_retrain_promote_switch_recover_and_roll_back(loop_repo: Path, tmp_path: Path):
    ws = loop_repo
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    test = pd.read_parquet(ws / "data" / "processed" / "test.parquet")
    half = len(test) // 2
    older, newer = tmp_path / "older.parquet", tmp_path / "newer.parquet"
    test.iloc[:half].to_parquet(older)
    test.iloc[half:].to_parquet(newer)
    customers = records_from(ws / "data/processed/validation.parquet",
                             signature_of(ws / "models" / "bundle"), 300)

    # 1. v1 serves shifted traffic; outcomes arrive 0.2 s after each answer
    v1_only = {"name": "loop", "strategy": "single", "variants": {"main": {"stage": "prod"}}}
    with serve(ws, tmp_path / "s1", registry, v1_only) as s1:
        simulate(s1, ws, "concept", older, half, seed=2)
        simulate(s1, ws, "concept", newer, 300, seed=3)  # the newest labelled window

    # the online learner in shadow over the same answers, judged by the same gate
    proc = feedback_cli(ws, registry, "online")
    assert proc.returncode in (0, 2), proc.stderr
    online = json.loads((ws / "metrics" / "online.json").read_text())
    assert online["events_learned"] == half and online["prequential_roc_auc"] > 0.6
    assert online["decision"]["primary"]["rows"] == 300

    # 2. the alert starts the loop: retrain (dvc exp run), judge, promote
    proc = feedback_cli(ws, registry, "loop", "--trigger", "alert", "--promote",
                        "--name", "retrain-1")
    assert proc.returncode == 0, proc.stderr
    assert "monitoring raised an alert" in proc.stderr and "registered v1.1.0" in proc.stderr
    promotion = json.loads((ws / "metrics" / "promotion.json").read_text())
    primary = promotion["decision"]["primary"]
    assert promotion["promote"] and primary["method"] == "delong"
    assert primary["difference"] >= promotion["decision"]["min_effect"] and primary["low"] > 0
    assert promotion["window"]["rows_scored"] == 300
    assert all(g["passed"] for g in promotion["decision"]["guardrails"])
    assert "retrain-1" in run(["dvc", "exp", "list", "--all-commits"], ws).stdout
    manifest = json.loads((ws / "data" / "raw" / "manifest.json").read_text())
    assert manifest["train_on"] == "both" and manifest["production"]["judge_rows"] == 300
    assert manifest["production"]["rows"] == half  # every older answer, none of the newest
    assert rollout.prod_version("churn-model", ws) == "v1.1.0"
    tag = run(["git", "tag", "-l", "--format=%(contents)", "churn-model@v1.1.0"], ws).stdout
    assert "gate: PROMOTE" in tag and "delong" in tag  # the evidence, in the registry

    # 3. a blue/green server running v1 takes v1.1.0 up under load: load, switch, no failure
    blue_green = {"name": "loop", "strategy": "blue_green", "active": "blue",
                  "variants": {"blue": {"version": "v1.0.0"}, "green": {"version": "v1.0.0"}}}
    with serve(ws, tmp_path / "s2", registry, blue_green) as s2:
        deploy_under_load(s2, customers, "v1.1.0")
        simulate(s2, ws, "concept", newer, 300, seed=4)  # the next window, on v1.1.0
    proc = feedback_cli(ws, registry, "watch", "--new", "v1.1.0", "--old", "v1.0.0")
    assert proc.returncode == 0 and "kept" in proc.stderr, proc.stderr
    kept = json.loads((ws / "metrics" / "rollback.json").read_text())
    assert not kept["rollback"] and kept["rows"] == 300
    assert kept["new"] > kept["old"]  # recovered: above v1 on the same rows
    print(f"\nE2E gate: {json.dumps(primary)}\nE2E next window: {json.dumps(kept)}")

    # 4. a worse model forced into prod without the gate (v1's stale bundle as v1.2.0)
    v1_commit = run(["git", "rev-list", "-n", "1", "churn-model@v1.0.0"], ws).stdout.strip()
    run(["git", "checkout", v1_commit, "--", "dvc.lock"], ws)
    run(["git", *GIT_USER, "commit", "-qm", "force the stale model"], ws)
    run(["gto", "register", "churn-model", "HEAD", "--version", "v1.2.0"], ws)
    run(["gto", "assign", "churn-model", "--version", "v1.2.0", "--stage", "prod"], ws)
    worse = {"name": "loop", "strategy": "blue_green", "active": "blue",
             "variants": {"blue": {"version": "v1.1.0"}, "green": {"version": "v1.1.0"}}}
    with serve(ws, tmp_path / "s3", registry, worse) as s3:
        deploy_under_load(s3, customers, "v1.2.0")
        simulate(s3, ws, "concept", newer, 300, seed=5)  # one window on the worse model
        proc = feedback_cli(ws, registry, "--server", s3.url, "watch", "--new", "v1.2.0",
                            "--old", "v1.1.0")
        assert proc.returncode == 3 and "ROLLED BACK" in proc.stderr, proc.stderr
        state = httpx.get(f"{s3.url}/metadata").json()["deployment"]
        assert state["live"] == "blue" and state["previous"] == "green"
        answer = httpx.post(f"{s3.url}/predict", json=customers[0]).json()
        assert answer["variant"] == "blue"
    verdict = json.loads((ws / "metrics" / "rollback.json").read_text())
    assert verdict["rollback"] and verdict["difference_interval"][1] < 0
    assert rollout.prod_version("churn-model", ws) == "v1.1.0"
    print(f"E2E rollback: {json.dumps(verdict)}")
