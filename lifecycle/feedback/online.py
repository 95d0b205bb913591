"""Online learning: a river learner updated on each feedback event, run in shadow beside the
served model and evaluated prequentially (each event is predicted first, then learned from).

The learner reads the champion's fitted featurizer's output (the same features the served model
reads), so it starts from the same representation; `warm` passes over the training rows once
before production begins. In shadow it never answers a request: `learn_events` walks the
registry's labelled answers in time order, and its predictions (made before each outcome was
learned) sit beside the served model's on the same events, so the gate can judge the two.

Its state is a checkpoint (`state` / `from_state`): plain JSON numbers (weights, intercept, the
optimizer's step count; Python's float repr round-trips exactly), the featurizer it reads (the
sha256 of its skops bytes) and which events it has learned (count, the last one, a hash chain
of their request ids). Learning is deterministic, so resuming from a checkpoint and replaying
the same events from scratch give the same bytes. A logistic learner converts exactly into a
scikit-learn `LogisticRegression` (`to_estimator`: same weights, intercept, class order), which
the package stage then exports to ONNX like any trained model; `check_parity` proves the
conversion on real rows before it is packaged. A Hoeffding tree has neither a checkpoint nor an
sklearn form: it runs in shadow (replayed from the registry each time) and cannot be promoted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle.errors import StageError

FORMAT = 1
INTERCEPT_LR = 0.01  # river's default step for the intercept (the weights' is learning_rate)
# the converted model must give the learner's probabilities to this absolute difference: the
# same weights, summed in another order (BLAS vs river's loop), differ by ~1e-16
PARITY_TOLERANCE = 1e-9
NOT_CONVERTIBLE = ("a Hoeffding tree has no checkpoint and no scikit-learn/ONNX form: it runs "
                   "in shadow only; feedback.online.model logistic_regression can be promoted")


def make_learner(model: str, learning_rate: float, seed: int):
    """A river binary classifier: logistic regression (SGD, zero start) or a Hoeffding tree.
    Both are deterministic given the events' order (nothing is drawn: `seed` is kept for the
    checkpoint's record)."""
    from river import linear_model, optim, tree

    if model == "logistic_regression":
        return linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate),
                                               intercept_lr=INTERCEPT_LR)
    return tree.HoeffdingTreeClassifier(grace_period=100)


def chain(digest: str, request_ids) -> str:
    """The hash chain of learned events: sha256(previous digest + request id), per event."""
    for rid in request_ids:
        digest = hashlib.sha256(f"{digest}{rid}".encode()).hexdigest()
    return digest


def featurizer_hash(featurizer) -> str:
    """sha256 of the featurizer's skops bytes: which fitted featurizer a learner reads."""
    from lifecycle import persistence

    return hashlib.sha256(persistence.dumps(featurizer)).hexdigest()


