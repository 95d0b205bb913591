"""Model drift: realized performance from feedback, a label-free estimate, and concept drift.

- `realized`: per window, the metrics on the rows whose outcome has arrived, with a bootstrap
  confidence interval (Poisson weights, seeded), against the evaluate stage's test scores. Drift:
  the interval lies entirely below the test score and the drop is at least `drop_floor`.
- `estimated` (binary classification): confidence-based performance estimation (CBPE). The
  model's scores are calibrated on the validation split (isotonic regression, from the bundle);
  each row's calibrated probability p is then its expected label, so the expected confusion
  matrix is sum(p) over predicted positives (TP), sum(1 - p) (FP), and so on, and the expected
  ROC AUC is the probability that a row drawn as positive (weight p) outranks one drawn as
  negative (weight 1 - p). No label is needed: it covers the windows whose feedback has not
  arrived. It holds while P(y | x) holds (covariate shift), which is what concept drift breaks.
  Regression: no calibrated distribution to take expectations over, so no estimate; its
  windows get prediction drift and, once outcomes arrive, realized MAE / RMSE.
- `concept_drift`: on labelled rows, realized below estimate. Accuracy: sum(expected correct -
  correct) / sqrt(sum e(1-e)) is a z statistic under "calibrated and P(y|x) unchanged"
  (one-sided); ROC AUC: the estimate above the realized interval. Both need the gap to be at
  least `gap_floor`. Plus a streaming detector (river's ADWIN) over the per-request error
  stream: warmed on the validation split's errors, then fed the window's in time order; drift
  when it detects a change to a higher error rate inside the window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from lifecycle.monitoring.result import CheckResult, insufficient

HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "mae": False, "rmse": False}


# --- metrics, weighted (the bootstrap draws weights, not rows) ---------------------------
def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC per row of `weights` ([B, n]); ties count one half."""
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order].astype(bool), weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = np.add.reduceat(np.where(y, w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(y, 0.0, w), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)


def metric_values(name: str, scores, labels, correct, errors, weights) -> np.ndarray:
    if name == "roc_auc":
        return weighted_auc(scores, labels, weights)
    if name == "accuracy":
        return (weights * correct).sum(axis=1) / weights.sum(axis=1)
    if name == "mae":
        return (weights * np.abs(errors)).sum(axis=1) / weights.sum(axis=1)
    if name == "rmse":
        return np.sqrt((weights * errors ** 2).sum(axis=1) / weights.sum(axis=1))
    raise ValueError(f"unknown metric {name}")


def bootstrap(name: str, scores, labels, correct, errors, resamples: int, confidence: float,
              seed: int, chunk: int = 50) -> tuple[float, float, float]:
    """(value, low, high): the metric and its percentile bootstrap interval."""
    n = len(scores)
    value = float(metric_values(name, scores, labels, correct, errors, np.ones((1, n)))[0])
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, resamples, chunk):
        w = rng.poisson(1.0, size=(min(chunk, resamples - start), n)).astype(np.float64)
        draws.append(metric_values(name, scores, labels, correct, errors, w))
    draws = np.concatenate(draws)
    draws = draws[np.isfinite(draws)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail]) if len(draws) else (np.nan, np.nan)
    return value, float(low), float(high)


# --- the labelled rows of a window ----------------------------------------------------------
def labelled(window, reference) -> pd.DataFrame:
    rows = window.rows
    return rows[rows["outcome"].notna()] if "outcome" in rows else rows.iloc[:0]


def _arrays(rows: pd.DataFrame, reference) -> dict:
    """Scores, 0/1 labels, correctness, errors of labelled rows (binary or regression)."""
    scores = pd.to_numeric(rows["score"], errors="coerce").to_numpy(dtype=np.float64)
    if reference.task == "regression":
        truth = pd.to_numeric(rows["outcome"], errors="coerce").to_numpy(dtype=np.float64)
        return {"scores": scores, "labels": truth, "correct": None, "errors": scores - truth}
    positive = str(reference.positive_class)
    labels = (rows["outcome"].astype(str) == positive).to_numpy()
    predicted = (rows["prediction"].astype(str) == positive).to_numpy()
    return {"scores": scores, "labels": labels.astype(np.int8),
            "correct": (labels == predicted).astype(np.float64), "errors": None,
            "predicted": predicted}


def metrics_for(reference) -> list[str]:
    return ["mae", "rmse"] if reference.task == "regression" else ["roc_auc", "accuracy"]


def realized(window, reference, p) -> list[CheckResult]:
    """Metrics on the rows with feedback, with bootstrap intervals, against evaluate's."""
    rows = labelled(window, reference)
    n = len(rows)
    out = []
    for name in metrics_for(reference):
        baseline = reference.evaluate.get(name)
        if baseline is None:
            continue
        a = _arrays(rows, reference)
        both_classes = reference.task == "regression" or name != "roc_auc" or (
            0 < a["labels"].sum() < n)
        if n < p.min_rows or not both_classes:
            out.append(insufficient("performance", name, name, baseline, n, n))
            continue
        value, low, high = bootstrap(name, a["scores"], a["labels"], a["correct"], a["errors"],
                                     p.resamples, p.confidence, p.seed + window.index)
        if HIGHER_IS_BETTER[name]:
            drift = high < baseline and baseline - value >= p.drop_floor
        else:
            drift = low > baseline and value - baseline >= p.drop_floor * abs(baseline)
        out.append(CheckResult("performance", name, name, value, None, value - baseline,
                               baseline, n, n, "drift" if drift else "ok", low, high))
    return out


