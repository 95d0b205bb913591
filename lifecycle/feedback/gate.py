"""The promotion gate: does the challenger beat the champion on the same labelled rows?

Both models score the same rows (the newest labelled window, which neither trained on), so
their errors are paired and the test is on the difference, not on two separate intervals:

- ROC AUC: DeLong's test for two correlated AUCs (DeLong, DeLong & Clarke-Pearson 1988, in
  Sun & Xu's O(n log n) form): the variance of the AUC difference from the placement values
  of each positive and negative row under both models, a normal interval of the difference.
- any other metric of the registry: the paired bootstrap. Each resample draws row weights
  once and scores both models under them, so the spread is that of the difference.

Promote when all hold: the difference (challenger - champion, in the metric's better
direction) is at least `min_effect`, its interval's lower end is above zero, and no guardrail
is worse beyond its tolerance. Guardrails (each compares challenger with champion on the same
rows): calibration (expected calibration error), the recall of a named segment at each
model's own decision threshold, and latency (p95 of single-record scoring, measured by the
caller). The decision carries its evidence: every number it was taken on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from lifecycle.evaluation import Predictions, weighted_metric
from lifecycle.metrics import REGISTRY


# --- DeLong -----------------------------------------------------------------------------------
def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of their ranks."""
    return stats.rankdata(x, method="average")


def delong(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> dict:
    """Paired DeLong test of AUC(challenger) - AUC(champion) on binary labels `y` (1 positive).

    Returns both AUCs, the difference, its standard error and two-sided p-value."""
    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError("DeLong needs at least two rows of each class")
    aucs, v10, v01 = [], [], []
    for s in (np.asarray(champion, float), np.asarray(challenger, float)):
        pos, neg = s[y], s[~y]
        rank_all = _midranks(np.concatenate([pos, neg]))
        rank_pos, rank_neg = _midranks(pos), _midranks(neg)
        placements_pos = (rank_all[:m] - rank_pos) / n          # V10: share of negatives below
        placements_neg = 1.0 - (rank_all[m:] - rank_neg) / m    # V01: share of positives above
        aucs.append(float(placements_pos.mean()))
        v10.append(placements_pos)
        v01.append(placements_neg)
    s10, s01 = np.cov(np.vstack(v10)), np.cov(np.vstack(v01))
    cov = s10 / m + s01 / n
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = aucs[1] - aucs[0]
    se = float(np.sqrt(max(variance, 0.0)))
    p = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else (0.0 if diff else 1.0)
    return {"champion": aucs[0], "challenger": aucs[1], "difference": diff, "se": se,
            "p_value": p}


# --- the paired difference of any metric -----------------------------------------------------
def paired_difference(metric: str, champion: Predictions, challenger: Predictions,
                      thresholds: tuple[float | None, float | None], confidence: float,
                      resamples: int, seed: int) -> dict:
    """Challenger minus champion on `metric` (sign: positive = challenger better), with a
    two-sided `confidence` interval: DeLong for binary ROC AUC, else the paired bootstrap."""
    sign = 1.0 if REGISTRY[metric].higher_is_better else -1.0
    z = stats.norm.ppf(0.5 + confidence / 2)
    if metric == "roc_auc" and champion.task == "binary":
        d = delong(champion.y, champion.scores, challenger.scores)
        return {"method": "delong", "metric": metric, "champion": d["champion"],
                "challenger": d["challenger"], "difference": d["difference"],
                "low": d["difference"] - z * d["se"], "high": d["difference"] + z * d["se"],
                "se": d["se"], "p_value": d["p_value"], "confidence": confidence,
                "rows": len(champion.y)}
    n = len(champion.y)
    ones = np.ones((1, n))
    a = float(weighted_metric(champion, metric, thresholds[0], ones)[0])
    b = float(weighted_metric(challenger, metric, thresholds[1], ones)[0])
    rng = np.random.default_rng(seed)
    diffs = []
    block = max(1, min(resamples, 2_000_000 // max(n, 1)))
    for start in range(0, resamples, block):
        w = rng.poisson(1.0, size=(min(block, resamples - start), n)).astype(float)
        diffs.append(sign * (weighted_metric(challenger, metric, thresholds[1], w)
                             - weighted_metric(champion, metric, thresholds[0], w)))
    diffs = np.concatenate(diffs)
    diffs = diffs[np.isfinite(diffs)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return {"method": "paired_bootstrap", "metric": metric, "champion": a, "challenger": b,
            "difference": sign * (b - a), "low": float(low), "high": float(high),
            "se": float(diffs.std(ddof=1)), "confidence": confidence, "resamples": resamples,
            "rows": n}


# --- guardrails -------------------------------------------------------------------------------
def calibration_error(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of binary scores: the row-weighted mean |observed - predicted|
    over equal-width probability bins."""
    y = np.asarray(y, float)
    which = np.clip((np.asarray(scores) * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in np.unique(which):
        inside = which == b
        total += inside.sum() * abs(y[inside].mean() - scores[inside].mean())
    return float(total / len(y))


def segment_recall(y: np.ndarray, scores: np.ndarray, threshold: float,
                   segment: np.ndarray) -> tuple[float | None, int]:
    """(recall of the positive class inside the segment, its positives); None without any."""
    positives = segment & (np.asarray(y) == 1)
    k = int(positives.sum())
    return (float((scores[positives] >= threshold).mean()) if k else None), k


@dataclass
class Guardrail:
    name: str
    champion: float | None
    challenger: float | None
    tolerance: float
    worse_by: float | None  # how much worse the challenger is (positive = worse)
    passed: bool
    detail: dict = field(default_factory=dict)


def guardrail(name: str, champion: float | None, challenger: float | None, tolerance: float,
              higher_is_better: bool, relative: bool = False, **detail) -> Guardrail:
    """Pass unless the challenger is worse than the champion by more than `tolerance`
    (absolute, or a share of the champion's value when `relative`). Unmeasurable: passes,
    and says so in `detail`."""
    if champion is None or challenger is None:
        return Guardrail(name, champion, challenger, tolerance, None, True,
                         {**detail, "note": "not measurable on this window"})
    worse = (champion - challenger) if higher_is_better else (challenger - champion)
    limit = tolerance * abs(champion) if relative else tolerance
    return Guardrail(name, champion, challenger, tolerance, float(worse), worse <= limit,
                     {**detail, "relative": relative})


# --- the decision -----------------------------------------------------------------------------
@dataclass
class Decision:
    promote: bool
    reasons: list[str]
    primary: dict
    min_effect: float
    guardrails: list[Guardrail]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["rule"] = ("promote iff difference >= min_effect and the interval's low end > 0 "
                       "and every guardrail within its tolerance")
        return out


def decide(primary: dict, min_effect: float, guardrails: list[Guardrail]) -> Decision:
    """Apply the rule to measured evidence; `reasons` says why not (empty when promoted)."""
    reasons = []
    if primary["difference"] < min_effect:
        reasons.append(f"{primary['metric']} difference {primary['difference']:+.4f} is below "
                       f"the minimum effect {min_effect}")
    if not primary["low"] > 0:
        reasons.append(f"{primary['metric']} difference interval [{primary['low']:+.4f}, "
                       f"{primary['high']:+.4f}] does not lie above zero")
    for g in guardrails:
        if not g.passed:
            reasons.append(f"guardrail {g.name}: challenger worse by {g.worse_by:.4f} "
                           f"(tolerance {g.tolerance})")
    return Decision(not reasons, reasons, primary, min_effect, guardrails)
