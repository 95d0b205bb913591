"""Data-quality drift: more nulls, unknown categories or out-of-range values than in training.

Per input column and problem, the window's rate is tested against the training rate (one-sided
binomial test: only a rise is a problem), the p-values of every (column, problem) adjusted
together (Benjamini-Hochberg), and a rise must also be at least `rate_floor` (in share of rows)
to count: one odd value in a thousand is not a quality incident. "Out of range" means outside
the training data's [min, max] (the contract's own ranges are enforced at the door: such
requests are rejected, counted by reason in the server's Prometheus metrics, and never reach the
registry). "Unknown" means a category neither the contract nor the training data has.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from lifecycle.monitoring.drift import bh
from lifecycle.monitoring.result import CheckResult, insufficient


def is_known(values: pd.Series, categories: list[str]) -> np.ndarray:
    """Whether each (non-null) value is one of `categories`, compared as text; a categorical
    column is judged once per category, not once per row."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        known = values.cat.categories.astype(str).isin(categories)
        return known[values.cat.codes.to_numpy()]
    return values.astype(str).isin(categories).to_numpy()


def problem_rates(rows: pd.DataFrame, reference) -> dict[str, tuple[int, int, float]]:
    """(column:problem) -> (count in the window, rows, the training rate)."""
    n = len(rows)
    out = {}
    for name, info in reference.columns.items():
        if name not in rows.columns:
            out[f"{name}:missing_column"] = (n, n, 0.0)
            continue
        values = rows[name]
        missing = values.isna().to_numpy()
        out[f"{name}:nulls"] = (int(missing.sum()), n, float(info["null_share"]))
        present = values[~missing]
        if info["kind"] == "number":
            x = pd.to_numeric(present, errors="coerce").to_numpy(dtype=np.float64,
                                                                  na_value=np.nan)
            outside = np.isnan(x) | (x < info["min"]) | (x > info["max"])
            out[f"{name}:out_of_range"] = (int(outside.sum()), n, 0.0)
        else:
            known = is_known(present, info["categories"])
            out[f"{name}:unknown_category"] = (int((~known).sum()), n, 0.0)
    return out


def data_quality(window, reference, p) -> list[CheckResult]:
    """Null, unknown-category and out-of-range rates against training, per column."""
    n, n_ref = len(window.rows), int(reference.features.shape[0])
    if n < p.min_rows:
        return [insufficient("data_quality", "dataset", "problems", p.alpha, n_ref, n)]
    rates = problem_rates(window.rows, reference)
    names = list(rates)
    pvalues = []
    for name in names:
        k, m, base = rates[name]
        # a training rate of 0 is an estimate from n_ref rows: use half a row instead of 0
        base = min(max(base, 0.5 / n_ref), 1.0)
        pvalues.append(float(stats.binom.sf(k - 1, m, base)) if k else 1.0)
    q = bh(pvalues)
    out, bad = [], 0
    for name, qv in zip(names, q, strict=True):
        k, m, base = rates[name]
        rise = k / m - base
        drift = qv <= p.alpha and rise >= p.rate_floor
        bad += drift
        if k or drift:  # rows with no problem at all are not worth a line
            out.append(CheckResult("data_quality", name, "rate", k / m, float(qv), rise,
                                   p.rate_floor, n_ref, m, "drift" if drift else "ok"))
    out.append(CheckResult("data_quality", "dataset", "problems", float(bad),
                           float(q.min()) if len(q) else None, None, 1.0, n_ref, n,
                           "drift" if bad else "ok"))
    return out
