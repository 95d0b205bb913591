"""Feedback-loop test helpers: a project with v1 in prod, the simulator, the loop's command
line, a server over a deployment file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import run
from tests.helpers_serving import ADMIN_TOKEN, BIN, Server

GIT_USER = ["-c", "user.name=t", "-c", "user.email=t@t"]


def project_with_v1(reproduced: Path, ws: Path, window: int) -> Path:
    """A copy of the reproduced project at `ws` (its DVC cache and monitoring pipeline too), v1
    committed and in prod, with windows of `window` answers (monitoring, the gate's judge
    window, the rollback window)."""
    shutil.copytree(reproduced, ws, symlinks=True)
    config = yaml.safe_load((ws / "params.yaml").read_text())
    config["monitor"]["window"]["size"] = window
    config["collect"]["production"]["judge_rows"] = window
    config["feedback"]["rollback"]["window_rows"] = window
    config["explain"].update(lime=False, n_repeats=1, samples=1, shap_rows=50)  # the retrain's
    #                                                  cost is the DAG's: keep its extras small
    # sub-millisecond p95s timed on a shared 2-core machine at load 10+ differ by 70% between
    # two equal logistic bundles: the latency guardrail's rule is tested in test_feedback_gate,
    # here it would only add the machine's noise to the loop's decisions
    config["feedback"]["gate"]["guardrails"]["latency_tolerance"] = 5.0
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


def feedback_cli(ws: Path, registry: str, *args: str, token: str = ADMIN_TOKEN
                 ) -> subprocess.CompletedProcess:
    """`python -m lifecycle.feedback --registry ... <args>`: what the make targets run."""
    return run([sys.executable, "-m", "lifecycle.feedback", "--registry", registry, *args], ws,
               check=False, env={"SERVING_ADMIN_TOKEN": token})


def serve(ws: Path, where: Path, registry: str, deployment: dict) -> Server:
    where.mkdir(parents=True, exist_ok=True)
    (where / "deploy.yaml").write_text(yaml.safe_dump(deployment, sort_keys=False))
    return Server("--deployment", str(where / "deploy.yaml"), "--repo", str(ws), cwd=where,
                  registry=registry)
