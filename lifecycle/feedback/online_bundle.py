"""The online learner promoted like any challenger: packaged by the DAG into a bundle, judged by
the whole gate, registered with GTO, taken up by the running server.

`promote` (what `python -m lifecycle.feedback online --promote` does after the shadow run):

1. the shadow's judgement (metrics/online.json) must say promote, of a learner that learned
   feedback events and can be converted (logistic regression; checked here, before any DVC run);
2. its checkpoint and the champion's bundle are copied under models/online/ at paths named by
   their content, so a newer checkpoint is a changed param and DVC reruns train;
3. `dvc exp run -S train.mode=online -S train.champion=<copy> -S train.online=<copy>
   -S train.model=logistic_regression`: featurize reuses the champion's featurizer as fitted,
   train converts the learner to a scikit-learn LogisticRegression and refuses it unless its
   probabilities equal the learner's on every train and validation row (1e-9); evaluate,
   explain and package run as for any model (package: ONNX vs scikit-learn parity, hashes);
4. the bundle against the champion on the same judge window, by the whole gate
   (`loop.judge`: guardrails included); its ROC AUC there must be the shadow's (the same model);
5. `loop.promote`: commit, next GTO version in prod (the evidence names the events the learner
   had seen), the server loads it into its idle slot and switches;
6. params.yaml goes back to what it was (a second commit after a promotion), so the next batch
   retrain is a batch retrain; dvc.lock at the version's commit keeps how its bundle was built.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from lifecycle import io, params
from lifecycle.errors import StageError
from lifecycle.feedback import loop, rollout
from lifecycle.feedback.online import NOT_CONVERTIBLE, read_checkpoint
from lifecycle.feedback.settings import FeedbackParams
from lifecycle.feedback.shadow import ONLINE

SAME_AUC = 1e-3  # the bundle (ONNX, float32) and the shadow learner ranking the window alike


def ready(shadow: dict, checkpoint: dict | None) -> None:
    """StageError (one line) unless the shadow's learner can be packaged and should be."""
    if shadow["learner"] != "logistic_regression":
        raise StageError(f"the online learner cannot be converted: {NOT_CONVERTIBLE}")
    if not shadow["seen"]["events"]:
        raise StageError("the online learner has learned no feedback events: nothing to promote")
    if not shadow["promote"]:
        raise StageError("the gate did not promote the online learner in shadow: "
                         + "; ".join(shadow["decision"]["reasons"]))
    if checkpoint is None or checkpoint["events_digest"] != shadow["seen"]["events_digest"]:
        raise StageError("the online checkpoint is not the learner metrics/online.json judged: "
                         "run `python -m lifecycle.feedback online` again")


def exp_run(sets: dict[str, str], name: str | None, repo: Path) -> None:
    """`dvc exp run -S key=value ...`; a failed stage is its own one-line error."""
    cmd = ["dvc", "exp", "run", *[a for k, v in sets.items() for a in ("-S", f"{k}={v}")]]
    proc = subprocess.run(cmd + (["--name", name] if name else []), cwd=repo,
                          capture_output=True, text=True)
    if proc.returncode:
        text = (proc.stderr or "") + (proc.stdout or "")
        errors = [line for line in text.splitlines() if ": error: " in line]
        raise StageError("packaging the online learner failed: "
                         + (errors[-1].strip() if errors else text.strip().splitlines()[-1]))


def promote(repo: str | Path = ".", model: str = "churn-model", server: str | None = None,
            token: str | None = None, name: str | None = None,
            sets: dict[str, str] | None = None) -> dict:
    """Package the judged online learner, judge the bundle, register and deploy it (see the
    module's steps). `sets`: more params for the packaging experiment (`-S key=value`, e.g. the
    evaluate stage's floor on the original test split), recorded with the evidence; train.* is
    this function's. The result: loop.judge's, plus `online` (which events the learner had
    seen, its checkpoint, `sets`) and `promoted` (loop.promote's answer) when the gate said
    yes."""
    sets = dict(sets or {})
    if mine := [k for k in sets if k.split(".")[0] == "train"]:
        raise StageError(f"--set {mine[0]}: the train section is what online packaging sets")
    from lifecycle.packaging.runtime import load_bundle
    from lifecycle.serving.deploy import VariantSpec, fetch_bundle

    repo = Path(repo)
    fp = params.load("feedback", repo / "params.yaml", model=FeedbackParams)
    shadow = io.read_json(repo / ONLINE) if (repo / ONLINE).is_file() else None
    if shadow is None:
        raise StageError(f"no {ONLINE}: run `python -m lifecycle.feedback online` first")
    source = repo / fp.online.checkpoint
    ready(shadow, read_checkpoint(source) if source.is_file() else None)
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    checkpoint = Path(fp.online.checkpoint).parent / f"learner-{digest[:16]}.json"
    (repo / checkpoint).write_bytes(data)
    fetched = fetch_bundle(VariantSpec(stage="prod"), model, repo)
    champion = Path(fp.online.checkpoint).parent / f"champion-{load_bundle(fetched).version}"
    if not (repo / champion).is_dir():
        shutil.copytree(fetched, repo / champion)

    before, promoted = (repo / "params.yaml").read_bytes(), False
    try:
        exp_run({"train.mode": "online", "train.champion": str(champion),
                 "train.online": str(checkpoint), "train.model": "logistic_regression", **sets},
                name, repo)
        result = loop.judge(repo, model=model)
        online = {"checkpoint": str(checkpoint), "sha256": digest, "sets": sets,
                  "seen": shadow["seen"], "window_first_answer": shadow["window"]["first_answer"],
                  "shadow_roc_auc": shadow["decision"]["primary"]["challenger"]}
        result["online"] = online
        gap = abs(result["decision"]["primary"]["challenger"] - online["shadow_roc_auc"])
        if result["decision"]["primary"]["metric"] == "roc_auc" and gap > SAME_AUC:
            raise StageError(f"the packaged bundle ranks the judge window unlike the learner it "
                             f"packages (ROC AUC {result['decision']['primary']['challenger']:.4f}"
                             f" vs {online['shadow_roc_auc']:.4f}): not promoted")
        rollout.write_json(result, repo / loop.PROMOTION)
        if result["promote"]:  # the checkpoint it was built from goes into the version's commit
            rollout._git(["add", "-f", str(checkpoint)], repo)
            result["promoted"] = loop.promote(result, repo, model, server, token)
            promoted = True
    finally:  # the next retrain is a batch one again
        if (repo / "params.yaml").read_bytes() != before:
            (repo / "params.yaml").write_bytes(before)
            if promoted:
                rollout._git(["-c", "user.name=lifecycle", "-c", "user.email=lifecycle@localhost",
                              "commit", "-q", "-m", "params: train back as it was after "
                              "packaging the online learner", "params.yaml"], repo)
    return result

