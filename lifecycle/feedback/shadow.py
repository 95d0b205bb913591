"""The online learner in shadow: over the registry's labelled answers, checkpointed, judged.

`run` (what `python -m lifecycle.feedback online` does):

1. the champion (the bundle at GTO stage prod) and the newest `collect.production.judge_rows`
   labelled answers: the judge window, as for a batch challenger;
2. the learner: resumed from its checkpoint (`feedback.online.checkpoint`) when that checkpoint
   learned exactly the first events of today's stream over the same featurizer, warm rows and
   params; else replayed from scratch (one pass over the train split, then every event);
3. prequential over the answers before the window it has not learned yet (time order, ties by
   request id): each predicted, then learned; the checkpoint is written after them;
4. judged against the champion on the window, which it has not learned: it had seen the warm
   rows and exactly the events before the window's first answer (`seen` in metrics/online.json
   says which: count, last event, the hash chain of their request ids). Before packaging only
   the guardrails a bare learner has (calibration) apply; the packaged bundle then meets the
   whole gate (`online_bundle`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from lifecycle import params
from lifecycle.errors import StageError
from lifecycle.feedback import online, production, rollout
from lifecycle.feedback.settings import FeedbackParams

ONLINE = Path("metrics/online.json")


def resume(checkpoint: Path, featurizer, op, warm: dict, warm_rows, stream_ids: list[str]):
    """(learner, how it was obtained): the checkpoint's, when it is a prefix of today's stream
    over the same featurizer, warm rows (`warm`: their count and sha256) and params; else a
    fresh learner warmed on `warm_rows()` ((X, y) or None), to replay every event."""
    def fresh(why: str):
        learner = online.OnlineLearner(featurizer, op.model, op.learning_rate, op.seed)
        if warm["rows"]:
            learner.warm(*warm_rows(), warm["sha256"])
        return learner, f"replayed from scratch ({why})"

    if op.model != "logistic_regression":
        return fresh("a Hoeffding tree has no checkpoint")
    if not checkpoint.is_file():
        return fresh("no checkpoint yet")
    state = online.read_checkpoint(checkpoint)
    n = state.get("events", 0)
    spec = {"model": op.model, "learning_rate": op.learning_rate, "seed": op.seed}
    why = ("its format is another" if state.get("format") != 1 else
           "feedback.online params changed" if {k: state["learner"].get(k) for k in spec} != spec
           else "the champion's featurizer changed"
           if state["featurizer"] != online.featurizer_hash(featurizer) else
           "the train split changed" if state["warm"] != warm else
           f"it learned {n} events, not the first {n} of today's stream (late outcomes, or an "
           f"earlier window)" if n > len(stream_ids) or
           online.chain("", stream_ids[:n]) != state["events_digest"] else None)
    if why:
        return fresh(why)
    return online.OnlineLearner.from_state(state, featurizer), f"resumed after {n} events"


def run(repo: str | Path = ".", model: str = "churn-model") -> dict:
    """The learner in shadow, updated with the events it has not learned, checkpointed, judged
    against the champion on the judge window -> metrics/online.json."""
    from sklearn.metrics import roc_auc_score

    from lifecycle import features
    from lifecycle.contract import load_contract
    from lifecycle.evaluation import Predictions
    from lifecycle.feedback import gate
    from lifecycle.feedback.judge import labelled_rows, predictions
    from lifecycle.packaging.runtime import load_bundle
    from lifecycle.serving.deploy import VariantSpec, fetch_bundle

    repo = Path(repo)
    fp = params.load("feedback", repo / "params.yaml", model=FeedbackParams)
    p = params.load("collect", repo / "params.yaml").production
    contract = load_contract(repo / "contract.yaml")
    champion = load_bundle(fetch_bundle(VariantSpec(stage="prod"), model, repo))
    if champion.task != "binary":
        raise StageError("the online learner is a binary classifier: task.type is "
                         f"{champion.task}")
    target, positive = contract.target.column, str(champion.classes[1])
    answers = production.labelled_answers(repo / p.export, p.until, p.window_days)
    parts = production.split_judge(answers, p.judge_rows)
    stream, window = (champion.check_rows(labelled_rows(
        champion, production.as_source_rows(part, contract), target))[0] for part in parts)
    ids = parts[0]["request_id"].loc[stream.index].astype(str).tolist()
    times = [t.isoformat() for t in parts[0]["created_at"].loc[stream.index]]
    derived = champion.inference["derived"]

    def prepared(rows):
        return (features.model_frame(rows, contract, derived),
                (rows[target].astype(str) == positive).to_numpy(int))

    train = repo / "data" / "processed" / "train.parquet"
    warm = {"rows": pq.ParquetFile(train).metadata.num_rows,
            "sha256": hashlib.sha256(train.read_bytes()).hexdigest()} if train.is_file() \
        else {"rows": 0, "sha256": None}
    checkpoint = repo / fp.online.checkpoint
    featurizer = champion.pipeline.named_steps["features"]
    learner, how = resume(checkpoint, featurizer, fp.online, warm,
                          lambda: prepared(pd.read_parquet(train)), ids)
    done = learner.events
    X, y = prepared(stream.iloc[done:])
    scores = learner.learn_events(X, y, ids[done:], times[done:])
    saved = online.save_checkpoint(learner, checkpoint) \
        if fp.online.model == "logistic_regression" else None

    served = predictions(champion, window, target)
    mine = Predictions("binary", served.y, learner.predict(prepared(window)[0]), (0, 1))
    primary = gate.paired_difference("roc_auc", served, mine, (None, None),
                                     fp.gate.confidence, fp.gate.resamples, fp.gate.seed)
    rails = [gate.guardrail("calibration_error", gate.calibration_error(served.y, served.scores),
                            gate.calibration_error(mine.y, mine.scores),
                            fp.gate.guardrails.calibration_tolerance, higher_is_better=False)]
    decision = gate.decide(primary, fp.gate.min_effect, rails)
    first = parts[1].iloc[0]
    out = {"learner": fp.online.model, "events_learned": learner.events,
           "events_this_run": len(y), "events_refused": len(parts[0]) - len(stream),
           "prequential_roc_auc": float(roc_auc_score(y, scores)) if len(set(y)) > 1 else None,
           "prequential_log_loss": learner.log_loss_sum / learner.events if learner.events
           else None,
           "promote": decision.promote, "decision": decision.as_dict(),
           "champion_bundle": champion.version, "champion_version":
           rollout.prod_version(model, repo),
           "seen": {"warm_rows": learner.warm_rows, "events": learner.events,
                    "last_event": learner.last_event, "events_digest": learner.digest,
                    "rule": "every event learned is older than the window's first answer"},
           "window": {"rows": len(window), "first_answer": {
               "created_at": first["created_at"].isoformat(),
               "request_id": str(first["request_id"])}},
           "checkpoint": {"path": str(fp.online.checkpoint), "how": how,
                          "sha256": hashlib.sha256(saved).hexdigest() if saved else None}}
    rollout.write_json(out, repo / ONLINE)
    return out