class OnlineLearner:
    """A river learner over the champion featurizer's features, one event at a time."""

    def __init__(self, featurizer, model: str = "logistic_regression",
                 learning_rate: float = 0.05, seed: int = 0):
        self.featurizer = featurizer
        self.model, self.learning_rate, self.seed = model, learning_rate, seed
        self.learner = make_learner(model, learning_rate, seed)
        self.learned = 0  # every update: warm rows + events
        self.warm_rows, self.warm_sha256 = 0, None
        self.events, self.digest, self.last_event = 0, "", None
        self.log_loss_sum = 0.0  # prequential: each event's loss before it was learned

    def features(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.featurizer.transform(X), dtype=float)

    @staticmethod
    def _dicts(Z: np.ndarray) -> list[dict]:
        return [dict(enumerate(row)) for row in np.asarray(Z, dtype=float).tolist()]

    def warm(self, X: pd.DataFrame, y: np.ndarray, sha256: str | None = None) -> OnlineLearner:
        """One pass over training rows (in their order); `sha256` names them in the checkpoint."""
        for x, label in zip(self._dicts(self.features(X)), y, strict=True):
            self.learner.learn_one(x, bool(label))
        self.learned += len(y)
        self.warm_rows += len(y)
        self.warm_sha256 = sha256
        return self

    def predict_features(self, Z: np.ndarray) -> np.ndarray:
        """P(positive) per row of featurized `Z`, without learning."""
        return np.array([self.learner.predict_proba_one(x).get(True, 0.0)
                         for x in self._dicts(Z)])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """P(positive) per row, without learning."""
        return self.predict_features(self.features(X))

    def prequential(self, X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
        """For each event in order: predict it, then learn its outcome. The predictions."""
        out = np.empty(len(y))
        if not len(y):  # nothing new (a featurizer refuses an empty frame)
            return out
        for i, (x, label) in enumerate(zip(self._dicts(self.features(X)), y, strict=True)):
            out[i] = self.learner.predict_proba_one(x).get(True, 0.0)
            self.learner.learn_one(x, bool(label))
        self.learned += len(y)
        return out

    def learn_events(self, X: pd.DataFrame, y: np.ndarray, request_ids: list[str],
                     times: list[str]) -> np.ndarray:
        """`prequential` over feedback events, recording which ones were learned."""
        out = self.prequential(X, y)
        if len(y):
            p = np.clip(out, 1e-15, 1 - 1e-15)
            self.log_loss_sum += float(-np.sum(np.where(np.asarray(y) == 1, np.log(p),
                                                        np.log1p(-p))))
            self.events += len(y)
            self.digest = chain(self.digest, request_ids)
            self.last_event = {"created_at": times[-1], "request_id": request_ids[-1]}
        return out

    # --- the checkpoint --------------------------------------------------------------------
    def state(self) -> dict:
        """The learner as plain JSON values (StageError for a Hoeffding tree)."""
        if self.model != "logistic_regression":
            raise StageError(f"the online learner cannot be checkpointed: {NOT_CONVERTIBLE}")
        weights = self.learner._weights.to_dict()
        n = len(weights)
        if sorted(weights) != list(range(n)):
            raise StageError(f"the online learner's weights are keyed {sorted(weights)[:5]}..., "
                             "not by feature position: not a learner of this module")
        return {"format": FORMAT,
                "learner": {"model": self.model, "learning_rate": self.learning_rate,
                            "intercept_lr": INTERCEPT_LR, "seed": self.seed},
                "featurizer": featurizer_hash(self.featurizer) if self.featurizer is not None
                else None,
                "warm": {"rows": self.warm_rows, "sha256": self.warm_sha256},
                "events": self.events, "events_digest": self.digest,
                "last_event": self.last_event, "learned": self.learned,
                "prequential_log_loss_sum": self.log_loss_sum,
                "weights": [weights[i] for i in range(n)],
                "intercept": self.learner.intercept,
                "optimizer_iterations": self.learner.optimizer.n_iterations}

    @classmethod
    def from_state(cls, state: dict, featurizer=None) -> OnlineLearner:
        """The learner a checkpoint holds, ready to predict and to go on learning."""
        from river import utils

        if state.get("format") != FORMAT:
            raise StageError(f"online checkpoint format {state.get('format')!r}, this code reads "
                             f"{FORMAT}: replay it from the registry")
        spec = state["learner"]
        learner = cls(featurizer, spec["model"], spec["learning_rate"], spec["seed"])
        if spec["model"] != "logistic_regression":
            raise StageError(f"the online checkpoint holds a {spec['model']}: {NOT_CONVERTIBLE}")
        river = learner.learner
        river._weights = utils.VectorDict(dict(enumerate(float(w) for w in state["weights"])))
        river.intercept = float(state["intercept"])
        river.optimizer.n_iterations = int(state["optimizer_iterations"])
        learner.learned = state["learned"]
        learner.warm_rows, learner.warm_sha256 = state["warm"]["rows"], state["warm"]["sha256"]
        learner.events, learner.digest = state["events"], state["events_digest"]
        learner.last_event = state["last_event"]
        learner.log_loss_sum = state["prequential_log_loss_sum"]
        return learner

    # --- the packaged form -----------------------------------------------------------------
    def to_estimator(self, classes, feature_names=None):
        """The learner as a fitted scikit-learn LogisticRegression: P(classes[1]) =
        sigmoid(weights . x + intercept), exactly the river learner's (StageError when it
        cannot be converted or has learned nothing)."""
        from sklearn.linear_model import LogisticRegression

        state = self.state()
        if not state["weights"]:
            raise StageError("the online learner has learned nothing (no warm rows, no feedback "
                             "events): there is no model to convert")
        estimator = LogisticRegression(class_weight=None, random_state=self.seed)
        estimator.classes_ = np.asarray(classes)
        estimator.coef_ = np.asarray([state["weights"]], dtype=np.float64)
        estimator.intercept_ = np.asarray([state["intercept"]], dtype=np.float64)
        estimator.n_features_in_ = len(state["weights"])
        estimator.n_iter_ = np.asarray([state["optimizer_iterations"]], dtype=np.int32)
        if feature_names is not None:
            estimator.feature_names_in_ = np.asarray(list(feature_names), dtype=object)
        return estimator


def check_parity(learner: OnlineLearner, estimator, Z: pd.DataFrame | np.ndarray,
                 tolerance: float = PARITY_TOLERANCE) -> dict:
    """The converted `estimator`'s P(positive) against the online learner's on the same
    featurized rows; StageError (one line) when they differ beyond `tolerance`."""
    ours = learner.predict_features(np.asarray(Z, dtype=float))
    theirs = estimator.predict_proba(Z)[:, 1]
    gap = np.abs(ours - theirs)
    report = {"rows": len(gap), "max_difference": float(gap.max()) if len(gap) else 0.0,
              "tolerance": tolerance, "ok": bool(len(gap) and gap.max() <= tolerance)}
    if not report["ok"]:
        raise StageError(f"the converted {type(estimator).__name__} disagrees with the online "
                         f"learner on {int((gap > tolerance).sum())} of {len(gap)} rows (max "
                         f"|difference| {report['max_difference']:.3g} > {tolerance:g}): not "
                         "packaged")
    return report


def save_checkpoint(learner: OnlineLearner, path: str | Path) -> bytes:
    """Write the learner's state (sorted keys, exact floats) atomically; returns the bytes."""
    data = (json.dumps(learner.state(), sort_keys=True, indent=1) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return data


def read_checkpoint(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"no online checkpoint at {path}: run `python -m lifecycle.feedback "
                         "online` first (the shadow writes it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StageError(f"{path}: not an online checkpoint: {exc}") from None


def packaged_estimator(checkpoint: str | Path, champion, X: pd.DataFrame, X_val: pd.DataFrame):
    """`train.mode: online`: the checkpoint's learner as a scikit-learn estimator, checked
    before it is saved: it read the champion bundle's featurizer (the one featurize used), has
    learned feedback events, and gives the learner's probabilities on every train and
    validation row. (estimator, the report's `online` part); StageError (one line) otherwise."""
    raw = Path(checkpoint).read_bytes() if Path(checkpoint).is_file() else None
    state = read_checkpoint(checkpoint)
    where = f"train.online: {checkpoint}"
    if state.get("featurizer") != featurizer_hash(champion.pipeline.named_steps["features"]):
        raise StageError(f"{where}: learned over another featurizer than train.champion's "
                         f"({champion.version}): replay it on that champion")
    if not state.get("events"):
        raise StageError(f"{where}: the learner has learned no feedback events (only its warm "
                         "pass over train): nothing online to package")
    if len(state["weights"]) != X.shape[1]:
        raise StageError(f"{where}: {len(state['weights'])} weights for {X.shape[1]} features")
    learner = OnlineLearner.from_state(state)
    estimator = learner.to_estimator(champion.pipeline[-1].classes_, X.columns)
    parity = check_parity(learner, estimator, pd.concat([X, X_val], ignore_index=True))
    return estimator, {
        "checkpoint": str(checkpoint), "sha256": hashlib.sha256(raw).hexdigest(),
        "champion": champion.version, "learner": state["learner"], "warm": state["warm"],
        "events": state["events"], "last_event": state["last_event"],
        "events_digest": state["events_digest"], "parity": parity}
