"""Incremental and online learning on the demo's real bundle: the champion continued on new
labelled rows only (its featurizer unchanged), and a river learner in shadow, prequential
(predict, then learn). Both must learn a concept shift the champion does not know."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import roc_auc_score

from lifecycle import features
from lifecycle.errors import StageError
from lifecycle.feedback.incremental import continue_fit
from lifecycle.feedback.online import OnlineLearner
from lifecycle.monitoring.simulate import draw
from lifecycle.packaging.runtime import load_bundle


@pytest.fixture(scope="module")
def setting(reproduced: Path):
    bundle = load_bundle(reproduced / "models" / "bundle")
    pool = pd.read_parquet(reproduced / "data" / "processed" / "test.parquet")
    half = len(pool) // 2

    def prepared(rows):
        X = features.model_frame(rows, bundle.contract, bundle.inference["derived"])
        return X, (rows["churn"].astype(str) == "Yes").to_numpy(int)

    new = prepared(draw(pool.iloc[:half], "concept", 600, 1, "churn", "Yes", "No"))
    later = prepared(draw(pool.iloc[half:], "concept", 600, 2, "churn", "Yes", "No"))
    train = prepared(pd.read_parquet(reproduced / "data" / "processed" / "train.parquet"))
    return bundle.pipeline, train, new, later


def test_incremental_continues_the_champion_on_new_rows_only(setting):
    champion, _, (X_new, y_new), (X_later, y_later) = setting
    before = champion.predict_proba(X_later)[:, 1]
    continued = continue_fit(champion, X_new, y_new, seed=0)
    after = continued.predict_proba(X_later)[:, 1]
    # the featurizer is the champion's own, untouched; the champion itself is not modified
    assert np.array_equal(continued[:-1].transform(X_later), champion[:-1].transform(X_later))
    assert np.array_equal(champion.predict_proba(X_later)[:, 1], before)
    assert roc_auc_score(y_later, after) > roc_auc_score(y_later, before) + 0.05


def test_incremental_boosting_adds_trees_and_other_families_refuse(setting):
    champion, (X, y), (X_new, y_new), _ = setting
    boosting = clone(champion)
    boosting.steps[-1] = ("model", HistGradientBoostingClassifier(
        max_iter=30, early_stopping=False, random_state=0))
    boosting.fit(X, y)
    continued = continue_fit(boosting, X_new, y_new, extra_iterations=10)
    assert continued[-1].n_iter_ == 40 and boosting[-1].n_iter_ == 30
    forest = clone(champion)
    forest.steps[-1] = ("model", RandomForestClassifier(n_estimators=5, random_state=0))
    forest.fit(X.head(500), y[:500])
    with pytest.raises(StageError, match="RandomForestClassifier cannot continue"):
        continue_fit(forest, X_new, y_new)


def test_online_learner_is_prequential_and_learns_the_shift(setting):
    champion, (X, y), (X_new, y_new), (X_later, y_later) = setting
    learner = OnlineLearner(champion[:-1], "logistic_regression", 0.05, 0).warm(X, y)
    fresh = OnlineLearner(champion[:-1], "logistic_regression", 0.05, 0).warm(X, y)
    first = learner.predict(X_new.head(1))[0]
    scores = learner.prequential(X_new, y_new)
    assert scores[0] == first  # predicted before it learned that event
    assert learner.learned == len(y) + len(y_new)
    shifted = roc_auc_score(y_later, learner.predict(X_later))
    assert shifted > roc_auc_score(y_later, fresh.predict(X_later)) + 0.05
    assert shifted > roc_auc_score(y_later, champion.predict_proba(X_later)[:, 1])
