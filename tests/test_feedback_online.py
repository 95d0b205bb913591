"""The online learner promoted end to end: a river learner fed the registry's feedback events in
shadow (checkpointed, resumed, judged), packaged by the DAG as a bundle (converted to
scikit-learn, parity checked, ONNX checked), judged by the whole gate, registered with GTO and
taken up by a running blue/green server under load with no failed request; its answers are
recorded in the registry with its version. And the bad cases, each one line: a learner that
cannot be converted, a parity failure, a learner with no events.

Same setting as tests/test_feedback_e2e.py (its fixture and helpers): v1 in prod, the test
split's customers cut in two halves, concept-shifted traffic with delayed feedback.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.base import clone

from lifecycle import features
from lifecycle.errors import StageError
from lifecycle.feedback import online, rollout
from lifecycle.feedback.online import OnlineLearner
from lifecycle.feedback.online_bundle import ready
from lifecycle.packaging.runtime import load_bundle
from lifecycle.serving.deploy import VariantSpec, fetch_bundle
from tests.conftest import run
from tests.helpers_feedback import feedback_cli, simulate
from tests.helpers_serving import registry_rows
from tests.helpers_stages import assert_one_error_line, run_stage_process, set_params
from tests.test_feedback_e2e import (  # noqa: F401 - loop_repo: the fixture
    loop_repo,
    shifted_traffic_served,
)

CHECKPOINT = Path("models/online/learner.json")


@pytest.fixture(scope="module")
def rows(reproduced: Path):
    """(featurizer, train (X, y), test (X, y)) of the demo's real bundle."""
    bundle = load_bundle(reproduced / "models" / "bundle")

    def prepared(frame):
        return (features.model_frame(frame, bundle.contract, bundle.inference["derived"]),
                (frame["churn"].astype(str) == "Yes").to_numpy(int))

    return (bundle.pipeline.named_steps["features"],
            prepared(pd.read_parquet(reproduced / "data/processed/train.parquet")),
            prepared(pd.read_parquet(reproduced / "data/processed/test.parquet")))


def learner_on(featurizer, train, events, start: int, stop: int, learner=None):
    learner = learner or OnlineLearner(featurizer, "logistic_regression", 0.05, 42).warm(
        *train, "train-sha")
    X, y = events
    ids = [f"r{i}" for i in range(start, stop)]
    learner.learn_events(X.iloc[start:stop], y[start:stop], ids, ids)
    return learner


def test_checkpoint_resumed_gives_the_bytes_of_a_replay(rows, tmp_path):
    featurizer, train, test = rows
    half = len(test[1]) // 2
    first = learner_on(featurizer, train, test, 0, half)
    online.save_checkpoint(first, tmp_path / "a.json")
    restored = OnlineLearner.from_state(online.read_checkpoint(tmp_path / "a.json"), featurizer)
    assert np.array_equal(restored.predict(test[0]), first.predict(test[0]))  # exactly
    resumed = learner_on(featurizer, train, test, half, len(test[1]), restored)
    replayed = learner_on(featurizer, train, test, 0, len(test[1]))
    assert online.save_checkpoint(resumed, tmp_path / "b.json") == \
        online.save_checkpoint(replayed, tmp_path / "c.json")
    assert resumed.events == len(test[1]) and resumed.last_event["request_id"] == \
        f"r{len(test[1]) - 1}"


def test_converted_model_gives_the_learner_probabilities(rows):
    featurizer, train, test = rows
    learner = learner_on(featurizer, train, test, 0, 400)
    Z = featurizer.transform(test[0])
    estimator = learner.to_estimator(np.array([0, 1]), Z.columns)
    report = online.check_parity(learner, estimator, Z)
    assert report["ok"] and report["rows"] == len(test[1])
    assert report["max_difference"] <= 1e-12  # the same weights, summed in another order
    assert np.array_equal(estimator.coef_[0], learner.state()["weights"])


def test_bad_learners_are_refused_in_one_line(rows, reproduced, tmp_path):
    featurizer, train, test = rows
    tree = OnlineLearner(featurizer, "hoeffding_tree", 0.05, 42).warm(*train)
    with pytest.raises(StageError, match="Hoeffding tree has no checkpoint and no scikit-learn"):
        tree.to_estimator(np.array([0, 1]))
    learner = learner_on(featurizer, train, test, 0, 200)
    Z = featurizer.transform(test[0])
    wrong = learner.to_estimator(np.array([0, 1]), Z.columns)
    wrong.coef_ = wrong.coef_ * 1.001   # a conversion that is off
    with pytest.raises(StageError) as caught:
        online.check_parity(learner, wrong, Z)
    assert "disagrees with the online learner" in str(caught.value)
    assert "\n" not in str(caught.value)
    # a learner with no feedback events: its checkpoint cannot be packaged
    champion = load_bundle(reproduced / "models" / "bundle")
    idle = OnlineLearner(featurizer, "logistic_regression", 0.05, 42).warm(*train)
    online.save_checkpoint(idle, tmp_path / "idle.json")
    with pytest.raises(StageError, match="learned no feedback events"):
        online.packaged_estimator(tmp_path / "idle.json", champion, Z, Z)
    shadow = {"learner": "logistic_regression", "seen": {"events": 0}, "promote": True}
    with pytest.raises(StageError, match="learned no feedback events: nothing to promote"):
        ready(shadow, None)