# --- CBPE -----------------------------------------------------------------------------------
def expected_auc(scores: np.ndarray, p: np.ndarray) -> float:
    """E[ROC AUC] when row i is positive with probability p_i (pairs of distinct rows)."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    new = np.r_[True, s[1:] != s[:-1]]
    starts, group = np.flatnonzero(new), np.cumsum(new) - 1
    neg = np.add.reduceat((1 - p)[order], starts)
    below = (np.cumsum(neg) - neg)[group]
    same = neg[group] - (1 - p[order])  # negatives tied with row i, other than i itself
    numerator = float((p[order] * (below + 0.5 * same)).sum())
    denominator = float(p.sum() * (1 - p).sum() - (p * (1 - p)).sum())
    return numerator / denominator if denominator > 0 else float("nan")


def estimate(rows: pd.DataFrame, reference) -> dict[str, float]:
    """Label-free ROC AUC and accuracy of these rows (binary classification)."""
    scores = pd.to_numeric(rows["score"], errors="coerce").to_numpy(dtype=np.float64)
    predicted = (rows["prediction"].astype(str) == str(reference.positive_class)).to_numpy()
    p = reference.calibrate(scores)
    expected_correct = np.where(predicted, p, 1 - p)
    return {"roc_auc": expected_auc(scores, p), "accuracy": float(expected_correct.mean()),
            "_expected_correct": expected_correct}


def estimated(window, reference, p) -> list[CheckResult]:
    """CBPE on every row of the window, labelled or not."""
    n = len(window.rows)
    if reference.task != "binary":  # see the module docstring (regression, multiclass)
        return []
    if n < p.min_rows:
        return [insufficient("performance_estimate", m, m, reference.evaluate.get(m, 0.0),
                             len(reference.validation_scores), n)
                for m in ("roc_auc", "accuracy")]
    est = estimate(window.rows, reference)
    out = []
    for name in ("roc_auc", "accuracy"):
        baseline = reference.evaluate.get(name)
        if baseline is None:
            continue
        drift = baseline - est[name] >= p.drop_floor
        out.append(CheckResult("performance_estimate", name, f"cbpe_{name}", est[name], None,
                               est[name] - baseline, baseline,
                               len(reference.validation_scores), n,
                               "drift" if drift else "ok"))
    return out


# --- concept drift --------------------------------------------------------------------------
def adwin_detects(reference, correct: np.ndarray, delta: float, seed: int) -> tuple[int, float]:
    """(changes to a higher error rate detected inside the window's stream, its error rate)."""
    from river.drift import ADWIN

    labels = reference.validation_labels.astype(bool)
    if reference.threshold is not None:
        warm = (reference.validation_scores >= reference.threshold) != labels
    else:
        warm = np.zeros(0, dtype=bool)
    warm = np.random.default_rng(seed).permutation(warm)
    detector = ADWIN(delta=delta)
    for e in warm:
        detector.update(float(e))
    base, found = float(warm.mean()) if len(warm) else 0.0, 0
    for e in 1.0 - correct:
        detector.update(float(e))
        if detector.drift_detected and detector.estimation > base:
            found += 1
    return found, float(1.0 - correct.mean())


def concept_drift(window, reference, p) -> list[CheckResult]:
    """Realized performance below the label-free estimate, and ADWIN on the error stream."""
    if reference.task != "binary":
        return []
    rows = labelled(window, reference)
    n, n_val = len(rows), len(reference.validation_scores)
    targets = ("accuracy", "roc_auc", "error_stream")
    if n < p.min_rows:
        return [insufficient("concept_drift", t, "gap", p.gap_floor, n_val, n) for t in targets]
    a = _arrays(rows, reference)
    est = estimate(rows, reference)
    e, c = est["_expected_correct"], a["correct"]
    gap = float(e.mean() - c.mean())
    z = float((e - c).sum() / np.sqrt(max((e * (1 - e)).sum(), 1e-12)))
    pvalue = float(stats.norm.sf(z))
    out = [CheckResult("concept_drift", "accuracy", "estimate_minus_realized", gap, pvalue, gap,
                       p.gap_floor, n_val, n,
                       "drift" if pvalue <= p.alpha and gap >= p.gap_floor else "ok")]
    if 0 < a["labels"].sum() < n:
        value, low, high = bootstrap("roc_auc", a["scores"], a["labels"], c, None,
                                     p.resamples, p.confidence, p.seed + window.index)
        auc_gap = est["roc_auc"] - value
        drift = est["roc_auc"] > high and auc_gap >= p.gap_floor
        out.append(CheckResult("concept_drift", "roc_auc", "estimate_minus_realized", auc_gap,
                               None, auc_gap, p.gap_floor, n_val, n,
                               "drift" if drift else "ok", low, high))
    found, rate = adwin_detects(reference, c, p.adwin_delta, p.seed)
    out.append(CheckResult("concept_drift", "error_stream", "adwin_changes", float(found), None,
                           rate, 1.0, n_val, n, "drift" if found else "ok"))
    return out
