"""Data drift per input column, and prediction drift (the model's scores).

Per column, the statistic follows Evidently's defaults, by column type and reference size: up to
`small_reference` reference rows a test (KS for numbers, chi-square for categories, a z-test for
two-valued columns), above it a distance (Wasserstein normalised by the reference's standard
deviation for numbers, Jensen-Shannon for categories; both drift at 0.1 in Evidently). Numbers
with at most five distinct values count as categories, as in Evidently.

Then three fixes where its users report false alarms:
- every column gets both a p-value (its test) and an effect size (its distance). A column
  drifts only when its test rejects AND its distance is at least the effect floor: a large
  window then cannot alarm on a trivial difference, and a small one cannot on noise;
- the p-values of all columns are adjusted together (Benjamini-Hochberg), so 19 columns at 5%
  do not make a 60% chance of some alarm in a window without drift;
- below `min_rows` rows a window is "insufficient", not judged.
The dataset-level verdict is drift when any column drifts after the adjustment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from lifecycle.monitoring.result import CheckResult, insufficient

FEW_VALUES = 5  # numbers with at most this many distinct values are judged as categories


def _as_numbers(values: pd.Series) -> np.ndarray:
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return x[~np.isnan(x)]


def _as_categories(values: pd.Series, declared: str) -> pd.Series:
    """Non-null values, compared as labels (numbers by value, categories as text)."""
    if declared == "number":
        return pd.Series(_as_numbers(values))
    return values.dropna()


def label_counts(values: pd.Series) -> pd.Series:
    """Occurrences per label, as text (a categorical column is counted by its codes, not by
    turning each of its rows into a string)."""
    found = values.value_counts(dropna=True)
    found = found[found > 0]
    found.index = found.index.astype(str)
    return found.groupby(level=0, sort=True).sum()


def numeric_test(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float, float]:
    """(KS statistic, its p-value, Wasserstein distance / reference std)."""
    ks = stats.ks_2samp(ref, cur, method="asymp")
    scale = max(float(np.std(ref)), 1e-3)  # Evidently's normalisation
    return float(ks.statistic), float(ks.pvalue), stats.wasserstein_distance(ref, cur) / scale


def categorical_test(ref: pd.Series, cur: pd.Series) -> tuple[str, float, float, float]:
    """(test name, statistic, p-value, Jensen-Shannon distance) on category counts."""
    both = pd.concat([label_counts(ref), label_counts(cur)], axis=1).fillna(0)
    counts = both.to_numpy(dtype=float).T
    js = float(jensenshannon(counts[0] / counts[0].sum(), counts[1] / counts[1].sum()))
    if counts.shape[1] < 2:
        return "chisquare", 0.0, 1.0, 0.0
    if counts.shape[1] == 2:  # two proportions: the z-test
        n1, n2 = counts.sum(axis=1)
        p1, p2 = counts[0, 0] / n1, counts[1, 0] / n2
        pooled = counts[:, 0].sum() / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = 0.0 if se == 0 else (p2 - p1) / se
        return "z", float(z), float(2 * stats.norm.sf(abs(z))), js
    chi2, p, _, _ = stats.chi2_contingency(counts, correction=False)
    return "chisquare", float(chi2), float(p), js


def column_kind(ref: pd.Series, declared: str) -> str:
    if declared == "number" and _as_numbers(ref).size and \
            np.unique(_as_numbers(ref)).size > FEW_VALUES:
        return "number"
    return "category"


def compare_column(ref: pd.Series, cur: pd.Series, declared: str, small_reference: int
                   ) -> dict:
    """Test and distance of one column, with the statistic Evidently would report."""
    kind = column_kind(ref, declared)
    if kind == "number":
        r, c = _as_numbers(ref), _as_numbers(cur)
        if not len(r) or not len(c):
            return {"kind": kind, "n_ref": len(r), "n_cur": len(c)}
        d, p, effect = numeric_test(r, c)
        small = len(r) <= small_reference
        return {"kind": kind, "statistic": "ks" if small else "wasserstein_norm",
                "value": d if small else effect, "p": p, "effect": effect,
                "n_ref": len(r), "n_cur": len(c)}
    r, c = _as_categories(ref, declared), _as_categories(cur, declared)
    if not len(r) or not len(c):
        return {"kind": kind, "n_ref": len(r), "n_cur": len(c)}
    name, value, p, effect = categorical_test(r, c)
    small = len(r) <= small_reference
    return {"kind": kind, "statistic": name if small else "jensenshannon",
            "value": value if small else effect, "p": p, "effect": effect,
            "n_ref": len(r), "n_cur": len(c)}


def bh(p_values: list[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values)."""
    if not p_values:
        return np.array([])
    return stats.false_discovery_control(np.asarray(p_values, dtype=float), method="bh")


def data_drift(window, reference, p) -> list[CheckResult]:
    """Per input column: does the window's distribution differ from the training sample's?"""
    n = len(window.rows)
    columns = [c for c in reference.kinds if c in window.rows.columns]
    n_ref = len(reference.features)
    if n < p.min_rows:
        return [insufficient("data_drift", c, "-", p.alpha, n_ref, n)
                for c in [*columns, "dataset"]]
    compared = {c: compare_column(reference.features[c], window.rows[c], reference.kinds[c],
                                  p.small_reference) for c in columns}
    judged = [c for c in columns if "p" in compared[c]]
    q = dict(zip(judged, bh([compared[c]["p"] for c in judged]), strict=True))
    out, drifted = [], 0
    for c in columns:
        r = compared[c]
        floor = p.effect_floor.number if r["kind"] == "number" else p.effect_floor.category
        if c not in q:
            out.append(insufficient("data_drift", c, "-", p.alpha, r["n_ref"], r["n_cur"]))
            continue
        drift = q[c] <= p.alpha and r["effect"] >= floor
        drifted += drift
        is_test = r["statistic"] in ("ks", "chisquare", "z")
        out.append(CheckResult("data_drift", c, r["statistic"], r["value"], float(q[c]),
                               r["effect"], p.alpha if is_test else floor, r["n_ref"],
                               r["n_cur"], "drift" if drift else "ok"))
    min_q = float(min(q.values())) if q else None
    out.append(CheckResult("data_drift", "dataset", "drifted_columns", float(drifted), min_q,
                           drifted / max(len(judged), 1), 1.0, n_ref, n,
                           "drift" if drifted else "ok"))
    return out


def prediction_drift(window, reference, p) -> list[CheckResult]:
    """The model's scores in the window against its scores on the validation split."""
    ref = reference.validation_scores
    cur = _as_numbers(window.rows["score"])
    if len(cur) < p.min_rows:
        return [insufficient("prediction_drift", "score", "ks", p.alpha, len(ref), len(cur))]
    d, pvalue, effect = numeric_test(ref, cur)
    drift = pvalue <= p.alpha and effect >= p.effect_floor
    return [CheckResult("prediction_drift", "score", "ks", d, pvalue, effect, p.alpha,
                        len(ref), len(cur), "drift" if drift else "ok")]