@pytest.mark.parametrize("case, words", [
    ("no events", "the learner has learned no feedback events"),
    ("another featurizer", "learned over another featurizer than train.champion's"),
])
def test_train_stage_refuses_a_checkpoint_in_one_line(case, words, rows, featurized, reproduced,
                                                      tmp_path):
    """`train.mode: online` as DVC runs it (its own process): a checkpoint it cannot package
    stops the stage with one line naming train.online."""
    featurizer, train, test = rows
    ws = tmp_path / "project"
    shutil.copytree(featurized, ws)
    learner = OnlineLearner(featurizer, "logistic_regression", 0.05, 42).warm(*train)
    if case == "another featurizer":
        learner = learner_on(featurizer, train, test, 0, 100, learner)
        learner.featurizer = clone(featurizer).fit(test[0].head(500))
    online.save_checkpoint(learner, ws / "learner.json")
    set_params(ws, {"train.mode": "online", "train.online": "learner.json",
                    "train.champion": str(reproduced / "models" / "bundle")})
    proc = run_stage_process(ws, "train")
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "train", "train.online: learner.json", words)


class SlowLoad:
    """/predict about 40 times a second from one thread until stopped: every status and every
    answer's (variant, model version)."""

    def __init__(self, url: str, customers: list[dict]):
        self.url, self.customers = url, customers
        self.statuses: list[int] = []
        self.served: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                r = client.post(f"{self.url}/predict", json=self.customers[i % len(self.customers)])
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.served.append((r.json()["variant"], r.json()["model_version"]))
                i += 1
                time.sleep(0.025)

    def __enter__(self) -> SlowLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_online_learner_packaged_promoted_and_served(loop_repo: Path, tmp_path: Path):  # noqa: F811
    ws = loop_repo
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    with shifted_traffic_served(ws, tmp_path, registry) as (server, half, newer, customers):
        # a learner that cannot be converted: shadow only, its promotion refused in one line
        set_params(ws, {"feedback.online.model": "hoeffding_tree"})
        proc = feedback_cli(ws, registry, "online", "--promote")
        set_params(ws, {"feedback.online.model": "logistic_regression"})
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            f"feedback: error: the online learner cannot be converted: {online.NOT_CONVERTIBLE}")
        assert not (ws / CHECKPOINT).exists()

        # in shadow: every older answer learned (prequential), judged on the newest window
        proc = feedback_cli(ws, registry, "online")
        assert proc.returncode == 0, proc.stderr
        shadow = json.loads((ws / "metrics" / "online.json").read_text())
        assert shadow["events_learned"] == shadow["events_this_run"] == half
        assert shadow["checkpoint"]["how"] == "replayed from scratch (no checkpoint yet)"
        assert shadow["seen"]["last_event"]["created_at"] < \
            shadow["window"]["first_answer"]["created_at"]  # it never learned the window
        assert shadow["decision"]["primary"]["rows"] == 300 and shadow["promote"]
        saved = (ws / CHECKPOINT).read_bytes()
        # a restart resumes from the checkpoint; a replay from scratch gives the same bytes
        proc = feedback_cli(ws, registry, "online")
        assert proc.returncode == 0, proc.stderr
        again = json.loads((ws / "metrics" / "online.json").read_text())
        assert again["checkpoint"]["how"] == f"resumed after {half} events"
        assert again["events_this_run"] == 0 and (ws / CHECKPOINT).read_bytes() == saved
        (ws / CHECKPOINT).unlink()
        assert feedback_cli(ws, registry, "online").returncode == 0
        assert (ws / CHECKPOINT).read_bytes() == saved

        # the learner followed the concept shift: on the original test split (the old concept)
        # it misses evaluate's floor, and packaging stops there, in one line
        proc = feedback_cli(ws, registry, "online", "--promote")
        assert proc.returncode == 1, proc.stderr
        assert "feedback: error: packaging the online learner failed: evaluate: error: quality " \
            "gate failed: roc_auc" in proc.stderr.strip().splitlines()[-1]
        assert rollout.prod_version("churn-model", ws) == "v1.0.0"
        assert yaml.safe_load((ws / "params.yaml").read_text())["train"]["mode"] == "full"

        # that floor lowered on purpose (recorded): packaged, then the whole gate judges the
        # bundle: better by far, but at its own threshold it flags fewer month-to-month churners
        # than v1 beyond the segment guardrail's tolerance: the champion is kept
        floor = ["--set", "evaluate.gate.worst_acceptable=0.6"]
        proc = feedback_cli(ws, registry, "online", "--promote", *floor)
        assert proc.returncode == 2, proc.stderr
        assert "gate: KEEP CHAMPION" in proc.stderr and \
            "why not: guardrail recall[contract=Month-to-month]" in proc.stderr
        assert rollout.prod_version("churn-model", ws) == "v1.0.0"

        # with a looser segment policy: promoted, registered, and the running server switches
        set_params(ws, {"feedback.gate.guardrails.segment_tolerance": 0.1})
        started = time.monotonic()
        with SlowLoad(server.url, customers) as load:
            proc = feedback_cli(ws, registry, "--server", server.url, "online", "--promote",
                                "--name", "online-1", *floor)
        promote_seconds = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr
        assert "registered v1.1.0 (the online learner) in prod" in proc.stderr
        assert set(load.statuses) == {200}, load.statuses  # no failed request
        state = httpx.get(f"{server.url}/metadata").json()
        assert state["deployment"]["live"] == "green"
        assert state["variants"]["green"]["source"] == "churn-model@v1.1.0"
        new_version = state["variants"]["green"]["model_version"]
        assert {v for _, v in load.served} >= {new_version}
        simulate(server, ws, "concept", newer, 300, seed=4)  # answered by the online model
    served = registry_rows(registry)
    mine = served[(served["model_version"] == new_version) & (served["role"] == "served")]
    assert len(mine) >= 300 and set(mine["variant"]) == {"green"}

    promotion = json.loads((ws / "metrics" / "promotion.json").read_text())
    assert promotion["promote"] and promotion["decision"]["primary"]["method"] == "delong"
    assert all(g["passed"] for g in promotion["decision"]["guardrails"])
    assert promotion["online"]["seen"]["events"] == half
    tag = run(["git", "tag", "-l", "--format=%(contents)", "churn-model@v1.1.0"], ws).stdout
    assert "gate: PROMOTE" in tag and f"then {half} feedback events" in tag
    assert "-S evaluate.gate.worst_acceptable=0.6" in tag
    # the version's commit: built in train.mode online from the checkpoint it holds
    at = "churn-model@v1.1.0"
    params_then = yaml.safe_load(run(["git", "show", f"{at}:params.yaml"], ws).stdout)["train"]
    assert params_then["mode"] == "online"
    checkpoint = json.loads(run(["git", "show", f"{at}:{params_then['online']}"], ws).stdout)
    report = json.loads(run(["git", "show", f"{at}:metrics/train.json"], ws).stdout)
    assert report["mode"] == "online" and report["online"]["events"] == half
    assert report["online"]["parity"]["ok"] and report["online"]["parity"]["max_difference"] <= 1e-9
    package = json.loads(run(["git", "show", f"{at}:metrics/package.json"], ws).stdout)
    assert package["onnx_vs_sklearn"]["ok"] and package["version"] == new_version
    # the registered bundle (fetched as the server fetched it) is the learner, weight for weight
    fetched = fetch_bundle(VariantSpec(version="v1.1.0"), "churn-model", ws)
    bundle = load_bundle(fetched)
    card = (fetched / "model_card.md").read_text()
    assert "the online learner's weights" in card and "mode: online" in card
    assert "class_weight" not in card  # train fitted nothing: its family's knobs do not apply
    v1 = fetch_bundle(VariantSpec(version="v1.0.0"), "churn-model", ws) / "model_card.md"
    assert "mode:" not in v1.read_text() and "online:" not in v1.read_text()  # full mode
    assert bundle.pipeline[-1].coef_[0].tolist() == checkpoint["weights"]
    learner = OnlineLearner.from_state(checkpoint, bundle.pipeline.named_steps["features"])
    sample = pd.read_parquet(newer).head(300)
    ok, _ = bundle.check_rows(sample)
    X = features.model_frame(ok, bundle.contract, bundle.inference["derived"])
    assert np.abs(bundle.scores(ok, engine="sklearn")[:, 1] - learner.predict(X)).max() <= 1e-9
    # and the workspace is back to batch retraining
    assert yaml.safe_load((ws / "params.yaml").read_text())["train"]["mode"] == "full"
    assert run(["git", "status", "--porcelain", "params.yaml"], ws).stdout == ""
    # the learner goes on from where the served version stopped (the same featurizer): the
    # old window's 300 answers are events now, the served version's 300 the new window
    assert feedback_cli(ws, registry, "online").returncode in (0, 2)
    later = json.loads((ws / "metrics" / "online.json").read_text())
    assert later["checkpoint"]["how"] == f"resumed after {half} events"
    assert later["events_this_run"] == 300 and later["champion_version"] == "v1.1.0"
    print(f"\nONLINE gate: {json.dumps(promotion['decision']['primary'])}\n"
          f"ONLINE promote step: {promote_seconds:.0f} s, {len(load.statuses)} requests "
          f"meanwhile, load average {os.getloadavg()[0]:.1f}\n"
          f"ONLINE parity: {json.dumps(report['online']['parity'])}; "
          f"ONNX: {json.dumps(package['onnx_vs_sklearn'])}")
