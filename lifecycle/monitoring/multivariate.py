"""Multivariate drift: can a classifier tell the window's rows from the reference's?

A domain classifier (gradient-boosted trees, which split on interactions, so a joint shift with
unchanged marginals is caught) is trained to separate a bounded, seeded sample of reference
rows from one of window rows; its cross-validated ROC AUC is the statistic. Its null
distribution comes from label permutations: pools of reference rows only (no drift possible)
split at random into two "domains" of the same sizes and scored the same way, `null_draws`
times, once per reference and sample size (cached). The p-value is the normal tail of the
window's AUC under that null; drift needs p <= alpha and AUC >= `auc_floor` (an effect floor:
an AUC of 0.52 is real but not worth an alarm).
"""

from __future__ import annotations

from functools import lru_cache

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


def cv_auc(x_ref: np.ndarray, x_cur: np.ndarray, categorical: np.ndarray, folds: int,
           seed: int) -> float:
    """Cross-validated ROC AUC of a classifier separating the two samples."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    x = np.vstack([x_ref, x_cur])
    y = np.r_[np.zeros(len(x_ref)), np.ones(len(x_cur))]
    model = HistGradientBoostingClassifier(
        max_iter=40, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20,
        categorical_features=categorical, early_stopping=False, random_state=seed)
    with threadpool_limits(1):
        scores = cross_val_predict(model, x, y, cv=StratifiedKFold(folds, shuffle=True,
                                                                     random_state=seed),
                                   method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


@lru_cache(maxsize=8)
def null_distribution(key: tuple, x_pool_bytes: bytes, shape: tuple, categorical: tuple,
                      n_ref: int, n_cur: int, draws: int, folds: int, seed: int
                      ) -> tuple[float, float]:
    """(mean, std) of the CV AUC between two random halves of reference rows only."""
    x_pool = np.frombuffer(x_pool_bytes, dtype=np.float64).reshape(shape)
    rng = np.random.default_rng(seed)
    aucs = []
    for i in range(draws):
        order = rng.permutation(len(x_pool))
        aucs.append(cv_auc(x_pool[order[:n_ref]], x_pool[order[n_ref:n_ref + n_cur]],
                           np.asarray(categorical), folds, seed + 1 + i))
    return float(np.mean(aucs)), float(max(np.std(aucs, ddof=1), 1e-3))


def domain_classifier(window, reference, p) -> list[CheckResult]:
    """Reference rows against window rows, jointly."""
    n, n_pool = len(window.rows), len(reference.features)
    if n < p.min_rows:
        return [insufficient("multivariate_drift", "dataset", "domain_auc", p.alpha, n_pool, n)]
    kinds = reference.kinds
    categories = {c: reference.columns[c].get("categories", []) for c in kinds}
    categorical = np.array([k == "category" for k in kinds.values()])
    # both samples the same size, at most `sample` and at most half the reference (the null
    # needs two disjoint reference samples of these sizes)
    m = int(min(p.sample, n, n_pool // 2))
    rng = np.random.default_rng(p.seed + window.index)
    x_ref = encode(reference.features.iloc[rng.choice(n_pool, m, replace=False)], kinds,
                   categories)
    x_cur = encode(window.rows.iloc[rng.choice(n, m, replace=False)], kinds, categories)
    auc = cv_auc(x_ref, x_cur, categorical, p.folds, p.seed)
    pool = np.ascontiguousarray(encode(reference.features, kinds, categories))
    mean, std = null_distribution((reference.version, m), pool.tobytes(), pool.shape,
                                  tuple(categorical), m, m, p.null_draws, p.folds, p.seed)
    pvalue = float(stats.norm.sf((auc - mean) / std))
    drift = pvalue <= p.alpha and auc >= p.auc_floor
    return [CheckResult("multivariate_drift", "dataset", "domain_auc", auc, pvalue, auc - mean,
                        p.alpha, m, m, "drift" if drift else "ok")]
