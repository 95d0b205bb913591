"""Model drift: realized performance from feedback, a label-free estimate, and concept drift.

- `realized`: per window, the metrics on the rows whose outcome has arrived, with a confidence
  interval, against the evaluate stage's test scores. Drift: the interval lies entirely below the
  test score and the drop is at least `drop_floor`. The intervals are analytic, so they cost one
  sort of the window, not hundreds of resamples (a window may hold 100,000 answers): ROC AUC
  with DeLong's variance, accuracy with Wilson's score interval, MAE and RMSE from the normal
  interval of the mean (squared) error. At 1,000 rows they agree with a percentile bootstrap to
  within a few thousandths.
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
  when it detects a change to a higher error rate inside the window that the calibrated scores
  do not explain (the window's error rate above the expected one by `gap_floor`; harder rows,
  a covariate shift, raise both). Windows longer than
  `adwin_points` rows feed it block error rates (see `adwin_detects`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from lifecycle.monitoring.result import CheckResult, insufficient

HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "mae": False, "rmse": False}


# --- metrics and their intervals (analytic: linear in the window, no resampling) ----------
def auc_interval(scores: np.ndarray, labels: np.ndarray, confidence: float
                 ) -> tuple[float, float, float]:
    """(ROC AUC, low, high): DeLong's variance from the midranks (ties count one half)."""
    y = labels.astype(bool)
    pos, neg = scores[y], scores[~y]
    m, k = len(pos), len(neg)
    ranks = stats.rankdata(np.r_[pos, neg])
    below = ranks[:m] - stats.rankdata(pos)  # per positive: negatives below it (ties: half)
    above = m - (ranks[m:] - stats.rankdata(neg))  # per negative: positives above it
    auc = float(below.sum() / (m * k))
    var = np.var(below / k, ddof=1) / m + np.var(above / m, ddof=1) / k if min(m, k) > 1 \
        else np.nan
    half = stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(var)
    return auc, max(auc - half, 0.0), min(auc + half, 1.0)


def proportion_interval(successes: float, n: int, confidence: float
                        ) -> tuple[float, float, float]:
    """(share, low, high): Wilson's score interval."""
    z = stats.norm.ppf(0.5 + confidence / 2)
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return float(share), float(centre - half), float(centre + half)


def mean_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(mean, low, high): the normal interval of a mean (n in the hundreds or more)."""
    mean = float(values.mean())
    half = stats.norm.ppf(0.5 + confidence / 2) * float(values.std(ddof=1)) / np.sqrt(
        len(values))
    return mean, mean - half, mean + half


def interval(name: str, scores, labels, correct, errors, confidence: float
             ) -> tuple[float, float, float]:
    """(value, low, high) of one metric on a window's labelled rows."""
    if name == "roc_auc":
        return auc_interval(scores, labels, confidence)
    if name == "accuracy":
        return proportion_interval(float(correct.sum()), len(correct), confidence)
    if name == "mae":
        return mean_interval(np.abs(errors), confidence)
    if name == "rmse":  # the interval of the mean squared error, square-rooted
        mse, low, high = mean_interval(errors ** 2, confidence)
        return float(np.sqrt(mse)), float(np.sqrt(max(low, 0.0))), float(np.sqrt(high))
    raise ValueError(f"unknown metric {name}")


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
    """Metrics on the rows with feedback, with confidence intervals, against evaluate's."""
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
        value, low, high = interval(name, a["scores"], a["labels"], a["correct"], a["errors"],
                                    p.confidence)
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
def block_means(errors: np.ndarray, block: int) -> np.ndarray:
    """Consecutive blocks of `block` values as their means (block 1: the values themselves)."""
    if block <= 1:
        return errors
    starts = np.arange(0, len(errors), block)
    return np.add.reduceat(errors, starts) / np.diff(np.r_[starts, len(errors)])


def adwin_detects(reference, correct: np.ndarray, delta: float, seed: int,
                  points: int | None = None) -> tuple[int, float]:
    """(changes to a higher error rate detected inside the window's stream, its error rate).

    A window longer than `points` feeds ADWIN the error rates of consecutive blocks of rows
    instead of each row (and the validation warm-up in blocks of the same size): ADWIN takes
    any bounded stream, a block's mean keeps its level, and a 100,000-row window costs 10,000
    updates, not 100,000 in a Python loop."""
    from river.drift import ADWIN

    labels = reference.validation_labels.astype(bool)
    if reference.threshold is not None:
        warm = (reference.validation_scores >= reference.threshold) != labels
    else:
        warm = np.zeros(0, dtype=bool)
    warm = np.random.default_rng(seed).permutation(warm).astype(np.float64)
    errors = 1.0 - correct
    block = -(-len(errors) // points) if points else 1
    detector = ADWIN(delta=delta)
    for e in block_means(warm, block).tolist():
        detector.update(e)
    base, found = float(warm.mean()) if len(warm) else 0.0, 0
    for e in block_means(errors, block).tolist():
        detector.update(e)
        if detector.drift_detected and detector.estimation > base:
            found += 1
    return found, float(errors.mean())


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
        value, low, high = auc_interval(a["scores"], a["labels"], p.confidence)
        auc_gap = est["roc_auc"] - value
        drift = est["roc_auc"] > high and auc_gap >= p.gap_floor
        out.append(CheckResult("concept_drift", "roc_auc", "estimate_minus_realized", auc_gap,
                               None, auc_gap, p.gap_floor, n_val, n,
                               "drift" if drift else "ok", low, high))
    found, rate = adwin_detects(reference, c, p.adwin_delta, p.seed, p.adwin_points)
    # a rise the calibrated scores explain (harder rows: a covariate shift) is not a concept
    # change: the window's errors must also exceed the expected ones by the gap floor
    unexplained = found and gap >= p.gap_floor
    out.append(CheckResult("concept_drift", "error_stream", "adwin_changes", float(found), None,
                           rate, 1.0, n_val, n, "drift" if unexplained else "ok"))
    return out
