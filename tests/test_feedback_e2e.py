"""The feedback loop end to end, in a temporary repo with the real server, DVC and GTO, driven by
the commands a user runs (`python -m lifecycle.feedback ...`, what the make targets run):

One blue/green server serves v1 (GTO stage prod) in both slots the whole time. The simulator
sends concept-shifted traffic with delayed feedback; the online learner runs in shadow over the
answers (prequential). `loop --trigger alert --promote --server` (`make feedback-loop`) sees
the monitoring alert, retrains as a DVC experiment on original + production rows, and the gate
promotes the challenger against v1 on the newest labelled window (which neither trained on);
with a wrong admin token the server refuses it, and the promotion is undone: prod stays v1, no
version registered, nothing committed, the server still serves v1 (exit 1, one line). The same
with no server listening. Then `promote --server` (`make promote`) registers v1.1.0 in prod and
the running server takes it up under load (loaded into its idle slot, switched to; no restart)
with no failed request. Its realized ROC AUC on the next window is above v1's on the same rows
(`watch` keeps it). Then the stale v1 bundle, forced into prod as v1.2.0 without the gate
(`gto` and the admin API, as a user would), is rolled back by `watch --server` after its first
window: GTO prod returns to v1.1.0 and the server's previous slot is live again.

Traffic comes from the test split's customers (lifecycle/monitoring/simulate.py says why that
is sound), cut into two disjoint halves: the first plays the production rows retraining uses,
the second the newer windows the gate and the rollback rule judge on.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest

from lifecycle.feedback import rollout
from tests.conftest import run
from tests.helpers_feedback import GIT_USER, feedback_cli, project_with_v1, serve, simulate
from tests.helpers_process import free_port
from tests.helpers_serving import Server, records_from, signature_of


@pytest.fixture(scope="module")
def loop_repo(reproduced: Path, tmp_path_factory) -> Path:
    """The reproduced project, v1 in prod, the monitoring pipeline, windows of 300."""
    return project_with_v1(reproduced, tmp_path_factory.mktemp("loop") / "project", 300)


@contextmanager
def shifted_traffic_served(ws: Path, where: Path, registry: str):
    """A blue/green server with v1.0.0 in both slots that has answered concept-shifted traffic,
    outcomes 0.2 s after each answer: the test split's older half (what retraining may learn),
    then 300 of its newer half (the newest labelled window). Yields (server, rows in the older
    half, the newer half's Parquet file, 300 validation customers as API records for load)."""
    test = pd.read_parquet(ws / "data" / "processed" / "test.parquet")
    half = len(test) // 2
    older, newer = where / "older.parquet", where / "newer.parquet"
    test.iloc[:half].to_parquet(older)
    test.iloc[half:].to_parquet(newer)
    customers = records_from(ws / "data/processed/validation.parquet",
                             signature_of(ws / "models" / "bundle"), 300)
    blue_green = {"name": "loop", "strategy": "blue_green", "active": "blue",
                  "variants": {"blue": {"version": "v1.0.0"}, "green": {"version": "v1.0.0"}}}
    with serve(ws, where / "server", registry, blue_green) as server:
        simulate(server, ws, "concept", older, half, seed=2)
        simulate(server, ws, "concept", newer, 300, seed=3)  # the newest labelled window
        yield server, half, newer, customers


class Load:
    """Steady load on /predict from a few threads until stopped: every status and every answer's
    (variant, model version)."""

    def __init__(self, url: str, customers: list[dict], threads: int = 4):
        self.url, self.customers = url, customers
        self.statuses: list[int] = []
        self.served: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, offset: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = offset
            while not self._stop.is_set():
                try:
                    r = client.post(f"{self.url}/predict",
                                    json=self.customers[i % len(self.customers)])
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                else:
                    self.statuses.append(r.status_code)
                    if r.status_code == 200:
                        self.served.append((r.json()["variant"], r.json()["model_version"]))
                i += len(self._threads)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        while len(self.statuses) < 20 and not self.errors:  # answering before the change
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def state_of(server: Server) -> tuple[dict, dict]:
    meta = httpx.get(f"{server.url}/metadata").json()
    return meta["deployment"], {n: v["source"] for n, v in meta["variants"].items()}


def test_alert_retrain_promote_switch_recover_and_roll_back(loop_repo: Path, tmp_path: Path):
    ws = loop_repo
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    # 1. v1 serves shifted traffic; outcomes arrive 0.2 s after each answer
    with shifted_traffic_served(ws, tmp_path, registry) as (server, half, newer, customers):
        # the online learner in shadow over the same answers, judged by the same gate
        proc = feedback_cli(ws, registry, "online")
        assert proc.returncode in (0, 2), proc.stderr
        online = json.loads((ws / "metrics" / "online.json").read_text())
        assert online["events_learned"] == half and online["prequential_roc_auc"] > 0.6
        assert online["decision"]["primary"]["rows"] == 300

        # 2. the alert starts the loop: retrain (dvc exp run), judge, promote; the server
        # refuses the admin token, so the promotion is undone
        head = run(["git", "rev-parse", "HEAD"], ws).stdout
        proc = feedback_cli(ws, registry, "--server", server.url, "loop", "--trigger", "alert",
                            "--promote", "--name", "retrain-1", token="wrong-token")
        assert proc.returncode == 1, proc.stderr
        assert "monitoring raised an alert" in proc.stderr and "gate: PROMOTE" in proc.stderr
        error = proc.stderr.strip().splitlines()[-1]
        assert error.startswith("feedback: error: v1.1.0 NOT promoted (") and "HTTP 401" in error
        assert ("undone: prod stays v1.0.0, v1.1.0 is not registered, the challenger's results "
                "are staged, not committed, the server at") in error
        assert "serves churn-model@v1.0.0 (live slot blue)" in error
        assert_not_promoted(ws, server, head)
        promotion = json.loads((ws / "metrics" / "promotion.json").read_text())
        primary = promotion["decision"]["primary"]
        assert promotion["promote"] and primary["method"] == "delong"
        assert primary["difference"] >= promotion["decision"]["min_effect"]
        assert primary["low"] > 0 and promotion["window"]["rows_scored"] == 300
        assert all(g["passed"] for g in promotion["decision"]["guardrails"])
        assert "retrain-1" in run(["dvc", "exp", "list", "--all-commits"], ws).stdout
        manifest = json.loads((ws / "data" / "raw" / "manifest.json").read_text())
        assert manifest["train_on"] == "both" and manifest["production"]["judge_rows"] == 300
        assert manifest["production"]["rows"] == half  # every older answer, none of the newest
        # the simulator's customers are new ones: preprocess keeps their rows (a replayed
        # customer's row duplicates the source's and is removed)
        trained = pd.concat([pd.read_parquet(ws / "data" / "processed" / f"{name}.parquet")
                             for name in ("train", "validation", "test")])
        assert trained["customer_id"].str.startswith("masked:").sum() >= 0.98 * half

        # no server listening: the same undo, one line
        proc = feedback_cli(ws, registry, "--server", f"http://127.0.0.1:{free_port()}",
                            "promote")
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "cannot reach the server" in proc.stderr and "prod stays v1.0.0" in proc.stderr
        assert_not_promoted(ws, server, head)

        # 3. `make promote SERVER=...`: registered in prod, the running server takes it up
        # under load (loaded into the idle slot, switched to), no failed request
        with Load(server.url, customers) as load:
            proc = feedback_cli(ws, registry, "--server", server.url, "promote")
            assert proc.returncode == 0, proc.stderr
        assert "registered v1.1.0 in prod (was v1.0.0); server live slot green" in proc.stderr
        assert not load.errors and set(load.statuses) == {200}, (load.errors, load.statuses)
        print(f"\nE2E promote under load: {len(load.statuses)} requests, all 200")
        versions = {v for _, v in load.served}
        deployment, sources = state_of(server)
        assert deployment["live"] == "green" and sources["green"] == "churn-model@v1.1.0"
        v11 = httpx.get(f"{server.url}/metadata").json()["variants"]["green"]["model_version"]
        assert load.served[0][0] == "blue" and load.served[-1] == ("green", v11)
        assert len(versions) == 2  # the old version answered, then the new one, no gap
        assert rollout.prod_version("churn-model", ws) == "v1.1.0"
        tag = run(["git", "tag", "-l", "--format=%(contents)", "churn-model@v1.1.0"], ws).stdout
        assert "gate: PROMOTE" in tag and "delong" in tag  # the evidence, in the registry
        assert not run(["git", "status", "--porcelain", "--untracked-files=no", "dvc.lock"],
                       ws).stdout.strip()

        # 4. the next window, on v1.1.0: recovered, kept
        simulate(server, ws, "concept", newer, 300, seed=4)
        proc = feedback_cli(ws, registry, "--server", server.url, "watch", "--new", "v1.1.0",
                            "--old", "v1.0.0")
        assert proc.returncode == 0 and "kept" in proc.stderr, proc.stderr
        kept = json.loads((ws / "metrics" / "rollback.json").read_text())
        assert not kept["rollback"] and kept["rows"] == 300
        assert kept["new"] > kept["old"]  # recovered: above v1 on the same rows
        print(f"\nE2E gate: {json.dumps(primary)}\nE2E next window: {json.dumps(kept)}")

        # 5. a worse model forced into prod without the gate (v1's stale bundle as v1.2.0):
        # `make register VERSION=v1.2.0 STAGE=prod`, then the admin API loads it and switches
        v1_commit = run(["git", "rev-list", "-n", "1", "churn-model@v1.0.0"], ws).stdout.strip()
        run(["git", "checkout", v1_commit, "--", "dvc.lock"], ws)
        run(["git", *GIT_USER, "commit", "-qm", "force the stale model"], ws)
        run(["gto", "register", "churn-model", "HEAD", "--version", "v1.2.0"], ws)
        run(["gto", "assign", "churn-model", "--version", "v1.2.0", "--stage", "prod"], ws)
        for path, body in (("/admin/load", {"slot": "blue", "version": "v1.2.0"}),
                           ("/admin/switch", {})):
            r = httpx.post(f"{server.url}{path}", json=body, headers=server.admin(), timeout=60)
            assert r.status_code == 200, r.text
        simulate(server, ws, "concept", newer, 300, seed=5)  # one window on the worse model
        proc = feedback_cli(ws, registry, "--server", server.url, "watch", "--new", "v1.2.0",
                            "--old", "v1.1.0")
        assert proc.returncode == 3 and "ROLLED BACK" in proc.stderr, proc.stderr
        deployment, sources = state_of(server)
        assert deployment["live"] == "green" and deployment["previous"] == "blue"
        assert sources["green"] == "churn-model@v1.1.0"
        answer = httpx.post(f"{server.url}/predict", json=customers[0]).json()
        assert answer["variant"] == "green" and answer["model_version"] == v11
    verdict = json.loads((ws / "metrics" / "rollback.json").read_text())
    assert verdict["rollback"] and verdict["difference_interval"][1] < 0
    assert rollout.prod_version("churn-model", ws) == "v1.1.0"
    print(f"E2E rollback: {json.dumps(verdict)}")


def assert_not_promoted(ws: Path, server: Server, head: str) -> None:
    """An undone promotion: prod, the tags, HEAD and the server as before; results staged."""
    assert rollout.prod_version("churn-model", ws) == "v1.0.0"
    assert rollout.versions("churn-model", ws) == ["v1.0.0"]
    assert run(["git", "rev-parse", "HEAD"], ws).stdout == head
    assert "dvc.lock" in run(["git", "diff", "--cached", "--name-only"], ws).stdout
    deployment, sources = state_of(server)
    assert deployment["live"] == "blue" and deployment["previous"] is None
    assert sources["blue"] == "churn-model@v1.0.0"
