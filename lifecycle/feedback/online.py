"""Online learning: a river learner updated on each feedback event, run in shadow beside the
served model and evaluated prequentially (each event is predicted first, then learned from).

The learner reads the champion's fitted featurizer's output (the same features the served model
reads), so it starts from the same representation; `warm` passes over the training rows once
before production begins. In shadow it never answers a request: `replay` walks the registry's
labelled answers in time order, and its predictions (made before each outcome was learned) sit
beside the served model's on the same events, so the gate can judge the two on the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_learner(model: str, learning_rate: float, seed: int):
    """A river binary classifier: logistic regression (SGD) or a Hoeffding tree."""
    from river import linear_model, optim, tree

    if model == "logistic_regression":
        return linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate))
    return tree.HoeffdingTreeClassifier(grace_period=100)


class OnlineLearner:
    """A river learner over the champion featurizer's features, one event at a time."""

    def __init__(self, featurizer, model: str = "logistic_regression",
                 learning_rate: float = 0.05, seed: int = 0):
        self.featurizer = featurizer
        self.learner = make_learner(model, learning_rate, seed)
        self.learned = 0

    def _dicts(self, X: pd.DataFrame) -> list[dict]:
        Z = np.asarray(self.featurizer.transform(X), dtype=float)
        return [dict(enumerate(row)) for row in Z]

    def warm(self, X: pd.DataFrame, y: np.ndarray) -> OnlineLearner:
        """One pass over training rows (in their order)."""
        for x, label in zip(self._dicts(X), y, strict=True):
            self.learner.learn_one(x, bool(label))
        self.learned += len(y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """P(positive) per row, without learning."""
        return np.array([self.learner.predict_proba_one(x).get(True, 0.0)
                         for x in self._dicts(X)])

    def prequential(self, X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
        """For each event in order: predict it, then learn its outcome. The predictions."""
        out = np.empty(len(y))
        for i, (x, label) in enumerate(zip(self._dicts(X), y, strict=True)):
            out[i] = self.learner.predict_proba_one(x).get(True, 0.0)
            self.learner.learn_one(x, bool(label))
        self.learned += len(y)
        return out
