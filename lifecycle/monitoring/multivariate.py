"""Multivariate drift: can a classifier tell the window's rows from the reference's?

A domain classifier (gradient-boosted trees, which split on interactions, so a joint shift with
unchanged marginals is caught) learns to separate a bounded, seeded sample of reference rows
from one of window rows, and is scored on held-out rows of both: its held-out ROC AUC is the
statistic. The held-out scores do not depend on the held-out rows' sides, so without drift
those sides are exchangeable and the AUC's permutation null is exact: the one-sided
Mann-Whitney test (`scipy.stats.mannwhitneyu`) gives its p-value, with no simulated null to
pay for. Drift needs p <= alpha and AUC >= `auc_floor` (an effect floor: an AUC of 0.52 is real
but not worth an alarm).

Duplicates: production repeats records (the same customer profile asked twice, a replayed or
resampled stream), and a record on the training side of the split is recognised on the
held-out side, which inflates the AUC without any drift. So each side is de-duplicated first
(identical encoded rows count once), and the split is grouped by record: a record present on
both sides lands wholly in training or wholly in held-out rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from lifecycle.monitoring.result import CheckResult, insufficient


def encode(frame: pd.DataFrame, kinds: dict[str, str], categories: dict[str, list]
           ) -> np.ndarray:
    """Numbers as they are, categories as codes of the reference's categories (unknown and
    missing values become NaN, which the trees route on their own)."""
    out = np.empty((len(frame), len(kinds)), dtype=np.float64)
    for j, (name, kind) in enumerate(kinds.items()):
        values = frame[name]
        if kind == "number":
            out[:, j] = pd.to_numeric(values, errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan)
        else:
            codes = pd.Categorical(values.astype("string"), categories=categories[name]).codes
            out[:, j] = np.where(codes < 0, np.nan, codes)
    return out


def record_keys(x: np.ndarray) -> np.ndarray:
    """One integer per distinct encoded row (equal rows, NaNs included, get equal keys)."""
    canonical = np.where(np.isnan(x), np.inf, x) + 0.0  # one NaN pattern, and -0.0 == 0.0
    rows = np.ascontiguousarray(canonical).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1])))
    return np.unique(rows.ravel(), return_inverse=True)[1].ravel()


def distinct(x: np.ndarray) -> np.ndarray:
    """The distinct rows of x, in order of first appearance."""
    if not len(x):
        return x
    _, first = np.unique(record_keys(x), return_index=True)
    return x[np.sort(first)]


def held_out_auc(x_ref: np.ndarray, x_cur: np.ndarray, categorical: np.ndarray, seed: int
                 ) -> tuple[float, float, int, int]:
    """(ROC AUC, one-sided Mann-Whitney p-value, held-out reference rows, held-out window rows)
    of a classifier trained on half the records of each side and scored on the other half."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GroupShuffleSplit
    from threadpoolctl import threadpool_limits

    x = np.vstack([x_ref, x_cur])
    y = np.r_[np.zeros(len(x_ref)), np.ones(len(x_cur))]
    groups = record_keys(x)
    split = GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
    train, test = next(split.split(x, y, groups))
    model = HistGradientBoostingClassifier(
        max_iter=40, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20,
        categorical_features=categorical, early_stopping=False, random_state=seed)
    with threadpool_limits(1):
        scores = model.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    on_cur, on_ref = scores[y[test] == 1], scores[y[test] == 0]
    test_ = stats.mannwhitneyu(on_cur, on_ref, alternative="greater", method="asymptotic")
    auc = float(test_.statistic) / (len(on_cur) * len(on_ref))
    return auc, float(test_.pvalue), len(on_ref), len(on_cur)


def domain_classifier(window, reference, p) -> list[CheckResult]:
    """Reference rows against window rows, jointly."""
    n, n_pool = len(window.rows), len(reference.features)
    if n < p.min_rows:
        return [insufficient("multivariate_drift", "dataset", "domain_auc", p.alpha, n_pool, n)]
    kinds = reference.kinds
    categories = {c: reference.columns[c].get("categories", []) for c in kinds}
    categorical = np.array([k == "category" for k in kinds.values()])
    rng = np.random.default_rng(p.seed + window.index)
    # at most `sample` distinct records a side: draw a few more rows than needed (a big
    # window is never encoded whole), de-duplicate, keep the first `sample`
    take = min(n, 2 * p.sample)
    x_cur = distinct(encode(window.rows.iloc[np.sort(rng.choice(n, take, replace=False))],
                            kinds, categories))
    x_cur = x_cur[rng.permutation(len(x_cur))[:p.sample]]
    if "domain_pool" not in reference.derived:  # the same for every window of a run
        reference.derived["domain_pool"] = distinct(encode(reference.features, kinds,
                                                           categories))
    x_ref = reference.derived["domain_pool"]
    x_ref = x_ref[rng.permutation(len(x_ref))[:p.sample]]
    if min(len(x_cur), len(x_ref)) < p.min_rows:
        return [insufficient("multivariate_drift", "dataset", "domain_auc", p.alpha,
                             len(x_ref), len(x_cur))]
    auc, pvalue, n_ref, n_cur = held_out_auc(x_ref, x_cur, categorical, p.seed)
    drift = pvalue <= p.alpha and auc >= p.auc_floor
    return [CheckResult("multivariate_drift", "dataset", "domain_auc", auc, pvalue, auc - 0.5,
                        p.alpha, n_ref, n_cur, "drift" if drift else "ok")]
